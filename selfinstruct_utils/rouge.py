"""Exact, fast ROUGE-L F1: the one scorer behind the novelty filter and every analysis.

Contract: every score equals ``RougeScorer(["rougeL"]).score(target, prediction).fmeasure`` of
``rouge-score`` 0.1.2 without stemmer, bit for bit (the tests compare with ``==``). How:

1. **Tokenize once** exactly as ``rouge_score.tokenize``: lower-case, every run of characters outside
   ``[a-z0-9]`` becomes a space, split. Non-ASCII words vanish (so rouge-score gives 0.0 to two
   identical Chinese sentences); ``unicode=True`` keeps them (an option that no longer matches rouge-score).
2. **Encode** each token as an integer id, and each text as a ``str`` whose characters are those ids
   (code points): a longest common subsequence (LCS) of tokens is an LCS of characters.
3. **LCS** with rapidfuzz's bit-parallel C++ ``LCSseq``, many-vs-many on ``workers`` threads.
4. **F1** from the integer LCS with rouge-score's own float operations, vectorized:
   ``p = lcs/len(pred); r = lcs/len(target); f = 2*p*r/(p+r)`` (0 when the LCS is 0).

One type, :class:`RougeIndex`, holds a pool tokenized once and answers :meth:`~RougeIndex.max`,
:meth:`~RougeIndex.top_k` and :meth:`~RougeIndex.scores`. The incremental novelty filter, which owns a
``RougeIndex``, is :class:`selfinstruct_utils.novelty.NoveltyPool`.

Source: Lin (2004) for ROUGE-L; rouge-score 0.1.2 (``rouge_scorer._score_lcs``) for the float formula.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Sequence

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Indel, LCSseq

__all__ = ["tokenize", "rougeL", "paired", "max_rougeL", "RougeIndex"]

_TOKEN = re.compile(r"[a-z0-9]+")
_UNICODE_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str, *, unicode: bool = False) -> list[str]:
    """Tokens of ``text`` as rouge-score makes them (no stemmer).

    rouge-score lower-cases, replaces every run of characters outside ``[a-z0-9]`` with a space,
    splits on whitespace and keeps tokens matching ``^[a-z0-9]+$``: exactly the maximal runs of
    ``[a-z0-9]`` in the lower-cased text, which is what this returns.

    Args:
        text: any string.
        unicode: keep letters and digits of every script instead of only ``[a-z0-9]``.
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


class _Vocabulary:
    """Tokens -> one-character codes, so a text becomes a string with one character per token.

    The default (rouge-score) tokenization runs in C: ``str.lower``, UTF-8 bytes, ``bytes.translate``
    and ``split``, which keeps exactly the maximal ``[a-z0-9]`` runs of the lower-cased text.
    """

    def __init__(self, unicode: bool = False):
        self.unicode = unicode
        self.ids: dict = _Ids()

    def encode(self, text: str) -> str:
        if self.unicode:
            tokens = _UNICODE_TOKEN.findall(text.lower())
        else:
            tokens = text.lower().encode("utf-8", "surrogatepass").translate(_ASCII_TABLE).decode("ascii").split()
        return "".join(map(self.ids.__getitem__, tokens))

    def encode_many(self, texts: Sequence[str]) -> list[str]:
        """Codes of many texts, tokenized in one pass over their concatenation."""
        texts = list(texts)
        if self.unicode or not texts or any(_SEP in t for t in texts):
            return [self.encode(t) for t in texts]
        joined = f" {_SEP} ".join(texts).lower().encode("utf-8", "surrogatepass").translate(_BATCH_TABLE)
        tokens = joined.decode("ascii").split()
        ids = self.ids
        if _SEP not in ids:
            dict.__setitem__(ids, _SEP, _SEP_CODE)
        new = [t for t in dict.fromkeys(tokens) if t not in ids]  # unseen tokens, first-seen order
        if new:
            first = len(ids)
            ids.update(zip(new, map(_codepoint, range(first, first + len(new))), strict=True))
        return "".join(map(ids.__getitem__, tokens)).split(_SEP_CODE)


