"""The task pool's incremental novelty filter (Self-Instruct Sec. 2.2): a new instruction joins the pool
only when its ROUGE-L F1 with every pool instruction stays at or below a threshold (paper: 0.7).

:class:`NoveltyPool` owns a :class:`~selfinstruct_utils.rouge.RougeIndex` (the pool, tokenized once, which
scores every pair exactly as rouge-score does) and adds the filter's pruning state: per-token document
frequencies, pool texts counted per length band, and a sparse token-presence matrix keyed by token and
length band. The pruning never changes a decision:

- F1 >= t needs ``LCS >= t*(m+n)/2``, and the LCS of two texts is at most the number of tokens they
  share; so a candidate of m tokens can only be too similar to a pool text that holds one of its rarest
  ``m - ceil(t*m/(2-t)) + 1`` token occurrences (pigeonhole), and whose length n lies in
  ``[t*m/(2-t), m*(2-t)/t]``.
- One sparse product (scipy.sparse) of the candidates' rarest occurrences with the presence matrix counts
  those hits for a whole chunk of candidates at once; only pairs whose LCS bound reaches the threshold get
  an exact LCS (rapidfuzz).

A chunk of few candidates against a pool of some thousands (at most :attr:`NoveltyPool.brute_pairs` pairs:
step 1 decides about 3 candidates a request) skips the pruning and scores every pair on one thread, which
costs less than building the sparse product; the accepted candidates' rows then serve their nearest-neighbour
query (:meth:`RougeIndex.keep_scores <selfinstruct_utils.rouge.RougeIndex.keep_scores>`). Candidates whose
rows were scored ahead (:meth:`RougeIndex.prescore <selfinstruct_utils.rouge.RougeIndex.prescore>`, step 1's
decisions) are decided from those rows, completed with the texts added since.

Memory is bounded whatever the number of candidates of one call: they are decided in chunks of
``chunk`` candidates, and the accepted ones of a chunk join the pool before the next chunk, which gives
the same decisions as one pass (see :meth:`NoveltyPool.add_novel`).

Source: Self-Instruct Sec. 2.2 and the released ``bootstrap_instructions.py`` (reject when the maximum
ROUGE-L with the pool is greater than 0.7); Lin (2004) for ROUGE-L.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from .rouge import RougeIndex, _f1, _lengths

__all__ = ["NoveltyDecision", "NoveltyPool"]


@dataclass(frozen=True)
class NoveltyDecision:
    """What the novelty filter decided about one candidate.

    Attributes:
        accepted: the candidate joined the pool.
        score: when too similar, the ROUGE-L F1 with ``blocker``; else None (pruned pairs are never scored).
        blocker: the most similar pool text when too similar (the earliest one among equals: a text already
            in the pool before one accepted in the same call), else None.
        over_limit: not decided because ``max_accept`` candidates had already been accepted in the call.
    """

    accepted: bool
    score: float | None = None
    blocker: str | None = None
    over_limit: bool = False


_COMPARE = {"gt": operator.gt, "ge": operator.ge}

#: The pool's length bands (tokens): [lo, hi], one per length up to 8, then each about 25% wider.
_BAND_LO = np.array(sorted(set(range(9)) | {int(8 * 1.25 ** k) for k in range(1, 40)}), dtype=np.int64)
_BAND_HI = np.append(_BAND_LO[1:] - 1, 1 << 30)


def _band_of(lengths: np.ndarray) -> np.ndarray:
    return np.searchsorted(_BAND_LO, lengths, side="right") - 1


class NoveltyPool:
    """The task pool: texts that were accepted (or added unfiltered), and the novelty filter that decides
    whether a new candidate joins it.

    Args:
        pool: initial texts (e.g. the seed instructions); never filtered.
        unicode: see :func:`selfinstruct_utils.rouge.tokenize`.
        workers: threads for the LCS kernel (-1: all cores).
        chunk: candidates decided together (their pairs with each other are all scored: about 37 bytes a
            pair, 2.4 MB at 256, whatever the number of candidates of one call).

    Attributes:
        index: the pool as a :class:`~selfinstruct_utils.rouge.RougeIndex` (``max``, ``top_k``, ``scores``
            against the pool). Texts may be added to it directly; the filter catches up on its next call.
    """

    _TAIL = 2048  # pool texts kept out of the big presence matrix until it is rebuilt
    #: A chunk whose (candidate, pool text) pairs are at most this many is scored pair by pair (one
    #: thread) instead of pruned: below it the sparse product costs more than the LCS kernel it saves.
    brute_pairs = 20_000

    def __init__(self, pool: Sequence[str] = (), *, unicode: bool = False, workers: int = -1, chunk: int = 256):
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, not {chunk}")
        self.index = RougeIndex(pool, unicode=unicode, workers=workers)
        self.chunk = chunk
        # the pruning state, brought up to date with the index on use (see _sync_presence)
        self._distinct: list[str] = []  # each pool text's distinct token codes
        self._df = np.zeros(0, dtype=np.int64)  # token id -> pool texts holding it
        self._band_sizes = np.zeros(len(_BAND_LO), dtype=np.int64)  # pool texts per length band
        self._presence = self._tail = None
        self._presence_n = 0
        self._rows = None  # (pool size, F1 matrix) of the chunk being decided, when every pair was scored

    def __len__(self) -> int:
        return len(self.index)

    @property
    def texts(self) -> list[str]:
        """The pool's texts, in the order they joined."""
        return self.index.texts

    def add(self, texts: Sequence[str]) -> None:
        """Append texts to the pool without filtering them (e.g. replaying a run's recorded decisions)."""
        self.index.add(texts)

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

        Candidates are decided ``chunk`` at a time: each against the pool (pruned, exact; see the module
        docstring) and against the accepted candidates of its own chunk (all pairs, exact). The accepted
        ones join the pool before the next chunk. Ties go to the earliest text in the pool's order, so
        the decisions, scores and blockers do not depend on how the candidates are split into calls or
        chunks. Memory is bounded by the chunk, not by ``len(candidates)``.

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
        codes = self.index.encode(candidates)
        decisions: list[NoveltyDecision] = []
        left = max_accept
        for lo in range(0, len(candidates), self.chunk):
            if left is not None and left <= 0:
                decisions += [NoveltyDecision(False, over_limit=True)] * (len(candidates) - lo)
                break
            part = self._decide(candidates[lo : lo + self.chunk], codes[lo : lo + self.chunk], threshold, too_similar, left)
            decisions += part
            if left is not None:
                left -= sum(d.accepted for d in part)
        return decisions

    def _decide(self, candidates: list[str], codes: list[str], threshold: float, too_similar, max_accept: int | None):
        """One chunk of :meth:`add_novel`: k candidates against the pool, then against each other."""
        self._rows = None
        pool_best = self._best_in_pool(codes, threshold)
        # Within the chunk: candidate i against the candidates before it (those accepted count).
        lens = _lengths(codes)
        lcs = process.cdist(codes, codes, scorer=LCSseq.similarity, dtype=np.int32,
                            workers=self.index.workers if len(codes) >= 256 else 1)
        within = _f1(lcs, lens[:, None], lens[None, :])
        del lcs
        texts = self.index.texts
        decisions: list[NoveltyDecision] = []
        accepted: list[int] = []
        for i in range(len(candidates)):
            if max_accept is not None and len(accepted) >= max_accept:
                decisions.append(NoveltyDecision(False, over_limit=True))
                continue
            best = pool_best[i]
            blocker = texts[best[1]] if best is not None else None
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
        if self._rows is not None:  # every pair was scored: the accepted ones' rows serve their top_k next
            n, f1 = self._rows
            self.index.keep_scores([codes[i] for i in accepted], n, f1[accepted])
        self._rows = None
        self.index.add_encoded([candidates[i] for i in accepted], [codes[i] for i in accepted])
        return decisions

    def _best_in_pool(self, codes: list[str], threshold: float) -> list[tuple[float, int] | None]:
        """For each code, (F1, pool index) of its most similar pool text among those that can reach
        ``threshold`` (the earliest among equals), or None when no pool text can. Exact: every pool
        text that could score >= threshold is scored."""
        pool = self.index.codes
        out: list[tuple[float, int] | None] = [None] * len(codes)
        if not pool or not codes:
            return out
        t = threshold - 1e-9  # slack: never prune a pair whose float F1 could still reach the threshold
        rows = self.index.kept_rows(codes)  # rows scored ahead (prescore), extended with the texts added since
        if rows is not None:
            return self._best_of_rows(rows, t)
        if len(codes) * len(pool) <= self.brute_pairs:
            return self._best_in_pool_brute(codes, t)
        m = _lengths(codes).astype(np.int64)
        pairs_i: list[np.ndarray] = []
        pairs_j: list[np.ndarray] = []
        brute = (m == 0) | (t <= 0)
        for i in np.flatnonzero(brute).tolist():  # threshold 0 or an empty candidate: every pool text counts
            pairs_i.append(np.full(len(pool), i))
            pairs_j.append(np.arange(len(pool)))
        pruned = np.flatnonzero(~brute)
        if len(pruned):
            i_idx, j_idx = self._bound_survivors([codes[i] for i in pruned], t)
            pairs_i.append(pruned[i_idx])
            pairs_j.append(j_idx)
        rows = np.concatenate(pairs_i) if pairs_i else np.zeros(0, dtype=np.int64)
        cols = np.concatenate(pairs_j) if pairs_j else np.zeros(0, dtype=np.int64)
        if len(rows) == 0:
            return out
        pick_pool = operator.itemgetter(*cols.tolist())(pool)
        pick_cand = operator.itemgetter(*rows.tolist())(codes)
        if len(rows) == 1:
            pick_pool, pick_cand = [pick_pool], [pick_cand]
        lcs = process.cpdist(pick_cand, pick_pool, scorer=LCSseq.similarity, dtype=np.int32,
                             workers=self.index.workers if len(rows) >= 2048 else 1)
        f1 = _f1(lcs, m[rows].astype(np.float64), self.index.lengths()[cols].astype(np.float64))
        order = np.lexsort((cols, -f1, rows))  # per candidate: best F1 first, then the earliest pool text
        first = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
        for k in first.tolist():
            out[int(rows[k])] = (float(f1[k]), int(cols[k]))
        return out

    def _best_in_pool_brute(self, codes: list[str], t: float) -> list[tuple[float, int] | None]:
        """:meth:`_best_in_pool` by scoring every (code, pool text) pair on one thread: for a few
        candidates against a pool of some thousands, cheaper than building the pruning's sparse product.
        A best F1 below ``t`` is reported as None, which decides as the pruned path does (a pool text
        under the threshold never rejects a candidate, and every pool text at or above it is scored by
        both paths, so the maximum and its earliest index agree)."""
        f1 = self.index.pool_rows(codes)
        self._rows = (len(self.index), f1)
        return self._best_of_rows(f1, t)

    @staticmethod
    def _best_of_rows(f1: np.ndarray, t: float) -> list[tuple[float, int] | None]:
        """Each row's (best F1, its first column) of a (k, pool size) F1 matrix, None below ``t``."""
        best = f1.argmax(axis=1)  # the first maximum: the earliest pool text among equals
        top = f1[np.arange(len(f1)), best]
        return [(float(v), int(j)) if v >= t else None for v, j in zip(top.tolist(), best.tolist(), strict=True)]

    def _bound_survivors(self, codes: list[str], t: float) -> tuple[np.ndarray, np.ndarray]:
        """(candidate index, pool index) of every pair whose LCS bound reaches ``t*(m+n)/2`` (see the
        module docstring).

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
        lens = self.index.lengths()
        out_c, out_j = [], []
        for matrix, first, row_keys in self._presence_matrices():
            if row_keys is None:  # one row per key value
                pos, inside = keys, keys < matrix.shape[0]
            else:  # rows only for the keys that occur
                pos = np.searchsorted(row_keys, keys)
                inside = row_keys[np.minimum(pos, len(row_keys) - 1)] == keys
            indptr = np.zeros(len(row_c) + 1, dtype=np.int64)
            np.cumsum(np.bincount(entry_row[inside], minlength=len(row_c)), out=indptr[1:])
            counts = sparse.csr_matrix((np.ones(int(indptr[-1]), dtype=np.int32), pos[inside], indptr),
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

    def _sync_presence(self) -> None:
        """Bring each pool text's distinct tokens, the token document frequencies and the band sizes up to
        date with the texts added to the index since (computed here, so an index that is never filtered
        never pays for them)."""
        codes = self.index.codes
        synced = len(self._distinct)
        if synced == len(codes):
            return
        new = ["".join(set(c)) for c in codes[synced:]]
        self._distinct += new
        tokens = np.frombuffer("".join(new).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        if len(tokens) and tokens.max() >= len(self._df):
            grown = np.zeros(int(tokens.max()) + 1, dtype=np.int64)
            grown[: len(self._df)] = self._df
            self._df = grown
        np.add.at(self._df, tokens, 1)
        self._band_sizes += np.bincount(_band_of(self.index.lengths()[synced:]), minlength=len(_BAND_LO))

    def _presence_matrices(self):
        """[(matrix, index of its first pool text, its row keys or None)]: the big band-keyed presence matrix
        (a row per key value: built rarely, at the cost of the vocabulary times the bands) and the tail of
        texts added since it was built (rebuilt at every call that follows an accept, so with rows only for
        the keys that occur; the whole is rebuilt when the tail exceeds :attr:`_TAIL` texts)."""
        n = len(self._distinct)
        if self._presence is None or n - self._presence_n > self._TAIL:
            self._presence_n = n
            self._presence = self._presence_matrix(0, n, compact=False)
            self._tail = None
        out = [(*self._presence, 0)]
        if n > self._presence_n:
            if self._tail is None or self._tail[0] != n:
                self._tail = (n, self._presence_matrix(self._presence_n, n))
            out.append((*self._tail[1], self._presence_n))
        return [(matrix, first, row_keys) for matrix, row_keys, first in out]

    def _presence_matrix(self, lo: int, hi: int, compact: bool = True):
        """Pool texts lo..hi-1 as (CSR matrix, row keys), one column per text. ``compact``: one row per key
        ``token * bands + band of the text`` that occurs (``row keys``, sorted), so building it costs the
        texts' tokens, not the vocabulary times the bands (which made a small tail as dear as the whole
        pool); else row = key (row keys None), built without a sort."""
        from scipy import sparse

        distinct = self._distinct[lo:hi]
        tokens = np.frombuffer("".join(distinct).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        items = np.repeat(np.arange(hi - lo), [len(d) for d in distinct])
        bands = _band_of(self.index.lengths(hi)[lo:])
        keys = tokens * len(_BAND_LO) + bands[items]
        if not compact:
            n_keys = int(keys.max()) + 1 if len(keys) else 1
            return sparse.csr_matrix((np.ones(len(keys), dtype=np.int32), (keys, items)), shape=(n_keys, hi - lo)), None
        order = np.argsort(keys, kind="stable")  # one sort: rows by key, each row's texts in increasing order
        keys = keys[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, dtype=np.int64)
        row_keys = keys[starts]
        indptr = np.append(starts, len(keys))
        if not len(row_keys):  # only empty texts: one row that no key reaches
            row_keys, indptr = np.array([-1], dtype=np.int64), np.zeros(2, dtype=np.int64)
        matrix = sparse.csr_matrix((np.ones(len(keys), dtype=np.int32), items[order], indptr),
                                   shape=(len(row_keys), hi - lo))
        return matrix, row_keys
