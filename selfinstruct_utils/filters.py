"""Filters of step 4 (paper Sec. 2.2, "Filtering and postprocessing"), each with a named reason.

Instruction filters (rule-based, before the ROUGE-L novelty filter of :mod:`selfinstruct_utils.rouge`):
``too_short`` (<= 3 words), ``too_long`` (> 150 words), ``blacklisted_keyword`` (image, graph, file,
map, draw, plot, go to, ...: tasks a text-only LM cannot do), ``write_a_program`` (released code),
``starts_with_punctuation``, ``starts_with_non_ascii``.

Instance filters: ``empty_output``, ``input_equals_output``, ``ends_with_colon`` (an incomplete
generation), ``same_input_different_output`` (drops the whole task), ``duplicate``, and
``over_max_per_task`` (at most 5 instances per task, sampled with a seeded RNG).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence

from .parse import ParsedInstances, Rejection, parse_instances
from .records import Instance

__all__ = [
    "BLACKLIST",
    "instruction_rejection_reason",
    "filter_instances",
    "parse_and_filter_task",
    "sample_max_per_task",
]

#: Keywords whose tasks a text-only LM cannot do (paper Sec. 2.2; word-boundary, case-insensitive).
BLACKLIST: tuple[str, ...] = (
    "image", "images", "graph", "graphs", "picture", "pictures",
    "file", "files", "map", "maps", "draw", "plot", "go to",
)
_BLACKLIST_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in BLACKLIST) + r")\b", re.IGNORECASE)


def instruction_rejection_reason(
    instruction: str,
    *,
    min_words: int = 4,
    max_words: int = 150,
    blacklist: Sequence[str] | None = None,
    drop_write_a_program: bool = True,
) -> str | None:
    """Why a rule-based filter rejects an instruction, or None when it passes.

    Args:
        instruction: one instruction (already collapsed to one line).
        min_words: fewest words kept (paper: more than 3, so 4).
        max_words: most words kept (paper: 150).
        blacklist: keywords (default :data:`BLACKLIST`).
        drop_write_a_program: drop instructions starting "Write a program" in any case (released code,
            which lower-cases an instruction before the check; the LM tends to append it to tasks).
    Returns:
        A reason key or None. Words are whitespace-separated tokens.
    Source: paper Sec. 2.2; released ``bootstrap_instructions.py``.
    """
    text = instruction.strip()
    if not text:
        return "empty"
    n_words = len(text.split())
    if n_words < min_words:
        return "too_short"
    if n_words > max_words:
        return "too_long"
    pattern = _BLACKLIST_RE if blacklist is None else re.compile(
        r"\b(" + "|".join(re.escape(w) for w in blacklist) + r")\b", re.IGNORECASE
    )
    if pattern.search(text):
        return "blacklisted_keyword"
    if drop_write_a_program and text.lower().startswith("write a program"):
        return "write_a_program"
    if text[0] in string.punctuation:
        return "starts_with_punctuation"
    if not text[0].isascii():
        return "starts_with_non_ascii"
    return None


def _instance_text(inst: Instance) -> str:
    return f"Input: {inst.input}\nOutput: {inst.output}"


def filter_instances(instances: Sequence[Instance]) -> ParsedInstances:
    """Drop invalid and duplicate instances of one task.

    Order of checks: per instance ``input_equals_output``, ``empty_output``, ``ends_with_colon``;
    then, over the valid ones, if two share a non-empty input with different outputs the whole task
    is dropped (``same_input_different_output``); otherwise repeated instances are dropped
    (``duplicate``). Inputs and outputs are compared after stripping.

    Returns:
        A :class:`~selfinstruct_utils.parse.ParsedInstances`: kept instances in first-appearance
        order, one rejection per dropped instance.
    Source: paper Sec. 2.2; released ``prepare_for_finetuning.py``.
    """
    result = ParsedInstances()
    valid: list[Instance] = []
    for inst in instances:
        inp, out = inst.input.strip(), inst.output.strip()
        if inp == out:
            result.rejections.append(Rejection(_instance_text(inst), "input_equals_output"))
        elif out == "":
            result.rejections.append(Rejection(_instance_text(inst), "empty_output"))
        elif inp.endswith(":") or out.endswith(":"):
            result.rejections.append(Rejection(_instance_text(inst), "ends_with_colon"))
        else:
            valid.append(Instance(inp, out))
    outputs_by_input: dict[str, set[str]] = {}
    for inst in valid:
        if inst.input:
            outputs_by_input.setdefault(inst.input, set()).add(inst.output)
    if any(len(outs) > 1 for outs in outputs_by_input.values()):
        result.rejections.extend(Rejection(_instance_text(i), "same_input_different_output") for i in valid)
        return result
    seen: set[Instance] = set()
    for inst in valid:
        if inst in seen:
            result.rejections.append(Rejection(_instance_text(inst), "duplicate"))
        else:
            seen.add(inst)
            result.instances.append(inst)
    return result


def parse_and_filter_task(raw_text: str | None, is_classification: bool, finish_reason: str | None) -> ParsedInstances:
    """Parse one task's raw instance text (step 3's output) and apply the instance filters (no per-task cap).

    Returns:
        Kept instances and every rejection: the parser's (``no_instances_parsed``, ``truncated``) and the
        filters' (:func:`filter_instances`).
    """
    parsed = parse_instances(raw_text, is_classification, finish_reason)
    filtered = filter_instances(parsed.instances)
    return ParsedInstances(filtered.instances, parsed.rejections + filtered.rejections)


def sample_max_per_task(
    instances: Sequence[Instance], max_per_task: int, rng: random.Random
) -> tuple[list[Instance], list[Rejection]]:
    """Keep at most ``max_per_task`` instances, sampled with ``rng`` (paper: 5 per task).

    Returns:
        (kept instances in their original order, rejections ``over_max_per_task``).
    """
    if len(instances) <= max_per_task:
        return list(instances), []
    keep_idx = set(rng.sample(range(len(instances)), max_per_task))
    kept = [inst for k, inst in enumerate(instances) if k in keep_idx]
    dropped = [Rejection(_instance_text(inst), "over_max_per_task") for k, inst in enumerate(instances) if k not in keep_idx]
    return kept, dropped
