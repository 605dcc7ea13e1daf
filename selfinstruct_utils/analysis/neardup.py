"""Near-duplicate clusters of a set of texts, by MinHash and locality-sensitive hashing (``datasketch``).

Each text becomes the set of its character 5-grams (lower-cased, runs of whitespace made one space):
short instructions that differ by a word or a suffix ("Write a function to reverse a string." /
"Write a function that reverses a string") share most of them, which word shingles of 15-word texts
would not. MinHash (128 permutations) estimates the Jaccard similarity of two such sets; LSH proposes
the pairs whose estimate likely reaches the threshold; each proposed pair is then **checked with the
exact Jaccard similarity of the two shingle sets**, so no pair in a cluster is below the threshold.
Clusters are the connected components of the checked pairs (union-find). LSH may miss a pair whose
similarity is close to the threshold (a false negative, with a probability set by its bands).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["shingles", "jaccard", "NearDuplicates", "NearDuplicateIndex", "near_duplicates"]

_SPACE = re.compile(r"\s+")


def shingles(text: str, k: int = 5) -> set[str]:
    """Character k-grams of the normalised text (lower case, whitespace runs as one space, stripped);
    a text shorter than k is its own single shingle."""
    norm = _SPACE.sub(" ", text.lower()).strip()
    if len(norm) <= k:
        return {norm}
    return {norm[i : i + k] for i in range(len(norm) - k + 1)}


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


@dataclass
class NearDuplicates:
    """Near-duplicate clusters of a set.

    Attributes:
        n: texts examined.
        threshold: the Jaccard similarity (of character 5-gram sets) a pair reached.
        clusters: lists of indices into the texts, each of at least two, largest first (then by first index).
        texts: the texts examined.
    """

    n: int
    threshold: float
    clusters: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def in_clusters(self) -> int:
        """Texts that have at least one near-duplicate."""
        return sum(len(c) for c in self.clusters)

    @property
    def redundant(self) -> int:
        """Texts that could go while one of each cluster stays (``in_clusters - len(clusters)``)."""
        return self.in_clusters - len(self.clusters)

    @property
    def redundant_share(self) -> float:
        """:attr:`redundant` / n (0-1; NaN for an empty set)."""
        return self.redundant / self.n if self.n else float("nan")

    def examples(self, max_clusters: int = 10, per_cluster: int = 3) -> pd.DataFrame:
        """The largest clusters with a few members each: columns ``cluster`` (1 = largest), ``size``,
        ``text``."""
        rows = []
        for k, cluster in enumerate(self.clusters[:max_clusters], start=1):
            for i in cluster[:per_cluster]:
                rows.append({"cluster": k, "size": len(cluster), "text": self.texts[i]})
        return pd.DataFrame(rows, columns=["cluster", "size", "text"])


class NearDuplicateIndex:
    """Shingle sets and MinHash signatures of a set of texts, computed once (lazily, per text), from which
    the near-duplicate clusters of the whole set or of any subset are found (:meth:`clusters`).

    The signatures are datasketch's own (``MinHash`` with ``num_perm`` and ``seed``, shingles hashed with
    ``sha1_hash32``), computed for many texts at once with numpy: each shingle's permuted hash values by
    the library's formula for its scheme, then the minimum over a text's shingles (tested equal to
    ``MinHash.bulk``). LSH is datasketch's banding (``MinHashLSH``'s b bands of r rows for the threshold):
    two texts are candidates when one band of their signatures is identical, and every candidate pair is
    checked with the exact Jaccard similarity.

    Args:
        texts: n texts.
        num_perm, k, seed: as :func:`near_duplicates`.
    Raises:
        ImportError: ``datasketch`` is not installed (the ``analysis`` extra brings it).
    """

    def __init__(self, texts: Sequence[str], *, num_perm: int = 128, k: int = 5, seed: int = 1):
        try:
            from datasketch import MinHash
        except ImportError as err:
            raise ImportError(f"near-duplicate clusters need datasketch: pip install 'selfinstruct-kit[analysis]' ({err})") from None
        self.texts = list(texts)
        self.num_perm, self.k, self.seed = num_perm, k, seed
        self._sets: list[set[str] | None] = [None] * len(self.texts)
        self._sigs: np.ndarray | None = None
        self._done = np.zeros(len(self.texts), dtype=bool)
        self._hashed: dict[str, int] = {}
        self._minhash = MinHash(num_perm=num_perm, seed=seed)

    def shingle_set(self, i: int) -> set[str]:
        """The shingle set of text ``i``."""
        sh = self._sets[i]
        if sh is None:
            sh = self._sets[i] = shingles(self.texts[i], self.k)
        return sh

    def _permuted(self, hv: list[int]) -> np.ndarray | None:
        """Permuted hash values (num_perm x len(hv): one column per hash), by datasketch's formula for the
        MinHash's scheme; None for a scheme this code does not know (the caller then asks datasketch itself)."""
        from datasketch import minhash as dm

        m = self._minhash
        a, b = m.permutations
        scheme = getattr(m, "scheme", "legacy")
        if scheme == "legacy":
            row = np.array(hv, dtype=np.uint64)[None, :]
            return np.bitwise_and((row * a[:, None] + b[:, None]) % dm._mersenne_prime, dm._max_hash)
        widths = getattr(dm, "_SCHEME_WIDTHS", {})
        if scheme in widths:
            row = dm._fmix(m._hash_input_array(hv).reshape(1, -1), widths[scheme])
            return row * a[:, None] + b[:, None]
        return None

    def signatures(self, rows: Sequence[int]) -> np.ndarray:
        """MinHash signatures (hash values) of the texts at ``rows``: array (len(rows), num_perm)."""
        from datasketch import MinHash
        from datasketch.hashfunc import sha1_hash32

        rows = np.asarray(rows, dtype=np.int64)
        todo = np.unique(rows[~self._done[rows]]) if len(rows) else rows
        if len(todo):
            hashed = self._hashed
            per_text = [self.shingle_set(i) for i in todo.tolist()]
            new = set().union(*per_text).difference(hashed)
            hashed.update((sh, sha1_hash32(sh.encode("utf-8"))) for sh in new)
            if self._sigs is None:
                self._sigs = np.zeros((len(self.texts), self.num_perm), dtype=self._minhash.hashvalues.dtype)
            block = max(1, 2_000_000 // self.num_perm)  # shingles per numpy block (bounded memory)
            k = 0
            while k < len(todo):
                j, count = k, 0
                while j < len(todo) and (count == 0 or count + len(per_text[j]) <= block):
                    count += len(per_text[j])
                    j += 1
                hv: list[int] = []
                for part in per_text[k:j]:
                    hv += map(hashed.__getitem__, part)
                phv = self._permuted(hv)
                if phv is None:  # unknown scheme: datasketch itself, one MinHash per text
                    for i, m in zip(todo[k:j].tolist(), MinHash.bulk([list(part) for part in per_text[k:j]],
                                                                     num_perm=self.num_perm, seed=self.seed,
                                                                     hashfunc=hashed.__getitem__), strict=True):
                        self._sigs[i] = m.hashvalues
                else:
                    starts = np.cumsum([0] + [len(part) for part in per_text[k : j - 1]])
                    self._sigs[todo[k:j]] = np.minimum.reduceat(phv, starts, axis=1).T
                k = j
            self._done[todo] = True
        if self._sigs is None:
            return np.zeros((0, self.num_perm), dtype=self._minhash.hashvalues.dtype)
        return self._sigs[rows]

    def clusters(self, rows: Sequence[int] | None = None, *, threshold: float = 0.7) -> NearDuplicates:
        """Near-duplicate clusters among the texts at ``rows`` (default: all), indices into ``rows``:
        the same as :func:`near_duplicates` of those texts."""
        from datasketch import MinHashLSH

        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must lie in (0, 1], not {threshold}")
        rows = list(range(len(self.texts))) if rows is None else [int(r) for r in rows]
        n = len(rows)
        parent = list(range(n))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        def union(a: int, b: int) -> None:
            a, b = find(a), find(b)
            if a != b:
                parent[max(a, b)] = min(a, b)

        first_of: dict[frozenset, int] = {}
        unique = []
        for pos, r in enumerate(rows):
            key = frozenset(self.shingle_set(r))
            if key in first_of:  # the same shingle set (e.g. an exact copy): joined without hashing
                union(pos, first_of[key])
            else:
                first_of[key] = pos
                unique.append(pos)
        if len(unique) > 1:
            lsh = MinHashLSH(threshold=threshold, num_perm=self.num_perm)
            sigs = self.signatures([rows[p] for p in unique])
            uniq = np.asarray(unique)
            pairs = set()
            for lo, hi in lsh.hashranges:
                band = np.ascontiguousarray(sigs[:, lo:hi])
                keys = band.view(np.dtype((np.void, band.dtype.itemsize * (hi - lo)))).ravel()
                order = np.argsort(keys, kind="stable")
                ks = keys[order]
                same = ks[1:] == ks[:-1]  # sorted neighbours with the same band: their groups hold 2 or more
                if not same.any():
                    continue
                group = np.cumsum(np.r_[True, ~same])
                shared = np.isin(group, group[1:][same])
                for members in np.split(order[shared], np.flatnonzero(np.diff(group[shared])) + 1):
                    members = uniq[np.sort(members)].tolist()
                    for x in range(len(members)):
                        for y in range(x + 1, len(members)):
                            pairs.add((members[x], members[y]))
            for a, b in sorted(pairs):
                if jaccard(self.shingle_set(rows[a]), self.shingle_set(rows[b])) >= threshold:
                    union(a, b)
        groups: dict[int, list[int]] = {}
        for i in range(n):
            groups.setdefault(find(i), []).append(i)
        clusters = sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))
        return NearDuplicates(n=n, threshold=threshold, clusters=clusters, texts=[self.texts[r] for r in rows])


