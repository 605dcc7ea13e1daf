"""Exact, fast ROUGE-L F1: the one engine behind the novelty filter and every analysis.

Contract: every score equals ``RougeScorer(["rougeL"]).score(target, prediction).fmeasure`` of
``rouge-score`` 0.1.2 without stemmer, bit for bit (the tests compare with ``==``). How:

1. **Tokenize once** exactly as ``rouge_score.tokenize``: lower-case, every run of characters outside
   ``[a-z0-9]`` becomes a space, split. Non-ASCII words vanish (so rouge-score gives 0.0 to two
   identical Chinese sentences); ``unicode=True`` keeps them (an option that no longer matches rouge-score).
2. **Encode** each token as an integer id, and each text as a ``str`` whose characters are those ids
   (code points): a longest common subsequence (LCS) of tokens is an LCS of characters.
3. **LCS** with rapidfuzz's bit-parallel C++ ``LCSseq``, many-vs-many on all cores.
4. **F1** from the integer LCS with rouge-score's own float operations, vectorized:
   ``p = lcs/len(pred); r = lcs/len(target); f = 2*p*r/(p+r)`` (0 when the LCS is 0).

One type, :class:`RougeIndex`, holds a pool tokenized once and answers :meth:`~RougeIndex.max`,
:meth:`~RougeIndex.top_k` and the incremental novelty filter :meth:`~RougeIndex.add_novel`. The filter
is exact and prunes: F1 >= t needs ``LCS >= t(m+n)/2``, and the LCS of two texts is at most the number
of tokens they share; so a candidate can only be too similar to a pool text that contains one of its
rarest ``m - ceil(t*m/(2-t)) + 1`` tokens (pigeonhole) and whose length lies in
``[t*m/(2-t), m*(2-t)/t]``. An inverted index (token -> pool texts) gives those texts; only they are
scored, exactly.

Source: Lin (2004) for ROUGE-L; Self-Instruct Sec. 2.2 for the novelty filter (threshold 0.7).
"""

from __future__ import annotations

import operator
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

