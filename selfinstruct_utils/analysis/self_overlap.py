"""Each instruction's highest ROUGE-L F1 to the *rest* of its own set: the novelty filter's view of a
whole finished dataset (paper Sec. 2.2 keeps an instruction only when its highest ROUGE-L to the pool
is below 0.7; here every instruction is scored against every other one, before and after it).

Scores come from the kit's exact engine, :class:`~selfinstruct_utils.rouge.RougeIndex` (``top_k``).
The highest score grows with the size of the set (more texts, more chances of a close one): compare
sets at equal size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..rouge import RougeIndex

__all__ = ["max_rouge_to_rest"]


def max_rouge_to_rest(texts: Sequence[str], *, queries: int | None = None, seed: int = 0) -> np.ndarray:
    """Highest ROUGE-L F1 of each text against every *other* text of the set.

    A text that occurs twice scores 1.0 (its copy); a text with no ROUGE token scores 0.0.

    Args:
        texts: the set (n texts).
        queries: score only this many texts, drawn at random without replacement, each still against
            all n - 1 others (bounds the cost at ``queries x n`` pairs for large sets; their mean is an
            unbiased estimate of the mean over all n). None: every text.
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
    if queries is not None and queries < n:
        picked = np.sort(np.random.default_rng(seed).choice(n, size=queries, replace=False))
    else:
        picked = np.arange(n)
    counts = Counter(texts)
    query_texts = [texts[i] for i in picked]
    neighbours = RougeIndex(texts).top_k(query_texts, k=2)
    out = np.empty(len(picked))
    for row, (text, (near, _mean)) in enumerate(zip(query_texts, neighbours, strict=True)):
        if counts[text] > 1:  # an identical copy elsewhere in the set: the best any pair can score
            out[row] = max((s for _, s in near), default=0.0)
            continue
        rest = list(near)
        for k, (t, _) in enumerate(rest):
            if t == text:  # the text itself (once in the set): leave it out
                del rest[k]
                break
        out[row] = rest[0][1] if rest else 0.0
    return out
