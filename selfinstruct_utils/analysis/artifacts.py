"""Artifacts in generated instruction data: what a chat model or the pipeline left behind.

Chat-model artifacts, matched in the output (and for ``meta_talk`` also in the instruction) by the
regular expressions of :data:`PATTERNS` (data, each with its source):

- ``refusal``: the model declines ("I'm sorry, but I cannot ...", "I am unable to provide ...");
- ``ai_disclaimer``: it talks about itself ("As an AI language model", "I don't have personal opinions");
- ``meta_talk``: it talks about the task instead of doing it ("Here is a possible instruction:",
  "Sure! Here's ...", "Note: this task ...");
- ``copied_prompt_field``: a field marker of the generation prompts copied into a field ("Instruction:",
  "Input:", "Output:", "Task 12:", "Example 3", "Class label:" at the start of a line).

Pipeline artifacts: ``input_equals_output`` (the same text, stripped, in both fields: the paper's
instance filter removes these) and ``empty_output``.

Rates are per instance (rows with an output); instructions without instances count for the
instruction-level pattern (``meta_talk``) only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

__all__ = ["ArtifactPattern", "PATTERNS", "KINDS", "flag_artifacts", "artifact_rates", "artifact_examples"]


@dataclass(frozen=True)
class ArtifactPattern:
    """One family of artifacts: a case-insensitive regular expression and the fields it is searched in.

    Attributes:
        kind: the artifact's name (a column of :func:`flag_artifacts`).
        regex: the expression (``re.IGNORECASE | re.MULTILINE``).
        fields: where it is looked for (``instruction``, ``input``, ``output``).
        source: where the phrases come from.
    """

    kind: str
    regex: str
    fields: tuple[str, ...]
    source: str


#: The artifact patterns, as data. The phrases are ours, grouped after the published lists cited.
PATTERNS: tuple[ArtifactPattern, ...] = (
    ArtifactPattern(
        "refusal",
        r"\b(?:I'?m|I am) (?:so |really |very )?sorry,? (?:but (?:I|as an|that|this|it)\b|I (?:cannot|can't|can’t|am not|'m not|won't|don't|do not|will not)\b)"
        r"|\bI apologi[sz]e,? but\b|\bmy apologies,? but\b"
        r"|\bI (?:cannot|can ?not|can't|can’t|won't|am unable to|'m unable to|am not able to|'m not able to)"
        r" (?:help|assist|provide|comply|fulfil+|complete|answer|generate|create|write|do that|perform)\b(?! but\b)"
        r"|\bI must (?:respectfully )?decline\b",
        ("output",),
        "refusal prefixes of Zou et al. (2023), 'Universal and Transferable Adversarial Attacks on Aligned "
        "Language Models' (the test prefixes of their evaluation), and the ShareGPT_Vicuna_unfiltered dataset card",
    ),
    ArtifactPattern(
        "ai_disclaimer",
        r"\bas an? (?:AI|large)? ?language model\b|\bas an AI(?: assistant)?,? I (?:do not|don't|cannot|can't|am not|'m not)\b"
        r"|\bI(?:'m| am) (?:just |only )?an? (?:AI|AI language model|language model),? (?:and|so) I (?:do not|don't|cannot|can't)\b"
        r"|\bI (?:do not|don't) have (?:personal )?(?:opinions|feelings|emotions|beliefs|preferences|access to real-time)\b",
        ("output",),
        "the 'as an AI language model' phrases removed from ShareGPT conversations for the "
        "ShareGPT_Vicuna_unfiltered dataset (its dataset card), and Zou et al. (2023)'s 'As an AI' prefix",
    ),
    ArtifactPattern(
        "meta_talk",
        r"^\W*(?:sure|certainly|of course|okay|ok)[!,.]?\s+(?:here(?:'s| is| are)|I(?:'d| would| will|'ll) be (?:happy|glad))\b"
        r"|^\W*here(?:'s| is| are) (?:a |an |some |the |\d+ )?"
        r"(?:possible |new |few |list of |sample |example )*(?:instructions?|tasks?|examples?|inputs?|outputs?|answers?|responses?)\b"
        r"|\bthis (?:task|instruction) (?:asks|requires|is asking)\b|^\W*note:\s",
        ("instruction", "output"),
        "the kit's own list: a chat model's preamble ('Sure! Here is ...'), talk about the task instead of "
        "an instance of it, and notes; no published list covers these",
    ),
    ArtifactPattern(
        "copied_prompt_field",
        r"^\s*(?:instruction|input|output|task(?: \d+)?|example \d+|class label|response)\s*:",
        ("input", "output"),
        "the field markers of the generation prompts (paper Tables 6-8: 'Task 9:', 'Example 1', "
        "'Input:', 'Output:', 'Class label:'), which a model may continue into an instance",
    ),
)

#: Every artifact kind, chat-model ones first, then the pipeline's.
KINDS = tuple(p.kind for p in PATTERNS) + ("input_equals_output", "empty_output")

_COMPILED = [(p, re.compile(p.regex, re.IGNORECASE | re.MULTILINE)) for p in PATTERNS]


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def flag_artifacts(df: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per artifact kind (:data:`KINDS`) for each row of a loaded dataset.

    Args:
        df: rows of :func:`~selfinstruct_utils.analysis.datasets.load_dataset` (``instruction``,
            ``input``, ``output``; input/output may be None).
    Returns:
        A DataFrame with the index of ``df``, the columns of :data:`KINDS` and ``has_output`` (the row
        is an instance). Output-based kinds are False where there is no output.
    """
    out = pd.DataFrame(index=df.index)
    has_output = df["output"].map(lambda v: isinstance(v, str))
    out["has_output"] = has_output
    fields = {f: df[f].map(_text) if f in df.columns else pd.Series("", index=df.index) for f in ("instruction", "input", "output")}
    for pattern, rx in _COMPILED:
        hit = pd.Series(False, index=df.index)
        for f in pattern.fields:
            hit |= fields[f].map(lambda s, rx=rx: bool(rx.search(s)))
        if "instruction" not in pattern.fields:
            hit &= has_output
        out[pattern.kind] = hit
    out["input_equals_output"] = has_output & (fields["input"].str.strip() == fields["output"].str.strip()) & (
        fields["output"].str.strip() != "")
    out["empty_output"] = has_output & (fields["output"].str.strip() == "")
    return out