def _f1(lcs: np.ndarray, len_target: np.ndarray, len_pred: np.ndarray) -> np.ndarray:
    """rouge-score's F-measure from integer LCS lengths, with its float operations in its order:
    ``(2 * p * r) / (p + r)`` (broadcasting; 0.0 where the LCS is 0). Three temporaries of the
    broadcast shape, whatever the number of operations."""
    lcs = np.asarray(lcs)
    zero = lcs == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.divide(lcs, len_pred, dtype=np.float64)
        recall = np.divide(lcs, len_target, dtype=np.float64)
        f = np.multiply(2, precision)
        f *= recall
        precision += recall
        f /= precision
    f[zero] = 0.0
    return f


def _f1_grid(lcs: np.ndarray, len_target: np.ndarray, len_pred: np.ndarray) -> np.ndarray:
    """:func:`_f1` of a (k, n) LCS matrix, row i a target of ``len_target[i]`` tokens against column j a
    prediction of ``len_pred[j]`` tokens, with the same floats element by element: :func:`_f1` fills a
    table of every (target, LCS, prediction length) the matrix can hold (an LCS is at most the target's
    length), and the matrix is gathered from it. One gather instead of six float passes (measured on 32
    rows of 42,000: 0.18 ms a row instead of 0.56). Falls back to :func:`_f1` when the table would be
    larger than a quarter of the matrix (few columns, or very long texts)."""
    lcs = np.asarray(lcs)
    m = np.asarray(len_target).astype(np.int64).reshape(-1)
    n = np.asarray(len_pred).astype(np.int64).reshape(-1)
    k, width = lcs.shape
    rows, cols = (int(m.max()) + 1 if k else 1), (int(n.max()) + 1 if width else 1)
    if k * rows * cols * 4 > lcs.size or rows * cols >= 1 << 31:
        return _f1(lcs, m[:, None].astype(np.float64), n[None, :].astype(np.float64))
    grid = np.broadcast_to(np.arange(rows, dtype=np.float64)[None, :, None], (k, rows, cols))
    table = _f1(grid, m[:, None, None].astype(np.float64), np.arange(cols, dtype=np.float64)[None, None, :])
    idx = lcs.astype(np.int64 if k * rows * cols >= 1 << 31 else np.int32)
    idx *= cols
    idx += n.astype(idx.dtype)[None, :]
    idx += (np.arange(k, dtype=idx.dtype) * (rows * cols))[:, None]
    return table.ravel().take(idx)


def _lengths(codes: Sequence[str]) -> np.ndarray:
    return np.fromiter(map(len, codes), dtype=np.float64, count=len(codes))


def rougeL(target: str, prediction: str, *, unicode: bool = False) -> float:
    """ROUGE-L F1 of two texts (symmetric): rouge-score's ``score(target, prediction)["rougeL"].fmeasure``."""
    return paired([target], [prediction], unicode=unicode)[0]


def paired(targets: Sequence[str], predictions: Sequence[str], *, unicode: bool = False) -> list[float]:
    """ROUGE-L F1 of each (target, prediction) pair, element by element (e.g. responses vs. references).

    Returns:
        len(targets) floats, each equal to rouge-score's ``score(target, prediction)["rougeL"].fmeasure``.
    Raises:
        ValueError: the two lists differ in length.
    """
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    vocab = _Vocabulary(unicode=unicode)
    a, b = vocab.encode_many(list(targets)), vocab.encode_many(list(predictions))
    lcs = np.fromiter((LCSseq.similarity(x, y) for x, y in zip(a, b, strict=True)), dtype=np.int64, count=len(a))
    return _f1(lcs, _lengths(a), _lengths(b)).tolist()


def max_rougeL(candidates: list[str], pool: list[str], *, unicode: bool = False, workers: int = -1) -> list[float]:
    """Maximum ROUGE-L F1 of each candidate against a pool of instructions.

    Args:
        candidates: n instructions.
        pool: m instructions (may be empty: scores are then 0.0).
        unicode: see :func:`tokenize`.
        workers: threads for the LCS kernel (-1: all cores).
    Returns:
        n floats in [0, 1], equal to the maximum of rouge-score's ``RougeScorer(["rougeL"])`` F-measure.
        Memory: about 9 bytes per (candidate, pool text) pair of a chunk of ``chunk_pairs`` pairs.
    Source: Self-Instruct Sec. 2.2 (novelty filter); Lin (2004) for ROUGE-L.
    """
    return RougeIndex(pool, unicode=unicode, workers=workers).max(candidates)


