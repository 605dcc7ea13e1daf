"""ROUGE-L overlap analyses: generated instructions vs. seeds (paper Figure 3) and seed tasks vs.
test sets (paper Figure 8). All scores come from :mod:`selfinstruct_utils.rouge`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..records import DataFormatError
from ..rouge import RougeIndex

__all__ = ["similarity_to_seeds", "seed_vs_test_overlap", "load_superni_test_tasks"]


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


def load_superni_test_tasks(checkout: str | os.PathLike) -> pd.DataFrame:
    """The SuperNI (natural-instructions) test tasks' definitions from a local checkout.

    Args:
        checkout: root of a clone of github.com/allenai/natural-instructions, with
            ``splits/default/test_tasks.txt`` (one task name per line) and ``tasks/<task>.json``.
    Returns:
        Columns ``task`` and ``instruction`` (the task's ``Definition``; a list is joined with spaces),
        in the order of ``test_tasks.txt`` (119 tasks for the paper's split).
    Raises:
        DataFormatError: a missing split file or task file, or a task without a ``Definition``.
    """
    root = Path(checkout)
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
        rows.append({"task": name, "instruction": definition.strip()})
    return pd.DataFrame(rows, columns=["task", "instruction"])