__all__ = ["tokenize", "rougeL", "paired", "max_rougeL", "RougeIndex", "NoveltyDecision"]

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
    """rouge-score's F-measure from integer LCS lengths, with its float operations in its order
    (broadcasting; 0.0 where the LCS is 0)."""
    lcs = np.asarray(lcs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / len_pred
        recall = lcs / len_target
        f = 2 * precision * recall / (precision + recall)
    return np.where(lcs > 0, f, 0.0)


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
    lcs = np.fromiter((LCSseq.similarity(x, y) for x, y in zip(a, b, strict=True)), dtype=np.float64, count=len(a))
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
    Source: Self-Instruct Sec. 2.2 (novelty filter); Lin (2004) for ROUGE-L.
    """
    return RougeIndex(pool, unicode=unicode, workers=workers).max(candidates)


@dataclass(frozen=True)
class NoveltyDecision:
    """What the novelty filter decided about one candidate.

    Attributes:
        accepted: the candidate joined the pool.
        score: when too similar, the ROUGE-L F1 with ``blocker``; else None (pruned pairs are never scored).
        blocker: the most similar pool text when too similar (the earliest one among equals), else None.
        over_limit: not decided because ``max_accept`` candidates had already been accepted in the call.
    """

    accepted: bool
    score: float | None = None
    blocker: str | None = None
    over_limit: bool = False


_COMPARE = {"gt": operator.gt, "ge": operator.ge}


class RougeIndex:
    """A pool of texts tokenized once; exact ROUGE-L F1 of any text against it, and the task pool's
    incremental novelty filter (paper Sec. 2.2).

    Args:
        pool: initial texts (e.g. the seed instructions).
        unicode: see :func:`tokenize`.
        workers: threads for the LCS kernel (-1: all cores).
        chunk_pairs: queries are scored in chunks of about this many pairs (bounds memory: 12 bytes a pair).
    """

    def __init__(self, pool: Sequence[str] = (), *, unicode: bool = False, workers: int = -1, chunk_pairs: int = 20_000_000):
        self.texts: list[str] = []
        self.codes: list[str] = []
        self.workers = workers
        self.chunk_pairs = chunk_pairs
        self._vocab = _Vocabulary(unicode=unicode)
        self._lens = array("i")
        self._distinct: list[str] = []  # each text's distinct token codes
        # the novelty filter's pruning state (see _sync_presence and _presence_matrices), brought up to date on use
        self._synced = 0
        self._df = np.zeros(0, dtype=np.int64)  # token id -> pool texts holding it
        self._band_sizes = np.zeros(len(_BAND_LO), dtype=np.int64)  # pool texts per length band
        self._presence = self._tail = None
        self._presence_n = 0
        self.add(pool)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, texts: Sequence[str]) -> None:
        """Append texts to the pool without filtering them (e.g. replaying a run's recorded decisions)."""
        texts = list(texts)
        for text, code in zip(texts, self._vocab.encode_many(texts), strict=True):
            self._append(text, code)

    def _append(self, text: str, code: str) -> None:
        self.texts.append(text)
        self.codes.append(code)
        self._lens.append(len(code))
        self._distinct.append("".join(set(code)))

    # --- scoring ---------------------------------------------------------------------------------------
    def _scored_chunks(self, texts: Sequence[str], upto: int | None = None):
        """(first row, F1 matrix) chunks of ``texts`` (as targets) against the pool's first ``upto`` texts."""
        pool = self.codes if upto is None else self.codes[:upto]
        codes = self._vocab.encode_many(list(texts))
        step = max(1, self.chunk_pairs // max(1, len(pool)))
        lens = _lengths(pool)[None, :]
        for lo in range(0, len(codes), step):
            chunk = codes[lo : lo + step]
            lcs = process.cdist(chunk, pool, scorer=LCSseq.similarity, dtype=np.int32, workers=1)
            yield lo, _f1(lcs, _lengths(chunk)[:, None], lens)

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
        """Each text's maximum F1 over the pool (0.0 for an empty pool)."""
        if not self.codes:
            return [0.0] * len(texts)
        return [float(v) for _, f1 in self._scored_chunks(texts) for v in f1.max(axis=1)]

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
        out = []
        for _, f1 in self._scored_chunks(texts, upto=n):
            order = np.argsort(-f1, axis=1, kind="stable")[:, :k]
            for row, idx in zip(f1, order, strict=True):
                out.append(([(self.texts[j], float(row[j])) for j in idx], float(row.mean())))
        return out

    # --- the novelty filter ------------------------------------------------------------------------------
    def add_novel(
        self,
        candidates: Sequence[str],
        *,
        threshold: float = 0.7,
        comparison: Literal["gt", "ge"] = "gt",
        max_accept: int | None = None,
    ) -> list[NoveltyDecision]:
        """Decide each candidate in order; an accepted one joins the pool at once (so later candidates,
        of this call too, are compared with it).

        A candidate is too similar when its maximum ROUGE-L F1 with the pool is greater than
        ``threshold`` (``comparison="gt"``, the released code) or at least ``threshold`` (``"ge"``, the
        paper's text: keep when "less than 0.7"); they differ only at exactly the threshold.

        Exact pruning, for a whole call at once: with m candidate tokens, a pair can reach F1 >= t only
        if the two texts share at least ``need = ceil(t*m/(2-t))`` tokens and the pool text's length n
        lies in [t*m/(2-t), (2-t)*m/t]. Each candidate's ``m - need + 1`` rarest token occurrences,
        counted against the pool's token-presence matrix (keyed by token and length band, so that only
        bands that can pass are reached) in one sparse matrix product (scipy.sparse), give ``hits``;
        ``LCS <= hits + need - 1`` and ``LCS <= min(m, n)``. Only pairs whose bound reaches
        ``t*(m+n)/2`` get an exact LCS.

        Args:
            candidates: k instructions.
            threshold: ROUGE-L F1 threshold in [0, 1] (paper: 0.7).
            comparison: "gt" or "ge".
            max_accept: accept at most this many; the rest get ``over_limit`` decisions, unscored.
        Returns:
            k decisions, in order.
        Raises:
            ValueError: a threshold outside [0, 1] or an unknown comparison.
        """
        if comparison not in _COMPARE:
            raise ValueError(f"comparison must be 'gt' or 'ge', not {comparison!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], not {threshold}")
        too_similar = _COMPARE[comparison]
        candidates = list(candidates)
        codes = self._vocab.encode_many(candidates)
        pool_best = self._best_in_pool(codes, threshold)
        # Within the call: candidate i against the candidates before it (those accepted count).
        lcs = process.cdist(codes, codes, scorer=LCSseq.similarity, dtype=np.int32, workers=1) if codes else None
        within = _f1(lcs, _lengths(codes)[:, None], _lengths(codes)[None, :]) if codes else None
        decisions: list[NoveltyDecision] = []
        accepted: list[int] = []
        for i in range(len(candidates)):
            if max_accept is not None and len(accepted) >= max_accept:
                decisions.append(NoveltyDecision(False, over_limit=True))
                continue
            best = pool_best[i]
            blocker = self.texts[best[1]] if best is not None else None
            if accepted:  # the earliest of the most similar accepted candidates; the pool wins ties
                scores = within[i, accepted]
                k = int(np.argmax(scores))
                if best is None or scores[k] > best[0]:
                    best, blocker = (float(scores[k]), accepted[k]), candidates[accepted[k]]
            if best is not None and too_similar(best[0], threshold):
                decisions.append(NoveltyDecision(False, best[0], blocker))
            else:
                decisions.append(NoveltyDecision(True))
                accepted.append(i)
        for i in accepted:
            self._append(candidates[i], codes[i])
        return decisions

    def _best_in_pool(self, codes: list[str], threshold: float) -> list[tuple[float, int] | None]:
        """For each code, (F1, pool index) of its most similar pool text among those that can reach
        ``threshold`` (the earliest among equals), or None when no pool text can. Exact: every pool
        text that could score >= threshold is scored."""
        out: list[tuple[float, int] | None] = [None] * len(codes)
        if not self.codes or not codes:
            return out
        t = threshold - 1e-9  # slack: never prune a pair whose float F1 could still reach the threshold
        m = _lengths(codes).astype(np.int64)
        pairs_i: list[np.ndarray] = []
        pairs_j: list[np.ndarray] = []
        brute = (m == 0) | (t <= 0)
        for i in np.flatnonzero(brute).tolist():  # threshold 0 or an empty candidate: every pool text counts
            pairs_i.append(np.full(len(self.codes), i))
            pairs_j.append(np.arange(len(self.codes)))
        pruned = np.flatnonzero(~brute)
        if len(pruned):
            i_idx, j_idx = self._bound_survivors([codes[i] for i in pruned], t)
            pairs_i.append(pruned[i_idx])
            pairs_j.append(j_idx)
        rows = np.concatenate(pairs_i) if pairs_i else np.zeros(0, dtype=np.int64)
        cols = np.concatenate(pairs_j) if pairs_j else np.zeros(0, dtype=np.int64)
        if len(rows) == 0:
            return out
        pick_pool = operator.itemgetter(*cols.tolist())(self.codes)
        pick_cand = operator.itemgetter(*rows.tolist())(codes)
        if len(rows) == 1:
            pick_pool, pick_cand = [pick_pool], [pick_cand]
        lcs = process.cpdist(pick_cand, pick_pool, scorer=LCSseq.similarity, dtype=np.int32,
                             workers=self.workers if len(rows) >= 2048 else 1)
        f1 = _f1(lcs, m[rows].astype(np.float64), np.frombuffer(self._lens, dtype=np.int32)[cols].astype(np.float64))
        order = np.lexsort((cols, -f1, rows))  # per candidate: best F1 first, then the earliest pool text
        first = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
        for k in first.tolist():
            out[int(rows[k])] = (float(f1[k]), int(cols[k]))
        return out

    def _bound_survivors(self, codes: list[str], t: float) -> tuple[np.ndarray, np.ndarray]:
        """(candidate index, pool index) of every pair whose LCS bound reaches ``t*(m+n)/2`` (see :meth:`add_novel`).

        One row per (candidate, length band) that can pass: the band's shortest length ``lo`` sets the
        fewest tokens ``alpha = ceil(t*(m+lo)/2)`` a passing pair shares, so the row holds the candidate's
        ``m - alpha + 1`` rarest token occurrences, keyed ``token * bands + band`` so that one sparse
        product with the pool's band-keyed presence matrix counts hits only against that band's texts.
        """
        from scipy import sparse

        self._sync_presence()
        k = len(codes)
        m = _lengths(codes).astype(np.int64)
        tokens = np.frombuffer("".join(codes).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        owner = np.repeat(np.arange(k), m)
        df = np.zeros(len(tokens), dtype=np.int64)
        known = tokens < len(self._df)
        df[known] = self._df[tokens[known]]
        tokens = tokens[np.lexsort((tokens, df, owner))]  # per candidate: rarest token occurrences first
        start = np.cumsum(m) - m
        n_bands = len(_BAND_LO)
        nearest = np.clip(m[:, None], _BAND_LO[None, :], _BAND_HI[None, :])  # where the pass margin peaks in a band
        alpha = np.ceil(t * (m[:, None] + _BAND_LO[None, :]) / 2 - 1e-9).astype(np.int64)
        feasible = ((2 * np.minimum(m[:, None], nearest) >= t * (m[:, None] + nearest) - 1e-9)
                    & (alpha <= m[:, None]) & (self._band_sizes > 0)[None, :])
        row_c, row_b = np.nonzero(feasible)
        # every row takes the prefix the shortest passing length allows (a longer prefix leaves less slack
        # in the bound below than the band's own, so fewer pairs reach the exact LCS)
        need = np.maximum(1, np.ceil(t * m / (2 - t) - 1e-9)).astype(np.int64)
        row_alpha = need[row_c]
        row_min_hits = alpha[row_c, row_b] - row_alpha + 1  # hits + need - 1 >= the band's own alpha
        width = m[row_c] - row_alpha + 1  # occurrences per row
        entry_row = np.repeat(np.arange(len(row_c)), width)
        offset = np.arange(len(entry_row)) - np.repeat(np.cumsum(width) - width, width)
        keys = tokens[start[row_c][entry_row] + offset] * n_bands + row_b[entry_row]
        lens = np.frombuffer(self._lens, dtype=np.int32)
        out_c, out_j = [], []
        for matrix, first in self._presence_matrices():
            inside = keys < matrix.shape[0]
            indptr = np.zeros(len(row_c) + 1, dtype=np.int64)
            np.cumsum(np.bincount(entry_row[inside], minlength=len(row_c)), out=indptr[1:])
            counts = sparse.csr_matrix((np.ones(int(indptr[-1]), dtype=np.int32), keys[inside], indptr),
                                       shape=(len(row_c), matrix.shape[0]))
            product = counts @ matrix  # hits: a row's chosen occurrences whose token the pool text holds
            per_row = np.diff(product.indptr)
            likely = product.data >= np.repeat(row_min_hits, per_row)  # necessary: the band's shortest text passes
            rows = np.repeat(np.arange(len(row_c)), per_row)[likely]
            cand = row_c[rows]
            cols = product.indices[likely].astype(np.int64) + first
            n = lens[cols]
            bound = np.minimum(np.minimum(product.data[likely] + row_alpha[rows] - 1, m[cand]), n)
            keep = 2 * bound >= t * (m[cand] + n) - 1e-9
            out_c.append(cand[keep])
            out_j.append(cols[keep])
        return np.concatenate(out_c), np.concatenate(out_j)

    _TAIL = 2048  # pool texts kept out of the big presence matrix until it is rebuilt

    def _sync_presence(self) -> None:
        """Bring the token document frequencies and band sizes up to date with the texts added since."""
        if self._synced == len(self.codes):
            return
        tokens = np.frombuffer("".join(self._distinct[self._synced :]).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        if len(tokens) and tokens.max() >= len(self._df):
            grown = np.zeros(int(tokens.max()) + 1, dtype=np.int64)
            grown[: len(self._df)] = self._df
            self._df = grown
        np.add.at(self._df, tokens, 1)
        self._band_sizes += np.bincount(_band_of(np.frombuffer(self._lens, dtype=np.int32)[self._synced :]),
                                        minlength=len(_BAND_LO))
        self._synced = len(self.codes)

    def _presence_matrices(self):
        """[(matrix, index of its first pool text)]: the big band-keyed presence matrix and the tail of texts
        added since it was built (rebuilt when the tail exceeds :attr:`_TAIL` texts)."""
        if self._presence is None or len(self.codes) - self._presence_n > self._TAIL:
            self._presence_n = len(self.codes)
            self._presence = self._presence_matrix(0, self._presence_n)
            self._tail = None
        out = [(self._presence, 0)]
        if len(self.codes) > self._presence_n:
            if self._tail is None or self._tail[0] != len(self.codes):
                self._tail = (len(self.codes), self._presence_matrix(self._presence_n, len(self.codes)))
            out.append((self._tail[1], self._presence_n))
        return out

    def _presence_matrix(self, lo: int, hi: int):
        """Pool texts lo..hi-1 as a CSR matrix: row ``token * bands + band of the text``, one column per text."""
        from scipy import sparse

        distinct = self._distinct[lo:hi]
        tokens = np.frombuffer("".join(distinct).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        items = np.repeat(np.arange(hi - lo), [len(d) for d in distinct])
        bands = _band_of(np.frombuffer(self._lens, dtype=np.int32)[lo:hi])
        keys = tokens * len(_BAND_LO) + bands[items]
        n_keys = int(keys.max()) + 1 if len(keys) else 1
        return sparse.csr_matrix((np.ones(len(keys), dtype=np.int32), (keys, items)), shape=(n_keys, hi - lo))


#: The pool's length bands (tokens): [lo, hi], one per length up to 8, then each about 25% wider.
_BAND_LO = np.array(sorted(set(range(9)) | {int(8 * 1.25 ** k) for k in range(1, 40)}), dtype=np.int64)
_BAND_HI = np.append(_BAND_LO[1:] - 1, 1 << 30)


def _band_of(lengths: np.ndarray) -> np.ndarray:
    return np.searchsorted(_BAND_LO, lengths, side="right") - 1
