"""LM text -> records. These functions never raise on LM output: an LM that returns garbage is the
normal case. Each returns what it could parse and, for everything it dropped, a reason.

Rejection reasons are short snake_case strings, counted in every run's manifest.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from .records import Instance

__all__ = [
    "Rejection",
    "ParsedInstructions",
    "ParsedInstances",
    "parse_instructions",
    "parse_is_classification",
    "parse_input_output",
    "parse_generation_instances",
    "parse_classification_instances",
    "parse_instances",
    "parse_rating",
]


@dataclass(frozen=True)
class Rejection:
    """One dropped item and why (``reason``: a snake_case key, e.g. ``too_short``)."""

    text: str
    reason: str


@dataclass
class ParsedInstructions:
    """Instructions parsed from one instruction-generation completion."""

    instructions: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass
class ParsedInstances:
    """Instances of one task and one rejection per dropped item: what the parser read from a
    completion, and what the instance filters (:func:`~selfinstruct_utils.filters.filter_instances`) kept."""

    instances: list[Instance] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def reason_counts(self) -> Counter:
        return Counter(r.reason for r in self.rejections)


_NUMBERED = re.compile(r"\n\s*\d+\s?\.\s")
_WS = re.compile(r"\s+")


def parse_instructions(text: str | None, finish_reason: str | None = "stop") -> ParsedInstructions:
    """Split the continuation of an instruction-generation prompt into instructions.

    The prompt ends with the next number (e.g. ``"9."``), so the continuation reads
    ``" first new\\n10. second new\\n11. ..."``. Each piece is collapsed to one line.

    Args:
        text: the raw completion text (None or empty gives no instructions).
        finish_reason: the API's finish reason; with ``"length"`` the last piece is cut mid-way and is
            dropped (reason ``truncated``).
    Returns:
        Parsed instructions in order, and rejections (``empty``, ``truncated``).
    Source: paper Sec. 2.2; the released code drops the whole completion on "length", the paper
        and Alpaca drop only the last instruction, which is what this does.
    """
    out = ParsedInstructions()
    if not text or not isinstance(text, str):
        out.rejections.append(Rejection(str(text or ""), "empty_completion"))
        return out
    pieces = [_WS.sub(" ", p).strip() for p in _NUMBERED.split(text)]
    if finish_reason == "length" and pieces:
        last = pieces.pop()
        if last:
            out.rejections.append(Rejection(last, "truncated"))
    for piece in pieces:
        if not piece:
            continue
        # Upper-case the first letter only (the released code's str.capitalize() also lower-cases the
        # rest, turning "Python" into "python").
        out.instructions.append(piece[0].upper() + piece[1:])
    return out


_YES = {"yes", "y", "true"}
_NO = {"no", "n", "false"}


def parse_is_classification(text: str | bool | None) -> bool | None:
    """Read the answer to "Is it classification?" (paper Table 7): the one reader of such answers in the
    kit (steps 2-3, the dataset loader, the analyses).

    The first word decides, in any case and with any punctuation after it: yes / y / true -> True,
    no / n / false -> False (``" Yes."``, ``"NO"``, ``" no, it is not"``). A bool is returned as is.
    The released code instead reads ``answer.strip() in ("Yes", "yes", "YES")`` and takes anything
    else, " Yes." and " Maybe" included, as No.

    Args:
        text: the raw completion, e.g. ``" Yes"`` or ``" No\\n"``, or an already parsed bool.
    Returns:
        True, False, or None when the answer is neither (the caller counts it as ``unparseable``).
    """
    if isinstance(text, bool):
        return text
    if not text:
        return None
    match = re.match(r"\s*([A-Za-z]+)", text)
    if not match:
        return None
    word = match.group(1).lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    return None


_OUTPUT_TAG = re.compile(r"Output\s*\d*\s*:")
_INPUT_TAG = re.compile(r"Input\s*\d*\s*:")
_LEADING_INPUT_TAG = re.compile(r"^Input\s*\d*\s*:")
_EXAMPLE_TAG = re.compile(r"Example\s?\d*\.?")


def parse_input_output(text: str) -> tuple[str, str]:
    """Split one example into (input, output) at its first ``Output:`` tag.

    Without an ``Output:`` tag the whole text is the output and the input is empty. A second
    ``Input:`` inside the output (the LM went on with another example) cuts the output there; a
    leading ``Input:`` tag is removed from the input. Both parts are stripped.
    Source: the instance format of paper Table 8 (as parsed by the released code).
    """
    parts = _OUTPUT_TAG.split(text)
    if len(parts) > 1:
        inst_input, inst_output = parts[0].strip(), parts[1].strip()
    else:
        inst_input, inst_output = "", text.strip()
    inst_output = _INPUT_TAG.split(inst_output)[0].strip()
    inst_input = _LEADING_INPUT_TAG.sub("", inst_input).strip()
    return inst_input, inst_output


def parse_generation_instances(text: str | None, finish_reason: str | None = "stop") -> ParsedInstances:
    """Instances from an input-first completion (generation tasks, paper Table 8 top).

    ``Example N`` headers separate instances; without them a single ``Output:`` pair is read;
    with neither, nothing is parsed (reason ``no_instances_parsed``). With ``finish_reason ==
    "length"`` the last instance is dropped (``truncated``).
    """
    out = ParsedInstances()
    raw = (text or "").strip()
    if _EXAMPLE_TAG.search(raw):
        chunks = [c.strip() for c in _EXAMPLE_TAG.split(raw)]
        chunks = [c for c in chunks if c]
    elif _OUTPUT_TAG.search(raw):
        chunks = [raw]
    else:
        out.rejections.append(Rejection(raw, "no_instances_parsed"))
        return out
    if not chunks:
        out.rejections.append(Rejection(raw, "no_instances_parsed"))
        return out
    for chunk in chunks:
        inp, outp = parse_input_output(chunk)
        out.instances.append(Instance(inp, outp))
    if finish_reason == "length" and out.instances:
        last = out.instances.pop()
        out.rejections.append(Rejection(f"{last.input}\n{last.output}", "truncated"))
    return out


def parse_classification_instances(text: str | None, finish_reason: str | None = "stop") -> ParsedInstances:
    """Instances from an output-first completion (classification tasks, paper Table 8 bottom).

    Each ``Class label:`` starts an instance: the rest of its line is the label (the output), the
    following lines are the input (may be empty). With ``finish_reason == "length"`` the last
    instance is dropped (``truncated``).
    """
    out = ParsedInstances()
    raw = text or ""
    if "Class label:" not in raw:
        out.rejections.append(Rejection(raw.strip(), "no_instances_parsed"))
        return out
    for chunk in raw.split("Class label:")[1:]:
        label, _, rest = chunk.strip().partition("\n")
        out.instances.append(Instance(rest.strip(), label.strip()))
    if finish_reason == "length" and out.instances:
        last = out.instances.pop()
        out.rejections.append(Rejection(f"{last.output}\n{last.input}", "truncated"))
    return out


def parse_instances(text: str | None, is_classification: bool, finish_reason: str | None = "stop") -> ParsedInstances:
    """Output-first parsing for classification tasks, input-first parsing otherwise (paper Table 8).

    Args:
        text: the LM's completion (None reads as empty).
        is_classification: the task's step-2 label: :func:`parse_classification_instances` when True,
            else :func:`parse_generation_instances`.
        finish_reason: the completion's; "length" drops the last (cut) instance as ``truncated``.
    Returns:
        The :class:`ParsedInstances`: instances and one rejection per dropped item. Never raises on LM text.
    """
    if is_classification:
        return parse_classification_instances(text, finish_reason)
    return parse_generation_instances(text, finish_reason)


_GRADE = re.compile(r"(?<![A-Za-z])([ABCD])(?![A-Za-z])")


def parse_rating(text: str | None) -> str:
    """The grade A-D in an LM rater's answer, or "" when there is none.

    The first capital A, B, C or D standing alone decides ("B", "Rating: C.", "I'd give it a D"),
    except a capital "A" used as an article: followed by a space and a lower-case word ("A bit vague,
    so C" gives "C"). Lower-case letters never count.
    """
    for match in _GRADE.finditer(text or ""):
        rest = text[match.end():]
        if match.group(1) == "A" and re.match(r" +[a-z]", rest):
            continue
        return match.group(1)
    return ""
