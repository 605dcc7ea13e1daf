"""Each instruction's highest ROUGE-L F1 to the *rest* of its own set: the novelty filter's view of a
whole finished dataset (paper Sec. 2.2 keeps an instruction only when its highest ROUGE-L to the pool
is below 0.7; here every instruction is scored against every other one, before and after it).

Scores come from the kit's exact engine, :class:`~selfinstruct_utils.rouge.RougeIndex` (``scores``, in
blocks of queries; each text's own column left out).
The highest score grows with the size of the set (more texts, more chances of a close one): compare
sets at equal size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..rouge import RougeIndex

__all__ = ["max_rouge_to_rest", "query_rows"]


def query_rows(n: int, queries: int | None, seed: int) -> np.ndarray:
    """The positions :func:`max_rouge_to_rest` scores among n texts: ``queries`` of them drawn without
    replacement with ``numpy.random.default_rng(seed)``, sorted; all n when ``queries`` is None or >= n."""
    if queries is not None and queries < n:
        return np.sort(np.random.default_rng(seed).choice(n, size=queries, replace=False))
    return np.arange(n)


def max_rouge_to_rest(texts: Sequence[str], *, queries: int | None = None, seed: int = 0) -> np.ndarray:
    """Highest ROUGE-L F1 of each text against every *other* text of the set.

    A text that occurs twice scores 1.0 (its copy); a text with no ROUGE token scores 0.0.

    Args:
        texts: the set (n texts).
        queries: score only this many texts, drawn at random without replacement (:func:`query_rows`),
            each still against all n - 1 others (bounds the cost at ``queries x n`` pairs for large sets;
            their mean is an unbiased estimate of the mean over all n). None: every text.
        seed: the draw of the queries.
    Returns:
        float64 array of shape (n,) or (queries,), in the order of ``texts`` (of the drawn queries,
        sorted by position).
    Source: Self-Instruct Sec. 2.2 (the novelty filter, ROUGE-L threshold 0.7); Lin (2004) for ROUGE-L.
    """
    texts = list(texts)
    n = len(texts)
    if n < 2:
        return np.zeros(n)
    picked = query_rows(n, queries, seed)
    index = RougeIndex(texts)
    out = np.empty(len(picked))
    step = max(1, 5_000_000 // n)  # F1 rows per block: bounded memory (8 bytes x step x n, a few temporaries)
    for lo in range(0, len(picked), step):
        rows = picked[lo : lo + step]
        f1 = index.scores([texts[i] for i in rows])
        f1[np.arange(len(rows)), rows] = -np.inf  # the text itself; a copy elsewhere in the set still scores
        out[lo : lo + len(rows)] = f1.max(axis=1)
    return out
