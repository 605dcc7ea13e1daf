"""ROUGE-L overlap analyses: generated instructions vs. seeds (paper Figure 3) and seed tasks vs.
test sets (paper Figure 8). All scores come from :mod:`selfinstruct_utils.rouge`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..records import DataFormatError, read_jsonl
from ..rouge import RougeIndex

__all__ = ["similarity_to_seeds", "seed_vs_test_overlap", "load_superni_test_tasks", "superni_definition",
           "read_superni_jsonl"]


def similarity_to_seeds(instructions: Sequence[str], seed_instructions: Sequence[str]) -> pd.DataFrame:
    """For each instruction, its most similar seed instruction and their ROUGE-L F1 (Figure 3).

    Returns:
        Columns ``instruction``, ``most_similar_seed``, ``rougeL`` (one row per instruction, in order).
    Source: paper Sec. 3.2, Figure 3.
    """
    instructions = list(instructions)
    best = RougeIndex(seed_instructions).top_k(instructions, k=1)
    return pd.DataFrame({
        "instruction": instructions,
        "most_similar_seed": [nb[0][0] if nb else None for nb, _ in best],
        "rougeL": [nb[0][1] if nb else 0.0 for nb, _ in best],
    })


def seed_vs_test_overlap(seed_instructions: Sequence[str], test_instructions: Sequence[str]) -> pd.DataFrame:
    """For each seed instruction, the most similar test instruction and their ROUGE-L F1 (Figure 8).

    Returns:
        Columns ``seed``, ``most_similar_test``, ``rougeL``. The paper reports a mean of 0.34 against
        the 252 user-oriented instructions (one seed identical to a test instruction) and 0.21 against
        the 119 SuperNI test tasks.
    Source: paper Appendix A.1, Figure 8.
    """
    out = similarity_to_seeds(seed_instructions, test_instructions)
    return out.rename(columns={"instruction": "seed", "most_similar_seed": "most_similar_test"})


_DEFINITION_ENDS = ("Now complete the following example", "Positive Example", "Negative Example", "Input:")


def superni_definition(prompt: str) -> str:
    """The task definition inside a SuperNI prompt: the text after a leading ``Definition:`` up to the
    first example or input marker (``Now complete the following example``, ``Positive Example``,
    ``Negative Example``, ``Input:``), else up to the first blank line; whitespace stripped."""
    text = prompt.strip()
    if text.startswith("Definition:"):
        text = text[len("Definition:"):]
    cut = min((k for k in (text.find(end) for end in _DEFINITION_ENDS) if k >= 0), default=-1)
    if cut < 0:  # no marker: the definition is the first paragraph
        cut = text.find("\n\n") if "\n\n" in text else len(text)
    return text[:cut].strip()


def load_superni_test_tasks(source: str | os.PathLike) -> pd.DataFrame:
    """The SuperNI (natural-instructions) test tasks' definitions (paper Sec. 4.3: 119 tasks).

    Args:
        source: either the original repository's ``superni_test_set.jsonl`` (what ``selfinstruct download
            --what superni`` fetches: one ``prompt``/``completion`` line per instance, the definition
            inside the prompt, see :func:`superni_definition`), or the root of a clone of
            github.com/allenai/natural-instructions with ``splits/default/test_tasks.txt`` (one task name
            per line) and ``tasks/<task>.json``.
    Returns:
        Columns ``task`` (the task name; ``task_<k>`` numbered in order of first appearance for the
        JSONL file, which does not name tasks), ``instruction`` (the definition; a list is joined with
        spaces) and ``instances`` (instances of that definition in the JSONL file; None for a checkout).
        One row per distinct definition, in order.
    Raises:
        DataFormatError: a missing split or task file, a task without a ``Definition``; for the JSONL
            file, what :func:`read_superni_jsonl` raises (file, line and field named).
    """
    root = Path(source)
    if root.is_file():
        return _superni_from_jsonl(root)
    split = root / "splits" / "default" / "test_tasks.txt"
    if not split.is_file():
        raise DataFormatError(split, None, None, "missing: is this a natural-instructions checkout?")
    rows = []
    for number, name in enumerate(split.read_text(encoding="utf-8").splitlines(), start=1):
        name = name.strip()
        if not name:
            continue
        task_file = root / "tasks" / f"{name}.json"
        if not task_file.is_file():
            raise DataFormatError(split, number, None, f"task file {task_file} does not exist")
        try:
            task = json.loads(task_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataFormatError(task_file, err.lineno, None, f"invalid JSON ({err.msg})") from None
        definition = task.get("Definition") if isinstance(task, dict) else None
        if isinstance(definition, list):
            definition = " ".join(d for d in definition if isinstance(d, str))
        if not isinstance(definition, str) or not definition.strip():
            raise DataFormatError(task_file, None, "Definition", "missing or empty")
        rows.append({"task": name, "instruction": definition.strip(), "instances": None})
    return pd.DataFrame(rows, columns=["task", "instruction", "instances"])


def read_superni_jsonl(path: str | os.PathLike) -> pd.DataFrame:
    """The one reader of the SuperNI test file (``superni_test_set.jsonl``, what ``selfinstruct download
    --what superni`` fetches): one row per line, each filed under its task.

    The file does not name tasks; an instance's task is its definition (:func:`superni_definition` of
    its prompt), numbered ``task_<k>`` in order of first appearance. A prompt holding no definition is an
    error, not a task of its own: both the Figure 8 overlap (:func:`load_superni_test_tasks`) and the
    Table 3 evaluation (:func:`selfinstruct_utils.evaluate.superni_examples`) read the file through here.

    Args:
        path: the JSONL file: one ``{"prompt": ..., "completion": ...}`` object per line, the definition,
            examples and input inside the prompt, the reference output (ending in ``<|endoftext|>``) as
            the completion.
    Returns:
        Columns ``task``, ``definition``, ``prompt``, ``target`` (the completion without the end-of-text
        marker, whitespace stripped) and ``line`` (1-based), in file order.
    Raises:
        DataFormatError: a line without a string ``prompt`` or ``completion``, a prompt with no definition,
            or a file without records (file, line and field named).
        FileNotFoundError: no such file.
    """
    path = Path(path)
    numbers: dict[str, int] = {}
    rows = []
    for line, obj in read_jsonl(path):
        for key in ("prompt", "completion"):
            if not isinstance(obj.get(key), str):
                raise DataFormatError(path, line, key, "missing or not a string")
        definition = superni_definition(obj["prompt"])
        if not definition:
            raise DataFormatError(path, line, "prompt", "holds no task definition")
        k = numbers.setdefault(definition, len(numbers) + 1)
        rows.append({"task": f"task_{k}", "definition": definition, "prompt": obj["prompt"],
                     "target": obj["completion"].replace("<|endoftext|>", "").strip(), "line": line})
    if not rows:
        raise DataFormatError(path, None, None, "holds no records")
    return pd.DataFrame(rows, columns=["task", "definition", "prompt", "target", "line"])


def _superni_from_jsonl(path: Path) -> pd.DataFrame:
    df = read_superni_jsonl(path)
    counts = df.groupby("task", sort=False).agg(instruction=("definition", "first"), instances=("line", "size"))
    return counts.reset_index()[["task", "instruction", "instances"]]