def near_duplicates(
    texts: Sequence[str], *, threshold: float = 0.7, num_perm: int = 128, k: int = 5, seed: int = 1
) -> NearDuplicates:
    """Clusters of texts whose character k-gram sets have a Jaccard similarity of at least ``threshold``.

    Args:
        texts: n texts (exact duplicates are near-duplicates with similarity 1).
        threshold: Jaccard similarity in (0, 1].
        num_perm: MinHash permutations.
        k: shingle length in characters.
        seed: MinHash seed (the result can differ only by LSH's rare misses).
    Returns:
        :class:`NearDuplicates` (through :class:`NearDuplicateIndex`; build one to ask about many
        subsets of the same texts).
    Raises:
        ImportError: ``datasketch`` is not installed (the ``analysis`` extra brings it).
        ValueError: threshold outside (0, 1].
    Source: Broder (1997), "On the resemblance and containment of documents" (MinHash); Leskovec,
        Rajaraman and Ullman, *Mining of Massive Datasets*, ch. 3 (LSH banding); Lee et al. (2022),
        "Deduplicating Training Data Makes Language Models Better" (near-duplicates in training data).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1], not {threshold}")
    return NearDuplicateIndex(texts, num_perm=num_perm, k=k, seed=seed).clusters(threshold=threshold)
