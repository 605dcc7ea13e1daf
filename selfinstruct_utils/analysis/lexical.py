"""Lexical diversity of a set of texts: distinct-n, MTLD and compression ratio.

All three read the same tokens, those of the kit's ROUGE-L (:func:`selfinstruct_utils.rouge.tokenize`:
lower-cased runs of ``[a-z0-9]``), so "Write a poem." and "write a poem" count as the same words.

distinct-n and the compression ratio depend on how many texts they see (more texts repeat more
n-grams); compare them only at equal size (:mod:`selfinstruct_utils.analysis.compare` does). MTLD was
designed to depend little on text length.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from ..rouge import tokenize

__all__ = ["ngrams", "TokenTable", "distinct_n", "compression_ratio", "mtld", "mtld_of_tokens"]


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The ``len(tokens) - n + 1`` contiguous n-grams of one text (none when it is shorter than n)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


class TokenTable:
    """The ROUGE tokens of a set of texts, as integer ids, tokenized once; distinct-n and MTLD of any subset.

    Args:
        texts: n texts.
    Attributes:
        words: the vocabulary (id -> token), in first-seen order.
        ids: int64 array of every text's token ids, concatenated; ``offsets[i]:offsets[i + 1]`` is text i.
    """

    def __init__(self, texts: Sequence[str]):
        vocab: dict[str, int] = {}
        ids: list[int] = []
        lengths = []
        for text in texts:
            tokens = tokenize(text)
            ids += [vocab.setdefault(t, len(vocab)) for t in tokens]
            lengths.append(len(tokens))
        self.words = list(vocab)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _select(self, rows: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
        if rows is None:
            return self.ids, np.diff(self.offsets)
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        if not len(rows):
            return self.ids[:0], lengths
        # the positions of the chosen texts' tokens, without a loop over texts
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return self.ids[np.repeat(starts, lengths) + within], lengths

    def tokens(self, rows: Sequence[int] | None = None) -> list[str]:
        """The tokens of the texts at ``rows`` (default all), in order, as one list."""
        ids, _ = self._select(rows)
        words = self.words
        return [words[i] for i in ids.tolist()]

    def distinct_n(self, n: int = 1, rows: Sequence[int] | None = None) -> float:
        """:func:`distinct_n` of the texts at ``rows`` (default all)."""
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        ids, lengths = self._select(rows)
        ends = np.repeat(np.cumsum(lengths), lengths)  # each token's text's end
        starts = np.flatnonzero(np.arange(len(ids)) + n <= ends)  # n-grams never cross two texts
        if not len(starts):
            return float("nan")
        vocab = max(len(self.words), 1)
        if vocab ** n < 2**63:  # one integer per n-gram
            keys = ids[starts]
            for j in range(1, n):
                keys = keys * vocab + ids[starts + j]
            distinct = len(np.unique(keys))
        else:
            distinct = len(np.unique(np.stack([ids[starts + j] for j in range(n)], axis=1), axis=0))
        return distinct / len(starts)


def distinct_n(texts: Sequence[str], n: int = 1) -> float:
    """Distinct n-grams divided by all n-grams, over a set of texts (n-grams never cross two texts).

    Args:
        texts: the set (e.g. instructions).
        n: n-gram length (1-3 in the comparison).
    Returns:
        A share in (0, 1]; NaN when no text has n tokens.
    Raises:
        ValueError: n below 1.
    Example: ["a b a", "a b"] with n=1 has 5 unigrams, 2 distinct: 0.4; with n=2 it has 3 bigrams
        (a b, b a, a b), 2 distinct: 2/3.
    Source: Li et al. (2016), "A Diversity-Promoting Objective Function for Neural Conversation Models",
        Sec. 4.3 (distinct-1, distinct-2). Computed on :class:`TokenTable` ids (one integer per n-gram).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    return TokenTable(texts).distinct_n(n)


def compression_ratio(texts: Sequence[str], *, level: int = 9) -> float:
    """Size of the texts joined by newlines (UTF-8 bytes) divided by its zlib-compressed size.

    A set that repeats itself compresses well: the higher the ratio, the more repetitive (less diverse)
    the set. The ratio grows with the number of texts (the compressor finds more to reuse), so compare
    sets at equal size.

    Args:
        texts: the set (non-empty).
        level: zlib compression level (9: best, deterministic).
    Returns:
        ``len(raw) / len(zlib.compress(raw, level))``, where ``raw = "\\n".join(texts).encode("utf-8")``.
    Raises:
        ValueError: ``texts`` is empty.
    Source: Shaib et al. (2024), "Standardizing the Measurement of Text Diversity: A Tool and a
        Comparative Analysis of Scores" (compression ratio, gzip); zlib is the same DEFLATE without the
        gzip header, so short sets are not dominated by a constant 18-byte header.
    """
    if not texts:
        raise ValueError("compression_ratio needs at least one text")
    raw = "\n".join(texts).encode("utf-8")
    return len(raw) / len(zlib.compress(raw, level))


def mtld(texts: Sequence[str], *, threshold: float = 0.72) -> float:
    """Measure of Textual Lexical Diversity of the texts' tokens, read in the given order as one stream.

    Computed by the ``lexicalrichness`` package (its bidirectional MTLD), on the kit's tokens.

    Args:
        texts: the set; their order matters a little (the comparison keeps the dataset's order).
        threshold: the type-token-ratio at which a factor ends (McCarthy and Jarvis: 0.72).
    Returns:
        Mean number of tokens per factor (higher: more diverse); NaN without tokens.
    Raises:
        ImportError: ``lexicalrichness`` is not installed (the ``analysis`` extra brings it).
    Source: McCarthy and Jarvis (2010), "MTLD, vocd-D, and HD-D: A validation study of sophisticated
        approaches to lexical diversity assessment", Behavior Research Methods 42(2).
    """
    return mtld_of_tokens([t for text in texts for t in tokenize(text)], threshold=threshold)


def mtld_of_tokens(tokens: Sequence[str], *, threshold: float = 0.72) -> float:
    """:func:`mtld` of tokens already made (e.g. :meth:`TokenTable.tokens`), read in order as one stream."""
    try:
        from lexicalrichness import LexicalRichness
    except ImportError as err:
        raise ImportError(f"MTLD needs lexicalrichness: pip install 'selfinstruct-kit[analysis]' ({err})") from None
    if not tokens:
        return float("nan")
    # the tokens are already normalised: hand them over as a list, without lexicalrichness' own preprocessing
    lex = LexicalRichness(list(tokens), preprocessor=None, tokenizer=None)
    return float(lex.mtld(threshold=threshold))
