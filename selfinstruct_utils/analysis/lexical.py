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

from ..rouge import tokenize

__all__ = ["ngrams", "distinct_n", "compression_ratio", "mtld"]


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The ``len(tokens) - n + 1`` contiguous n-grams of one text (none when it is shorter than n)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 1) -> float:
    """Distinct n-grams divided by all n-grams, over a set of texts (n-grams never cross two texts).

    Args:
        texts: the set (e.g. instructions).
        n: n-gram length (1-3 in the comparison).
    Returns:
        A share in (0, 1]; NaN when no text has n tokens.
    Example: ["a b a", "a b"] with n=1 has 5 unigrams, 2 distinct: 0.4; with n=2 it has 3 bigrams
        (a b, b a, a b), 2 distinct: 2/3.
    Source: Li et al. (2016), "A Diversity-Promoting Objective Function for Neural Conversation Models",
        Sec. 4.3 (distinct-1, distinct-2).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    total = 0
    seen: set[tuple[str, ...]] = set()
    for text in texts:
        grams = ngrams(tokenize(text), n)
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else float("nan")


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
    try:
        from lexicalrichness import LexicalRichness
    except ImportError as err:
        raise ImportError(f"MTLD needs lexicalrichness: pip install 'selfinstruct-kit[analysis]' ({err})") from None
    tokens = [t for text in texts for t in tokenize(text)]
    if not tokens:
        return float("nan")
    # the tokens are already normalised: hand them over as a list, without lexicalrichness' own preprocessing
    lex = LexicalRichness(tokens, preprocessor=None, tokenizer=None)
    return float(lex.mtld(threshold=threshold))
