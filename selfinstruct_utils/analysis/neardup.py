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

import pandas as pd

__all__ = ["shingles", "jaccard", "NearDuplicates", "near_duplicates"]

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
        :class:`NearDuplicates`.
    Raises:
        ImportError: ``datasketch`` is not installed (the ``analysis`` extra brings it).
    Source: Broder (1997), "On the resemblance and containment of documents" (MinHash); Leskovec,
        Rajaraman and Ullman, *Mining of Massive Datasets*, ch. 3 (LSH banding); Lee et al. (2022),
        "Deduplicating Training Data Makes Language Models Better" (near-duplicates in training data).
    """
    try:
        from datasketch import MinHash, MinHashLSH
        from datasketch.hashfunc import sha1_hash32
    except ImportError as err:
        raise ImportError(f"near-duplicate clusters need datasketch: pip install 'selfinstruct-kit[analysis]' ({err})") from None
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1], not {threshold}")
    texts = list(texts)
    sets = [shingles(t, k) for t in texts]
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of: dict[frozenset, int] = {}
    unique = []
    for i, sh in enumerate(sets):
        key = frozenset(sh)
        if key in first_of:  # the same shingle set (e.g. an exact copy): joined without hashing
            parent[find(i)] = find(first_of[key])
        else:
            first_of[key] = i
            unique.append(i)
    # each distinct shingle hashed once (datasketch's sha1_hash32, looked up), and one set of permutations
    # for all (MinHash.bulk): building each MinHash alone would draw them anew
    hashed: dict[str, int] = {}
    for i in unique:
        for s in sets[i]:
            if s not in hashed:
                hashed[s] = sha1_hash32(s.encode("utf-8"))
    hashes = MinHash.bulk([list(sets[i]) for i in unique], num_perm=num_perm, seed=seed, hashfunc=hashed.__getitem__)
    for i, m in zip(unique, hashes, strict=True):
        sh = sets[i]
        for j in lsh.query(m):
            if jaccard(sh, sets[j]) >= threshold:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        lsh.insert(i, m)
    groups: dict[int, list[int]] = {}
    for i in range(len(texts)):
        groups.setdefault(find(i), []).append(i)
    clusters = sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))
    return NearDuplicates(n=len(texts), threshold=threshold, clusters=clusters, texts=texts)