def artifact_rates(df: pd.DataFrame, flags: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each artifact kind's count and rate.

    Returns:
        One row per kind: ``kind``, ``count``, ``of`` (instances; for instruction-level kinds all rows)
        and ``rate`` (count / of, NaN when of is 0).
    """
    flags = flag_artifacts(df) if flags is None else flags
    n_inst = int(flags["has_output"].sum())
    rows = []
    instruction_level = {p.kind for p in PATTERNS if "instruction" in p.fields}
    for kind in KINDS:
        of = len(flags) if kind in instruction_level else n_inst
        count = int(flags[kind].sum())
        rows.append({"kind": kind, "count": count, "of": of, "rate": count / of if of else float("nan")})
    return pd.DataFrame(rows, columns=["kind", "count", "of", "rate"])


def artifact_examples(df: pd.DataFrame, flags: pd.DataFrame | None = None, *, per_kind: int = 3,
                      max_chars: int = 200) -> pd.DataFrame:
    """The first ``per_kind`` rows flagged for each kind: ``kind``, ``instruction``, ``input``, ``output``
    (each cut to ``max_chars`` characters with an ellipsis)."""
    flags = flag_artifacts(df) if flags is None else flags

    def cut(value) -> str:
        s = _text(value)
        return s if len(s) <= max_chars else s[: max_chars - 1] + "…"

    rows = []
    for kind in KINDS:
        for idx in flags.index[flags[kind]][:per_kind]:
            r = df.loc[idx]
            rows.append({"kind": kind, "instruction": cut(r["instruction"]), "input": cut(r.get("input")),
                         "output": cut(r.get("output"))})
    return pd.DataFrame(rows, columns=["kind", "instruction", "input", "output"])
