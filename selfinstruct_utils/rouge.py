"""Exact, fast ROUGE-L F1: the one entry point for the novelty filter and every analysis.

Contract: every score equals ``RougeScorer(["rougeL"]).score(target, prediction).fmeasure`` of
``rouge-score`` 0.1.2 without stemmer, bit for bit (tests assert 1e-12 on real data and with
hypothesis). How it gets there:

1. **Tokenize once** exactly as ``rouge_score.tokenize``: lower-case, every run of characters outside
   ``[a-z0-9]`` becomes a space, split, drop empty tokens. Non-ASCII words vanish entirely (so
   rouge-score gives 0.0 to two identical Chinese sentences); ``unicode=True`` keeps them instead
   (an option, off by default, that no longer matches rouge-score).
2. **Encode** each token as an integer id, and each text as a Python ``str`` whose characters are those
   ids (code points). A longest common subsequence (LCS) of tokens is then an LCS of characters.
3. **LCS kernel**: rapidfuzz's bit-parallel C++ ``LCSseq`` over those strings, many-vs-many with
   ``process.cdist`` on all cores.
4. **F1** from the integer LCS with rouge-score's own float operations, in numpy:
   ``p = lcs/len(pred); r = lcs/len(target); f = 2*p*r/(p+r)`` (0 when either side is empty).
   ROUGE-L F1 equals ``2*lcs/(m+n)``, rapidfuzz's normalized Indel similarity, which gives the
   novelty filter an exact pruning rule: a pair whose lengths cannot reach the threshold
   (``2*min(m,n)/(m+n)``) or whose token multisets share too little is never scored.

Source: Lin (2004) for ROUGE-L; Self-Instruct Sec. 2.2 for the novelty filter (threshold 0.7).
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Indel, LCSseq

__all__ = [
    "tokenize",
    "Vocabulary",
    "rougeL",
    "RougeIndex",
    "pairwise",
    "one_vs_many",
    "max_rougeL",
    "top_k",
    "most_similar",
    "NoveltyDecision",
    "NoveltyPool",
    "paired",
]

_TOKEN = re.compile(r"[a-z0-9]+")
_UNICODE_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str, *, unicode: bool = False) -> list[str]:
    """Tokens of ``text`` as rouge-score makes them (no stemmer).

    rouge-score lower-cases, replaces every run of characters outside ``[a-z0-9]`` with a space,
    splits on whitespace and keeps tokens matching ``^[a-z0-9]+$``: exactly the maximal runs of
    ``[a-z0-9]`` in the lower-cased text, which is what this returns.

    Args:
        text: any string.
        unicode: keep letters and digits of every script instead of only ``[a-z0-9]``. Off by
            default; with it on, scores differ from rouge-score for non-ASCII text.
    Returns:
        Lower-case word tokens, in order.
    Source: ``rouge_score.tokenize.tokenize`` (Lin 2004's ROUGE tokenization).
    """
    return (_UNICODE_TOKEN if unicode else _TOKEN).findall(text.lower())


def _codepoint(i: int) -> str:
    # Skip the UTF-16 surrogate block, which cannot stand alone in a Python str used by rapidfuzz.
    cp = i + 1 if i + 1 < 0xD800 else i + 1 + 0x800
    if cp > 0x10FFFF:
        raise OverflowError("vocabulary exceeds the 1.1M code points a string can hold")
    return chr(cp)


class _Ids(dict):
    """token -> one-character code, assigning the next code to an unseen token."""

    def __missing__(self, token) -> str:
        code = self[token] = _codepoint(len(self))
        return code


# bytes.translate table: a-z and 0-9 stay, every other byte (ASCII punctuation, whitespace, and all
# bytes of multi-byte UTF-8 characters) becomes a space -- rouge-score's substitution, in C.
_ASCII_TABLE = bytes(c if (48 <= c <= 57 or 97 <= c <= 122) else 32 for c in range(256))
_SEP = "\x01"  # separates texts when a batch is tokenized in one pass; stays a token of its own
_BATCH_TABLE = bytes(1 if c == 1 else _ASCII_TABLE[c] for c in range(256))
_SEP_CODE = "\x00"  # never assigned to a token (_codepoint starts at 1)


class Vocabulary:
    """Maps tokens to integer ids and texts to code-point strings (one character per token).

    Keep one Vocabulary for all texts that are compared with each other. The default (rouge-score)
    tokenization runs in C: ``str.lower``, UTF-8 bytes, ``bytes.translate`` and ``split``, which keeps
    exactly the maximal ``[a-z0-9]`` runs of the lower-cased text, as :func:`tokenize`.

    Args:
        unicode: see :func:`tokenize`.
    """

    def __init__(self, unicode: bool = False):
        self.unicode = unicode
        self.ids: dict = _Ids()

    def __len__(self) -> int:
        return len(self.ids) - (_SEP in self.ids)

    def encode(self, text: str) -> str:
        """The code-point string of ``text``: its ``len`` is the number of tokens."""
        if self.unicode:
            tokens = _UNICODE_TOKEN.findall(text.lower())
        else:
            tokens = text.lower().encode("utf-8", "surrogatepass").translate(_ASCII_TABLE).decode("ascii").split()
        return "".join(map(self.ids.__getitem__, tokens))

    def encode_many(self, texts: Sequence[str]) -> list[str]:
        """Code-point strings of many texts, tokenized in one pass over their concatenation."""
        texts = list(texts)
        if self.unicode or not texts or any("\x01" in t for t in texts):
            return [self.encode(t) for t in texts]
        joined = " \x01 ".join(texts).lower().encode("utf-8", "surrogatepass").translate(_BATCH_TABLE)
        tokens = joined.decode("ascii").split()
        ids = self.ids
        if _SEP not in ids:
            dict.__setitem__(ids, _SEP, _SEP_CODE)
        new = [t for t in dict.fromkeys(tokens) if t not in ids]  # unseen tokens, first-seen order
        if new:
            first = len(ids)
            ids.update(zip(new, map(_codepoint, range(first, first + len(new))), strict=True))
        return "".join(map(ids.__getitem__, tokens)).split(_SEP_CODE)


def _f1_from_lcs(lcs: np.ndarray, len_target: np.ndarray, len_pred: np.ndarray, dtype=np.float64) -> np.ndarray:
    """rouge-score's F-measure from integer LCS lengths, with its float operations in its order."""
    lcs = lcs.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / len_pred
        recall = lcs / len_target
        f = 2 * precision * recall / (precision + recall)
    f = np.where((lcs > 0) & (len_pred > 0) & (len_target > 0), f, 0.0)
    return f.astype(dtype, copy=False)


def _exact_f1(a: str, b: str) -> float:
    """rouge-score's F-measure of two code strings (a: target, b: prediction)."""
    if not a or not b:
        return 0.0
    lcs = LCSseq.similarity(a, b)
    if lcs == 0:
        return 0.0
    p = lcs / len(b)
    r = lcs / len(a)
    return 2 * p * r / (p + r)


def _lengths(codes: Sequence[str]) -> np.ndarray:
    return np.fromiter(map(len, codes), dtype=np.float64, count=len(codes))


class RougeIndex:
    """A pool of texts tokenized once, scored against any queries with exact ROUGE-L F1.

    Use it when one pool is compared with many texts (seed tasks vs. a generated set, a test set vs.
    the seeds): tokenization happens once, and every query costs only the LCS kernel.

    Args:
        pool: m texts.
        unicode: see :func:`tokenize`.
        workers: threads for the LCS kernel (-1: all cores).
        chunk_pairs: queries are scored in chunks of about this many pairs (bounds memory).
    """

    def __init__(self, pool: Sequence[str], *, unicode: bool = False, workers: int = -1, chunk_pairs: int = 20_000_000):
        self.texts = list(pool)
        self.vocab = Vocabulary(unicode=unicode)
        self.codes = self.vocab.encode_many(self.texts)
        self._len = _lengths(self.codes)[None, :]
        self.workers = workers
        self._step = max(1, chunk_pairs // max(1, len(self.codes)))

    def __len__(self) -> int:
        return len(self.texts)

    def _chunks(self, texts: Sequence[str]):
        codes = self.vocab.encode_many(list(texts))
        for lo in range(0, len(codes), self._step):
            yield codes[lo : lo + self._step]

    def scores(self, texts: Sequence[str], *, dtype: type = np.float64) -> np.ndarray:
        """F1 matrix of shape (n, m): row i holds texts[i] (as target) against every pool text.

        ``dtype`` float64 is exact; float32 halves the memory (n*m*4 bytes) and rounds.
        """
        out = np.zeros((len(texts), len(self.codes)), dtype=dtype)
        row = 0
        for chunk in self._chunks(texts):
            if chunk and self.codes:
                lcs = process.cdist(chunk, self.codes, scorer=LCSseq.similarity, dtype=np.int32, workers=self.workers)
                out[row : row + len(chunk)] = _f1_from_lcs(lcs, _lengths(chunk)[:, None], self._len, dtype)
            row += len(chunk)
        return out

    def max(self, texts: Sequence[str]) -> list[float]:
        """Each text's maximum F1 over the pool (0.0 for an empty pool).

        F1 = 2*LCS/(m+n) is rapidfuzz's normalized Indel similarity, so its argmax is the F1 argmax,
        and equal fractions give equal floats (ties stay ties); only the tied best columns are then
        scored with rouge-score's float formula, which makes the maximum bit-identical.
        """
        if not self.codes:
            return [0.0] * len(texts)
        out: list[float] = []
        for chunk in self._chunks(texts):
            sim = process.cdist(chunk, self.codes, scorer=Indel.normalized_similarity, dtype=np.float64, workers=self.workers)
            best = sim.max(axis=1)
            for i, q in enumerate(chunk):
                cols = np.flatnonzero(sim[i] == best[i]).tolist() if q else []
                out.append(max((_exact_f1(q, self.codes[j]) for j in cols), default=0.0))
        return out

    def top_k(self, texts: Sequence[str], k: int = 10) -> list[tuple[list[tuple[str, float]], float]]:
        """Each text's k most similar pool texts (best first) and its mean F1 over the pool.

        Ties put the pool's later item first, as ``np.argsort(scores)[-k:][::-1]`` in the released
        ``bootstrap_instructions.py``, whose ``most_similar`` and ``avg_similarity_score`` these are.
        """
        if not self.codes:
            return [([], 0.0) for _ in texts]
        out = []
        for chunk in self._chunks(texts):
            lcs = process.cdist(chunk, self.codes, scorer=LCSseq.similarity, dtype=np.int32, workers=self.workers)
            scores = _f1_from_lcs(lcs, _lengths(chunk)[:, None], self._len)
            order = np.argsort(scores, axis=1, kind="stable")[:, ::-1][:, :k]
            for row, idx in zip(scores, order, strict=True):
                out.append(([(self.texts[j], float(row[j])) for j in idx], float(row.mean())))
        return out


def rougeL(target: str, prediction: str, *, unicode: bool = False) -> float:
    """ROUGE-L F1 of two texts (symmetric). Equals rouge-score's ``score(target, prediction)["rougeL"].fmeasure``."""
    vocab = Vocabulary(unicode=unicode)
    return _exact_f1(vocab.encode(target), vocab.encode(prediction))


def pairwise(
    targets: Sequence[str],
    predictions: Sequence[str],
    *,
    dtype: type = np.float64,
    unicode: bool = False,
    workers: int = -1,
) -> np.ndarray:
    """ROUGE-L F1 matrix, many-vs-many.

    Args:
        targets: n texts (rows).
        predictions: m texts (columns).
        dtype: ``np.float64`` (exact) or ``np.float32`` (half the memory; rounded).
        unicode: see :func:`tokenize`.
        workers: threads for the LCS kernel (-1: all cores).
    Returns:
        Array of shape (n, m); entry (i, j) is F1 of targets[i] vs predictions[j], in [0, 1].
        Memory: n*m*8 bytes for float64 (plus a chunk of int32 LCS lengths).
    """
    return RougeIndex(predictions, unicode=unicode, workers=workers).scores(targets, dtype=dtype)


def one_vs_many(text: str, pool: Sequence[str], *, unicode: bool = False, workers: int = -1) -> np.ndarray:
    """ROUGE-L F1 of one text against each of m texts: an array of shape (m,)."""
    return pairwise([text], pool, unicode=unicode, workers=workers)[0]


def max_rougeL(candidates: list[str], pool: list[str], *, unicode: bool = False, workers: int = -1) -> list[float]:
    """Maximum ROUGE-L F1 of each candidate against a pool of instructions.

    Args:
        candidates: n instructions.
        pool: m instructions (may be empty: scores are then 0.0).
        unicode: see :func:`tokenize`.
        workers: threads for the LCS kernel (-1: all cores).
    Returns:
        n floats in [0, 1], equal to rouge-score's ``RougeScorer(["rougeL"])`` F-measure maximum.
        Memory stays bounded: candidates are scored in chunks of about 20M pairs.
    Source: Self-Instruct Sec. 2.2 (novelty filter); Lin (2004) for ROUGE-L.
    """
    return RougeIndex(pool, unicode=unicode, workers=workers).max(candidates)


def top_k(
    candidates: Sequence[str],
    pool: Sequence[str],
    k: int = 10,
    *,
    unicode: bool = False,
    workers: int = -1,
) -> list[tuple[list[tuple[str, float]], float]]:
    """For each candidate, its k most similar pool texts and its mean similarity to the pool.

    Args:
        candidates: n texts.
        pool: m texts.
        k: how many neighbours (fewer when m < k).
    Returns:
        n pairs ``(neighbours, mean)``: neighbours is a list of (pool text, ROUGE-L F1), best first;
        mean is the average F1 over the whole pool (0.0 for an empty pool). See :meth:`RougeIndex.top_k`.
    Source: the ``most_similar`` and ``avg_similarity_score`` fields of the released code's output.
    """
    return RougeIndex(pool, unicode=unicode, workers=workers).top_k(candidates, k)


def most_similar(candidates: Sequence[str], pool: Sequence[str], *, unicode: bool = False) -> list[tuple[str, float]]:
    """For each candidate, its single most similar pool text and the ROUGE-L F1 (paper Figures 3 and 8)."""
    return [(nb[0] if nb else ("", 0.0)) for nb, _ in top_k(candidates, pool, k=1, unicode=unicode)]


@dataclass(frozen=True)
class NoveltyDecision:
    """What the novelty filter decided about one candidate.

    Attributes:
        accepted: the candidate joined the pool.
        score: when rejected, the ROUGE-L F1 with ``blocker``; when accepted, None (every score was
            below what the threshold needs, and pruned pairs were never computed).
        blocker: the pool text that made it too similar (the most similar one), or None.
    """

    accepted: bool
    score: float | None = None
    blocker: str | None = None


_COMPARE = {"gt": operator.gt, "ge": operator.ge}


class NoveltyPool:
    """The task pool's novelty filter: a new instruction joins only if it is not too similar to any
    instruction already in the pool (paper Sec. 2.2).

    The paper's text keeps an instruction when its ROUGE-L with every pool instruction is "less than
    0.7" (reject when max >= 0.7: ``comparison="ge"``); the released code rejects only when the
    maximum is greater than 0.7 (``comparison="gt"``, the default here). The two differ only for a
    candidate whose maximum is exactly the threshold.

    Exact pruning (never changes a decision): with m, n tokens, F1 = 2*LCS/(m+n) <= 2*min(m,n)/(m+n).
    rapidfuzz's normalized Indel distance with a score cutoff skips pairs that fail this length bound
    and stops early on the others; the few survivors are scored exactly with rouge-score's float
    formula and compared with the threshold. (The multiset bound, :func:`multiset_bound`, is exact too
    but costs more in Python than the C++ LCS it would skip, so it is not applied here.)

    Args:
        initial: texts that start the pool (e.g. the seed instructions); never filtered.
        threshold: ROUGE-L F1 threshold (default 0.7).
        comparison: "gt" (reject when max > threshold) or "ge" (reject when max >= threshold).
        unicode: see :func:`tokenize`.
        workers: threads for the LCS kernel.
    """

    def __init__(
        self,
        initial: Sequence[str] = (),
        *,
        threshold: float = 0.7,
        comparison: Literal["gt", "ge"] = "gt",
        unicode: bool = False,
        workers: int = -1,
    ):
        if comparison not in _COMPARE:
            raise ValueError(f"comparison must be 'gt' or 'ge', not {comparison!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], not {threshold}")
        self.threshold = threshold
        self.comparison = comparison
        self._too_similar = _COMPARE[comparison]
        self.workers = workers
        self.vocab = Vocabulary(unicode=unicode)
        self.texts: list[str] = []
        self._codes: list[str] = []
        # A candidate pair can only reach the threshold when its Indel distance / (m+n) <= 1 - t.
        # A small margin keeps rapidfuzz's own float rounding from pruning a borderline pair.
        self._cutoff = min(1.0, 1.0 - threshold + 1e-9)
        initial = list(initial)
        for text, code in zip(initial, self.vocab.encode_many(initial), strict=True):
            self._append(text, code)

    def __len__(self) -> int:
        return len(self.texts)

    def add_unchecked(self, text: str) -> None:
        """Put ``text`` in the pool without filtering it (e.g. when replaying a run's recorded decisions)."""
        self._append(text, self.vocab.encode(text))

    def _append(self, text: str, code: str) -> None:
        self.texts.append(text)
        self._codes.append(code)

    def _blocker(self, code: str, choices: list[str], dist: np.ndarray) -> tuple[float, int] | None:
        """Best exact score among pairs that survive pruning, if it is too similar."""
        near = np.flatnonzero(dist <= self._cutoff)
        best, best_j = -1.0, -1
        for j in near.tolist():
            s = _exact_f1(code, choices[j])
            if s > best:
                best, best_j = s, j
        if best_j >= 0 and self._too_similar(best, self.threshold):
            return best, best_j
        return None

    def add_batch(self, candidates: Sequence[str]) -> list[NoveltyDecision]:
        """Decide each candidate in order; accepted ones join the pool at once (so later candidates
        of the same batch are compared with them).

        Args:
            candidates: k instructions.
        Returns:
            k decisions, in order.
        """
        codes = self.vocab.encode_many(candidates)
        if not codes:
            return []
        dist_pool = np.empty((len(codes), 0))
        if self._codes:
            dist_pool = process.cdist(
                codes, self._codes, scorer=Indel.normalized_distance, score_cutoff=self._cutoff,
                dtype=np.float64, workers=self.workers,
            )
        decisions: list[NoveltyDecision] = []
        accepted_codes: list[str] = []
        accepted_texts: list[str] = []
        for i, (text, code) in enumerate(zip(candidates, codes, strict=True)):
            hit = self._blocker(code, self._codes, dist_pool[i])
            best = (hit[0], self.texts[hit[1]]) if hit else None
            if accepted_codes:
                local = process.cdist(
                    [code], accepted_codes, scorer=Indel.normalized_distance, score_cutoff=self._cutoff, dtype=np.float64
                )[0]
                hit2 = self._blocker(code, accepted_codes, local)
                if hit2 and (best is None or hit2[0] > best[0]):
                    best = (hit2[0], accepted_texts[hit2[1]])
            if best is None:
                decisions.append(NoveltyDecision(True))
                accepted_codes.append(code)
                accepted_texts.append(text)
            else:
                decisions.append(NoveltyDecision(False, best[0], best[1]))
        for text, code in zip(accepted_texts, accepted_codes, strict=True):
            self._append(text, code)
        return decisions

    def similar(self, text: str, k: int = 10, *, upto: int | None = None) -> tuple[list[tuple[str, float]], float]:
        """The k most similar pool texts of ``text`` and its mean ROUGE-L F1 over the pool.

        Args:
            text: any text.
            k: neighbours to return.
            upto: compare only with the first ``upto`` pool texts (the pool as it was when ``text``
                was decided); default the whole pool.
        Returns:
            (neighbours best first as (text, F1), mean F1); as :func:`top_k`.
        """
        n = len(self._codes) if upto is None else upto
        if n == 0:
            return [], 0.0
        code = self.vocab.encode(text)
        lcs = process.cdist([code], self._codes[:n], scorer=LCSseq.similarity, dtype=np.int32, workers=self.workers)
        lens = _lengths(self._codes[:n])[None, :]
        row = _f1_from_lcs(lcs, np.array([[len(code)]], dtype=np.float64), lens)[0]
        order = np.argsort(row, kind="stable")[::-1][:k]
        return [(self.texts[j], float(row[j])) for j in order], float(row.mean())

    def add(self, candidate: str) -> NoveltyDecision:
        """Decide one candidate (see :meth:`add_batch`)."""
        return self.add_batch([candidate])[0]


def multiset_bound(a: str, b: str) -> int:
    """Exact upper bound of the LCS of two code strings: the size of their token multiset intersection."""
    ca, cb = Counter(a), Counter(b)
    return sum(min(v, cb[k]) for k, v in ca.items() if k in cb)


def length_bound(m: int, n: int) -> float:
    """Exact upper bound of ROUGE-L F1 for texts of m and n tokens: 2*min(m,n)/(m+n) (0 if either is 0)."""
    return 0.0 if m == 0 or n == 0 else 2 * min(m, n) / (m + n)


def paired(targets: Sequence[str], predictions: Sequence[str], *, unicode: bool = False) -> list[float]:
    """ROUGE-L F1 of each (target, prediction) pair, element by element (e.g. responses vs. references).

    Returns:
        len(targets) floats, each equal to rouge-score's ``score(target, prediction)["rougeL"].fmeasure``.
    Raises:
        ValueError: the two lists differ in length.
    """
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    vocab = Vocabulary(unicode=unicode)
    a = vocab.encode_many(list(targets))
    b = vocab.encode_many(list(predictions))
    return [_exact_f1(x, y) for x, y in zip(a, b, strict=True)]
