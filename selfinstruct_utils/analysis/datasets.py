"""Load any instruction dataset the kit knows into one table (a pandas DataFrame).

Columns: ``instruction``, ``input``, ``output`` (None where a file holds only instructions),
``is_classification`` (True/False/None when unknown), and ``source``. One row per instance; an
instruction without instances is one row with input and output None.

Understood sources (:func:`load_dataset`):

- a run directory of this kit (its finetuning data, else its instructions), and a folder written by
  the original code (its raw step-3 file parsed, with the flags of its ``is_clf_or_not*.jsonl``);
- the original repository's files: ``machine_generated_instructions.jsonl``,
  ``machine_generated_instances.jsonl`` (raw LM text is parsed; classification flags are read from an
  ``is_clf_or_not*.jsonl`` file beside it), ``all_generated_instances.jsonl``,
  prompt/completion finetuning files (``gpt3_finetuning_data_*.jsonl``), ``seed_tasks.jsonl`` and
  ``user_oriented_instructions.jsonl`` (``instances`` lists);
- Alpaca-style JSON lists with ``instruction``, ``input`` and ``output`` or ``response``;
- a DataFrame with at least an ``instruction`` column.

Errors name the file, the line (or record) and the field (:class:`~selfinstruct_utils.records.DataFormatError`).
What a loader leaves out is reported like the pipeline's parsers do: ``df.attrs["rejections"]`` counts
it by reason (``no_instances_parsed``, ``truncated``, ``empty_output``, ``bad_record``...), and a warning
says so when most tasks of a raw step-3 file yield no instance at all.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter
from pathlib import Path

import pandas as pd

from ..filters import parse_and_filter_task
from ..parse import parse_is_classification
from ..records import DataFormatError, read_jsonl
from ..templates import TEMPLATES_WITH_INPUT, TEMPLATES_WITHOUT_INPUT

__all__ = ["COLUMNS", "load_dataset", "decode_prompt_completion", "original_step3_records"]

COLUMNS = ["instruction", "input", "output", "is_classification", "source"]


def _str_field(obj: dict, key: str, path: Path, line: int, *, required: bool = True) -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            raise DataFormatError(path, line, key, "missing")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise DataFormatError(path, line, key, f"expected str, found {type(value).__name__}")
    return value


def _clf_value(value) -> bool | None:
    return parse_is_classification(value) if isinstance(value, bool | str) else None


def _rows_from_record(obj: dict, path: Path, line: int, flags: dict[str, bool] | None = None,
                      rejections: Counter | None = None) -> list[dict]:
    """Rows of one JSON record in any of the understood schemas (``flags``: instruction ->
    is_classification, from a sibling ``is_clf_or_not*.jsonl`` file; ``rejections`` counts what the
    raw-text parser and the instance filters left out)."""
    if "prompt" in obj and "completion" in obj and "instruction" not in obj:
        prompt = _str_field(obj, "prompt", path, line)
        completion = _str_field(obj, "completion", path, line)
        instruction, inp, out = decode_prompt_completion(prompt, completion)
        return [{"instruction": instruction, "input": inp, "output": out, "is_classification": None}]
    instruction = _str_field(obj, "instruction", path, line)
    if not instruction.strip():
        raise DataFormatError(path, line, "instruction", "is empty")
    clf = _clf_value(obj.get("is_classification"))
    if clf is None and flags:
        clf = flags.get(instruction)
    if "instances" in obj:
        instances = obj["instances"]
        if not isinstance(instances, list):
            raise DataFormatError(path, line, "instances", f"expected a list, found {type(instances).__name__}")
        rows = []
        for k, inst in enumerate(instances):
            if not isinstance(inst, dict):
                raise DataFormatError(path, line, f"instances[{k}]", "expected an object")
            rows.append({
                "instruction": instruction,
                "input": _str_field(inst, "input", path, line, required=False) or "",
                "output": _str_field(inst, "output", path, line),
                "is_classification": clf,
            })
        return rows or [{"instruction": instruction, "input": None, "output": None, "is_classification": clf}]
    if "raw_instances" in obj:  # the original step 3 file: parse the raw LM text
        raw = _str_field(obj, "raw_instances", path, line)
        meta = obj.get("instance_metadata") or {}
        try:
            finish = meta["response"]["choices"][0]["finish_reason"]
        except (KeyError, IndexError, TypeError):
            finish = obj.get("finish_reason")
        parsed = parse_and_filter_task(raw, bool(clf), finish)
        if rejections is not None:
            rejections.update(parsed.reason_counts())
            rejections["raw_tasks"] += 1
            rejections["raw_tasks_without_instances"] += not parsed.instances
        rows = [{"instruction": instruction, "input": i.input, "output": i.output, "is_classification": clf}
                for i in parsed.instances]
        return rows or [{"instruction": instruction, "input": None, "output": None, "is_classification": clf}]
    output_key = "output" if "output" in obj else "response" if "response" in obj else None
    inp = _str_field(obj, "input", path, line, required=False)
    out = _str_field(obj, output_key, path, line) if output_key else None
    if out is not None and inp is None:
        inp = ""
    return [{"instruction": instruction, "input": inp, "output": out, "is_classification": clf}]


def _templates_as_patterns():
    patterns = []
    # most literal text first: "Task: {instruction}\n\n{input}\n\n" before "{instruction}\n\n{input}\n\n"
    templates = sorted(TEMPLATES_WITH_INPUT + TEMPLATES_WITHOUT_INPUT,
                       key=lambda t: -len(t[0].replace("{instruction}", "").replace("{input}", "")))
    for prompt_t, completion_t in templates:
        regex = re.escape(prompt_t).replace(r"\{instruction\}", "(?P<instruction>.+?)").replace(r"\{input\}", "(?P<input>.+?)")
        patterns.append((re.compile("^" + regex + "$", re.DOTALL), completion_t.startswith(" ")))
    return patterns


_PATTERNS = None


def decode_prompt_completion(prompt: str, completion: str, eos: str = "<|endoftext|>") -> tuple[str, str, str]:
    """Recover (instruction, input, output) from the paper's prompt/completion encoding.

    The templates of :mod:`selfinstruct_utils.finetune` are tried, those with the most literal text first;
    an encoding without "Input:" is ambiguous between "instruction\\n\\ninput\\n\\n" and a multi-line
    instruction, and is read as instruction + input at the first blank line. A prompt that matches no
    template is returned whole as the instruction.
    """
    global _PATTERNS
    if _PATTERNS is None:
        _PATTERNS = _templates_as_patterns()
    output = completion[: -len(eos)] if eos and completion.endswith(eos) else completion
    output = output.strip()
    for pattern, _ in _PATTERNS:
        m = pattern.match(prompt)
        if m:
            groups = m.groupdict()
            return groups["instruction"].strip(), (groups.get("input") or "").strip(), output
    return prompt.strip(), "", output


def _sibling_flags(path: Path) -> dict[str, bool]:
    """is_classification flags from ``is_clf_or_not*.jsonl`` files beside ``path`` (the original code's
    step-2 output, which its step-3 file does not repeat)."""
    flags: dict[str, bool] = {}
    for f in sorted(path.parent.glob("is_clf_or_not*.jsonl")):
        for _, o in read_jsonl(f, tolerate_partial_last_line=True):
            value = _clf_value(o.get("is_classification"))
            if isinstance(o.get("instruction"), str) and value is not None:
                flags[o["instruction"]] = value
    return flags


def _load_file(path: Path, rejections: Counter, skipped: list[DataFormatError] | None = None) -> list[dict]:
    """Rows of a file; with ``skipped`` given, a record with a bad field is skipped and its error kept
    there instead of raised (unreadable files and bad JSON still raise)."""
    rows: list[dict] = []
    flags = _sibling_flags(path)

    def add(obj: dict, line: int) -> None:
        try:
            rows.extend(_rows_from_record(obj, path, line, flags, rejections))
        except DataFormatError as err:
            if skipped is None:
                raise
            skipped.append(err)
            rejections["bad_record"] += 1

    head = path.read_bytes()[:64].removeprefix(b"\xef\xbb\xbf").lstrip()[:1]
    if path.suffix == ".json" or head == b"[":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))  # a UTF-8 byte-order mark is accepted
        except UnicodeDecodeError as err:
            raise DataFormatError(path, None, None, f"not valid UTF-8 ({err.reason})") from None
        except json.JSONDecodeError as err:
            raise DataFormatError(path, err.lineno, None, f"invalid JSON ({err.msg})") from None
        except ValueError as err:  # e.g. an integer of more than 4,300 digits
            raise DataFormatError(path, None, None, f"a value Python cannot read ({str(err)[:120]})") from None
        except RecursionError:
            raise DataFormatError(path, None, None, "JSON nested too deeply to read") from None
        if not isinstance(data, list):
            raise DataFormatError(path, None, None, f"expected a JSON list of records, found {type(data).__name__}")
        for k, obj in enumerate(data, start=1):
            if not isinstance(obj, dict):
                raise DataFormatError(path, k, None, "expected an object (record number given as line)")
            add(obj, k)
    else:
        for line, obj in read_jsonl(path):
            add(obj, line)
    if not rows:
        raise DataFormatError(path, None, None, "holds no records")
    return rows


def _is_kit_run(path: Path) -> bool:
    return any((path / name).exists() for name in ("manifest.json", "instruction_requests.jsonl", "is_clf_or_not.jsonl"))


def _load_original_run(path: Path, rejections: Counter) -> list[dict]:
    """A folder written by the original code: its raw step-3 file parsed (flags from its
    ``is_clf_or_not*.jsonl``), plus instructions that never reached step 3."""
    instances = path / "machine_generated_instances.jsonl"
    instructions = path / "machine_generated_instructions.jsonl"
    rows = _load_file(instances, rejections) if instances.is_file() else []
    seen = {r["instruction"] for r in rows}
    flags = _sibling_flags(instructions)
    if instructions.is_file():
        for _, o in read_jsonl(instructions, tolerate_partial_last_line=True):
            if isinstance(o.get("instruction"), str) and o["instruction"] not in seen:
                rows.append({"instruction": o["instruction"], "input": None, "output": None,
                             "is_classification": flags.get(o["instruction"])})
                seen.add(o["instruction"])
    return rows


def _load_run(path: Path, rejections: Counter) -> list[dict]:
    if not _is_kit_run(path):
        if (path / "machine_generated_instances.jsonl").is_file() or (path / "machine_generated_instructions.jsonl").is_file():
            return _load_original_run(path, rejections)
        raise DataFormatError(path, None, None, "is neither a run directory of the kit nor one of the original "
                              "code (no manifest.json, machine_generated_instructions.jsonl or machine_generated_instances.jsonl)")
    clf = {}
    clf_file = path / "is_clf_or_not.jsonl"
    if clf_file.is_file():
        for line, o in read_jsonl(clf_file, tolerate_partial_last_line=True):
            value = o.get("is_classification")
            if not isinstance(value, bool | str):
                raise DataFormatError(clf_file, line, "is_classification",
                                      "missing" if value is None else f"expected str or bool, found {type(value).__name__}")
            clf[_str_field(o, "instruction", clf_file, line)] = parse_is_classification(value)
    instances = path / "finetuning" / "all_generated_instances.jsonl"
    instructions = path / "machine_generated_instructions.jsonl"

    def run_instructions() -> list[str]:
        return [_str_field(o, "instruction", instructions, line)
                for line, o in read_jsonl(instructions, tolerate_partial_last_line=True)]

    if instances.is_file():
        rows = _load_file(instances, rejections)
        seen = {r["instruction"] for r in rows}
        if instructions.is_file():  # instructions whose instances were all filtered out still count
            for instruction in run_instructions():
                if instruction not in seen:
                    rows.append({"instruction": instruction, "input": None, "output": None})
                    seen.add(instruction)
    elif instructions.is_file():
        rows = [{"instruction": i, "input": None, "output": None} for i in run_instructions()]
    else:
        raise DataFormatError(path, None, None, "is a run directory of the kit without instructions yet "
                              "(no machine_generated_instructions.jsonl)")
    for r in rows:
        r["is_classification"] = clf.get(r["instruction"])
    return rows


def load_dataset(
    source: str | os.PathLike | pd.DataFrame, *, name: str | None = None, errors: str = "raise"
) -> pd.DataFrame:
    """Load an instruction dataset (see the module docstring for the formats).

    Args:
        source: a file, a run directory, or a DataFrame with an ``instruction`` column.
        name: value of the ``source`` column (default: the file or folder name).
        errors: "raise" (default) stops at the first record with a bad field; "skip" leaves such
            records out and warns once with their count and the first error (a file that is not valid
            JSON or UTF-8 still raises).
    Returns:
        A DataFrame with columns :data:`COLUMNS`, one row per instance; ``df.attrs["rejections"]``
        counts what was left out, by reason (empty when nothing was).
    Raises:
        DataFormatError: unreadable or malformed data; names file, line and field.
        FileNotFoundError: the path does not exist.
    """
    if isinstance(source, pd.DataFrame):
        if "instruction" not in source.columns:
            raise DataFormatError("<DataFrame>", None, "instruction", "missing column")
        df = source.copy()
        if "output" not in df.columns and "response" in df.columns:
            df = df.rename(columns={"response": "output"})
        for col in ("input", "output", "is_classification"):
            if col not in df.columns:
                df[col] = None
        df["source"] = name or "dataframe"
        df = df[COLUMNS].reset_index(drop=True)
        df.attrs["rejections"] = {}
        return df
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
    skipped: list[DataFormatError] | None = [] if errors == "skip" else None
    rejections: Counter = Counter()
    rows = _load_run(path, rejections) if path.is_dir() else _load_file(path, rejections, skipped)
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} record(s) with a bad field; the first: {skipped[0]}", stacklevel=2)
    empty = rejections.pop("raw_tasks_without_instances", 0)
    n_raw = rejections.pop("raw_tasks", 0)
    if empty:
        rejections["tasks_without_instances"] = empty
    if empty * 2 > n_raw:  # most tasks unreadable: say so, not only in df.attrs
        reasons = ", ".join(f"{k}={v}" for k, v in rejections.most_common() if k != "tasks_without_instances")
        warnings.warn(f"{path}: {empty} of {n_raw} tasks gave no instance from their raw text ({reasons}); "
                      "was it made with another prompt format?", stacklevel=2)
    df = pd.DataFrame(rows)
    for col in COLUMNS[:-1]:
        if col not in df.columns:
            df[col] = None
    df["is_classification"] = df["is_classification"].astype(object)
    df["source"] = name or path.name
    df = df[COLUMNS]
    df.attrs["rejections"] = dict(rejections)
    return df


def original_step3_records(folder: str | os.PathLike) -> list[dict]:
    """The original code's step-3 file of a run folder as the kit's step-3 records.

    Args:
        folder: a folder written by the original code, with ``machine_generated_instances.jsonl`` and an
            ``is_clf_or_not*.jsonl`` (read with the kit's one yes/no reader).
    Returns:
        One dict per task: ``instruction``, ``is_classification`` (bool; unreadable answers count as
        False, as step 2 does), ``raw_instances`` and ``finish_reason`` (from the recorded response).
    Raises:
        DataFormatError: a missing file or field (file, line and field named).
    """
    folder = Path(folder)
    path = folder / "machine_generated_instances.jsonl"
    if not path.is_file():
        raise DataFormatError(path, None, None, "missing: not a folder written by the original code")
    flags = _sibling_flags(path)
    out = []
    for line, o in read_jsonl(path):
        instruction = _str_field(o, "instruction", path, line)
        meta = o.get("instance_metadata") or {}
        try:
            finish = meta["response"]["choices"][0]["finish_reason"]
        except (KeyError, IndexError, TypeError):
            finish = o.get("finish_reason")
        out.append({"instruction": instruction, "is_classification": bool(flags.get(instruction)),
                    "raw_instances": _str_field(o, "raw_instances", path, line), "finish_reason": finish})
    return out