class RougeIndex:
    """A pool of texts tokenized once; exact ROUGE-L F1 of any texts against it.

    Every method passes ``workers`` to rapidfuzz's many-vs-many kernel (``process.cdist``), which shares
    the queries among its threads (a single query runs on one thread).

    Args:
        pool: initial texts (e.g. the seed instructions).
        unicode: see :func:`tokenize`.
        workers: threads for the LCS kernel (-1: all cores).
        chunk_pairs: queries are scored in chunks of about this many (query, pool text) pairs, which
            bounds memory (:meth:`max`: 9 bytes a pair; :meth:`scores`, :meth:`top_k`: about 28).

    Attributes:
        texts: the pool's texts, in order.
        codes: each text as a code-point string (one character per token; ``len`` = its token count).
    """

    def __init__(self, pool: Sequence[str] = (), *, unicode: bool = False, workers: int = -1, chunk_pairs: int = 20_000_000):
        self.texts: list[str] = []
        self.codes: list[str] = []
        self.workers = workers
        self.chunk_pairs = chunk_pairs
        self._vocab = _Vocabulary(unicode=unicode)
        self._lens = array("i")
        self._kept: dict[str, tuple[int, np.ndarray]] = {}  # see keep_scores
        self.add(pool)

    def __len__(self) -> int:
        return len(self.texts)

    def encode(self, texts: Sequence[str]) -> list[str]:
        """Code-point strings of ``texts`` in this index's vocabulary (new tokens get new codes); the pool
        is unchanged."""
        return self._vocab.encode_many(list(texts))

    def add(self, texts: Sequence[str]) -> None:
        """Append texts to the pool without filtering them (e.g. replaying a run's recorded decisions)."""
        texts = list(texts)
        self.add_encoded(texts, self.encode(texts))

    def add_encoded(self, texts: Sequence[str], codes: Sequence[str]) -> None:
        """Append texts whose codes :meth:`encode` already made (same length and order)."""
        if len(texts) != len(codes):
            raise ValueError(f"{len(texts)} texts but {len(codes)} codes")
        self.texts.extend(texts)
        self.codes.extend(codes)
        self._lens.extend(map(len, codes))

    def keep_scores(self, codes: Sequence[str], n: int, f1: np.ndarray, *, replace: bool = True) -> None:
        """Keep F1 rows already computed, for the next :meth:`top_k` of one of these texts to reuse (the
        novelty filter keeps the rows of the candidates it accepted: their neighbours are asked next).
        Replaces what was kept before (``replace=False``: adds to it).

        Args:
            codes: k texts' codes (from :meth:`encode`).
            n: the rows hold F1 against the pool's first ``n`` texts.
            f1: shape (k, n), row i: ``codes[i]`` as target against each pool text, as :meth:`scores` gives.
        """
        if replace:
            self._kept = {}
        self._kept.update((code, (n, row)) for code, row in zip(codes, f1, strict=True))

    def prescore(self, codes: Sequence[str], *, queries: int = 32) -> None:
        """Score texts against the whole pool now and keep their rows (:meth:`keep_scores`, added to what
        is kept), for their coming :meth:`top_k` and the novelty filter to read, extended with the texts
        added since.

        Why: rapidfuzz's many-vs-many kernel scores several short queries together (SIMD lanes) and
        converts the pool's strings once per call, so ``queries`` texts scored in one call cost about
        4x one text (measured at a pool of 42,000: 0.9 ms a text in calls of 16-32, 3.6 ms alone).
        One thread: the caller (step 1's sequential decisions) is meant to take one core.

        Args:
            codes: k texts' codes (from :meth:`encode`).
            queries: texts per kernel call (memory: about 12 bytes x ``queries`` x pool size a call,
                and the kept rows, 8 bytes x k x pool size, until :meth:`forget_scores`).
        """
        codes = list(codes)
        for lo in range(0, len(codes), queries):
            chunk = codes[lo : lo + queries]
            self.keep_scores(chunk, len(self.codes), self.pool_rows(chunk), replace=False)

    def pool_rows(self, codes: Sequence[str]) -> np.ndarray:
        """F1 of texts (as targets) against every pool text, on one thread (for a few texts, where
        :meth:`scores`' threads would only cost their start).

        Args:
            codes: k texts' codes (from :meth:`encode`).
        Returns:
            float64 array of shape (k, pool size), as :meth:`scores` gives.
        """
        codes = list(codes)
        if not self.codes or not codes:
            return np.zeros((len(codes), len(self.codes)))
        lcs = process.cdist(codes, self.codes, scorer=LCSseq.similarity, dtype=np.int32, workers=1)
        return _f1_grid(lcs, _lengths(codes), self.lengths())

    def kept_rows(self, codes: Sequence[str]) -> np.ndarray | None:
        """The rows :meth:`keep_scores` or :meth:`prescore` kept for these texts, completed with the pool
        texts added since: shape (k, pool size), the values :meth:`pool_rows` would give; None when one
        of them has no row kept."""
        rows = [self._kept_row(c, len(self.codes)) for c in codes] if self._kept else None
        if not rows or any(r is None for r in rows):
            return None
        return np.vstack(rows)

    def forget_scores(self) -> None:
        """Drop the rows kept by :meth:`keep_scores` and :meth:`prescore`."""
        self._kept = {}

    def lengths(self, upto: int | None = None) -> np.ndarray:
        """Token counts of the pool's first ``upto`` texts (default all): int32 array, a copy."""
        return np.frombuffer(self._lens, dtype=np.int32)[:upto].copy()

    def _kept_row(self, code: str, n: int) -> np.ndarray | None:
        """``code``'s F1 row against the pool's first ``n`` texts from :meth:`keep_scores`, completed with
        the texts added since (the same values, element by element, as scoring it afresh), or None."""
        kept = self._kept.get(code)
        if kept is None or kept[0] > n:
            return None
        m, row = kept
        if n == m:
            return row
        lcs = process.cdist([code], self.codes[m:n], scorer=LCSseq.similarity, dtype=np.int32, workers=1)
        extra = _f1_grid(lcs, [len(code)], self.lengths(n)[m:])
        return np.concatenate([row, extra[0]])

    def _workers(self, rows: int) -> int:
        """Threads for a kernel call of ``rows`` queries: rapidfuzz shares the queries among its threads,
        so one query runs on one (more threads only cost their start: 3x the CPU, measured)."""
        return self.workers if rows > 1 else 1

    def _step(self, m: int) -> int:
        return max(1, self.chunk_pairs // max(1, m))

    # --- scoring ---------------------------------------------------------------------------------------
    def _scored_chunks(self, texts: Sequence[str], upto: int | None = None):
        """(first row, F1 matrix) chunks of ``texts`` (as targets) against the pool's first ``upto`` texts."""
        pool = self.codes if upto is None else self.codes[:upto]
        codes = self.encode(texts)
        lens = self.lengths(len(pool))
        step = self._step(len(pool))
        for lo in range(0, len(codes), step):
            chunk = codes[lo : lo + step]
            lcs = process.cdist(chunk, pool, scorer=LCSseq.similarity, dtype=np.int32, workers=self._workers(len(chunk)))
            yield lo, _f1_grid(lcs, _lengths(chunk), lens)

    def scores(self, texts: Sequence[str], *, dtype: type = np.float64) -> np.ndarray:
        """F1 matrix of shape (n, len(pool)): row i holds texts[i] (as target) against every pool text.

        ``dtype`` float64 is exact; float32 halves the memory (n*m*4 bytes) and rounds.
        """
        out = np.zeros((len(texts), len(self.codes)), dtype=dtype)
        if self.codes:
            for lo, f1 in self._scored_chunks(texts):
                out[lo : lo + len(f1)] = f1
        return out

    def max(self, texts: Sequence[str]) -> list[float]:
        """Each text's maximum F1 over the pool (0.0 for an empty pool).

        F1 = 2*LCS/(m+n) is rapidfuzz's normalized Indel similarity, computed in C++: its argmax is the
        F1 argmax, and equal fractions give equal floats, so ties stay ties. Only each row's tied best
        columns then get an LCS and rouge-score's float formula, which makes the maximum bit-identical.
        A row whose best similarity is 0 shares no token with the pool: its F1 is 0.0.
        """
        codes = self.encode(texts)
        out = np.zeros(len(codes), dtype=np.float64)
        if not self.codes or not codes:
            return out.tolist()
        pool_lens = self.lengths().astype(np.float64)
        step = self._step(len(self.codes))
        for lo in range(0, len(codes), step):
            chunk = codes[lo : lo + step]
            sim = process.cdist(chunk, self.codes, scorer=Indel.normalized_similarity, dtype=np.float64,
                                workers=self._workers(len(chunk)))
            best = sim.max(axis=1)
            ties = sim == best[:, None]
            del sim
            ties[best == 0] = False
            rows, cols = np.nonzero(ties)  # row-major: each row's tied columns together
            if not len(rows):
                continue
            lcs = process.cpdist([chunk[i] for i in rows.tolist()], [self.codes[j] for j in cols.tolist()],
                                 scorer=LCSseq.similarity, dtype=np.int32, workers=self._workers(len(rows)))
            f1 = _f1(lcs, _lengths(chunk)[rows], pool_lens[cols])
            starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            out[lo + rows[starts]] = np.maximum.reduceat(f1, starts)
        return out.tolist()

    def top_k(self, texts: Sequence[str], k: int = 10, *, upto: int | None = None) -> list[tuple[list[tuple[str, float]], float]]:
        """Each text's k most similar pool texts and its mean F1 over the pool.

        Args:
            texts: n texts.
            k: neighbours (fewer when the pool is smaller).
            upto: compare with the pool's first ``upto`` texts only (e.g. the pool as it was when a
                kept instruction was decided, which leaves the instruction itself out).
        Returns:
            n pairs ``(neighbours, mean)``: neighbours as (pool text, F1), highest F1 first and, among
            equal scores, earlier pool texts first; mean over the compared pool (0.0 when empty).
            These are the ``most_similar`` and ``avg_similarity_score`` fields of the released code's
            output (whose ``np.argsort`` leaves the order of ties to the sort algorithm).
        """
        n = len(self.codes) if upto is None else min(upto, len(self.codes))
        if n == 0:
            return [([], 0.0) for _ in texts]
        if self._kept and len(texts) == 1:
            row = self._kept_row(self.encode(texts)[0], n)
            if row is not None:
                return [([(self.texts[j], float(row[j])) for j in _top_indices(row, k)], float(row.mean()))]
        out = []
        for _, f1 in self._scored_chunks(texts, upto=n):
            for row in f1:
                out.append(([(self.texts[j], float(row[j])) for j in _top_indices(row, k)], float(row.mean())))
        return out


def _top_indices(row: np.ndarray, k: int) -> list[int]:
    """Indices of the k highest values of ``row``, highest first and, among equal values, lowest index
    first: the first k of a stable argsort of ``-row``, without sorting the whole row. Every value at
    least the k-th highest is a candidate (ties at the k-th included), kept in index order, then sorted
    stably."""
    if k >= len(row) or k <= 0:
        return np.argsort(-row, kind="stable")[:k].tolist()
    cand = None
    if len(row) >= 64 * k:
        # The k-th highest of every 16th value is at most the row's k-th highest: every value at least
        # that one (one pass) holds the k highest, and partitioning only those costs less than the row.
        sample = row[::16]
        floor = np.partition(sample, len(sample) - k)[len(sample) - k]
        cand = np.flatnonzero(row >= floor)
        values = row[cand]
    else:
        values = row
    kth = np.partition(values, len(values) - k)[len(values) - k]  # the k-th highest value
    cand = np.flatnonzero(row >= kth) if cand is None else cand[values >= kth]
    return cand[np.argsort(-row[cand], kind="stable")[:k]].tolist()
