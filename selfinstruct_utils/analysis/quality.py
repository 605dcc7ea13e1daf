"""Quality review of generated data (paper Sec. 3.3, Table 2).

A rater answers four yes/no questions about sampled instructions, each shown with one random instance.
The sheet is a CSV file (one row per item), so raters can work in JupyterLab
(:class:`selfinstruct_utils.widgets.ReviewAnnotator`) or in any spreadsheet; both read and write the
same file. :func:`quality_table` turns completed sheets into Table 2 with 95% Wilson intervals.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from ..records import atomic_open

__all__ = ["QUESTIONS", "ANSWERS", "PAPER_TABLE2", "sample_for_review", "rater_file_name", "save_sheet", "load_sheet", "open_review_sheet",
           "review_shortfall", "load_review_sheets", "quality_table"]

#: The three questions a rater answers per item (paper Table 2, in our words); "all fields valid" is
#: derived from them.
QUESTIONS: dict[str, str] = {
    "valid_task": "Does the instruction describe a valid task that a person could carry out?",
    "input_appropriate": "Is the input appropriate for the instruction (or rightly empty)?",
    "output_correct": "Is the output a correct and acceptable response to the instruction and input?",
}
ANSWERS = ("yes", "no")
#: The paper's Table 2 (200 instructions of its GPT-3 data), percent "yes".
PAPER_TABLE2 = {"valid_task": 92.0, "input_appropriate": 79.0, "output_correct": 58.0, "all_fields_valid": 54.0}

_SHEET_COLUMNS = ["item", "seed", "instruction", "input", "output", *QUESTIONS, "rater", "note"]


def sample_for_review(df: pd.DataFrame, n: int = 200, *, seed: int = 0) -> pd.DataFrame:
    """A review sheet: ``n`` distinct instructions, each with one of its instances, drawn with ``seed``.

    Args:
        df: a dataset from :func:`~selfinstruct_utils.analysis.datasets.load_dataset` (rows without an
            output are skipped).
        n: instructions to sample (all of them when there are fewer).
        seed: random seed; the same seed on the same data gives the same sheet.
    Returns:
        A sheet with columns ``item``, ``seed``, ``instruction``, ``input``, ``output``, one empty
        answer column per question, ``rater`` and ``note``.
    Source: paper Sec. 3.3 ("we randomly sample 200 instructions and randomly select 1 instance per
        instruction").
    """
    rng = np.random.default_rng(seed)
    usable = df[df["output"].notna()].reset_index(drop=True)
    groups = list(usable.groupby("instruction", sort=True).indices.items())
    picks = rng.choice(len(groups), size=min(n, len(groups)), replace=False) if groups else []
    rows = []
    for item, g in enumerate(picks):
        instruction, idx = groups[int(g)]
        row = usable.iloc[int(rng.choice(idx))]
        rows.append({"item": item, "seed": seed, "instruction": instruction, "input": row["input"] or "",
                     "output": row["output"]})
    sheet = pd.DataFrame(rows, columns=["item", "seed", "instruction", "input", "output"])
    for q in QUESTIONS:
        sheet[q] = ""
    sheet["rater"] = ""
    sheet["note"] = ""
    return sheet[_SHEET_COLUMNS]


def rater_file_name(rater: str) -> str:
    """A file-name-safe form of a rater's name (letters, digits, ``-``, ``_``, ``.``), for the review
    sheets here and the rating sheets of :mod:`~selfinstruct_utils.analysis.human_eval`.

    Raises:
        ValueError: the name has no letter or digit left.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", rater.strip())
    if not name.strip("._"):
        raise ValueError(f"rater name {rater!r} gives no usable file name")
    return name


def save_sheet(sheet: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a sheet as CSV (UTF-8), atomically, so an interrupted save never loses answers."""
    path = Path(path)
    with atomic_open(path) as fh:
        sheet.to_csv(fh, index=False)
    return path


def load_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """Read a sheet written by :func:`save_sheet` or edited in a spreadsheet.

    Answers are normalized to "yes", "no" or "" (unanswered); "y"/"n", "1"/"0", "true"/"false" are
    accepted.

    Raises:
        ValueError: a missing column, or an answer that is none of those (names the row and column).
    """
    path = Path(path)
    sheet = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ["item", *QUESTIONS] if c not in sheet.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    mapping = {"yes": "yes", "y": "yes", "1": "yes", "true": "yes", "no": "no", "n": "no", "0": "no", "false": "no", "": ""}
    for q in QUESTIONS:
        norm = sheet[q].str.strip().str.lower()
        bad = ~norm.isin(list(mapping))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}:{k + 2}: column '{q}': answer {sheet[q].iloc[k]!r} is not yes or no")
        sheet[q] = norm.map(mapping)
    sheet["item"] = sheet["item"].astype(int)
    return sheet


def open_review_sheet(df: pd.DataFrame, folder: str | os.PathLike, rater: str, *, n: int = 200, seed: int = 0) -> Path:
    """This rater's sheet ``review_<rater>.csv`` in ``folder``: created (from :func:`sample_for_review`)
    only when it does not exist, so an existing sheet and its answers are never rewritten. Raters of
    the same folder get the same items (same data, ``n`` and ``seed``).

    Returns:
        The sheet's path.
    """
    path = Path(folder) / f"review_{rater_file_name(rater)}.csv"
    if not path.exists():
        sheet = sample_for_review(df, n, seed=seed)
        sheet["rater"] = rater
        save_sheet(sheet, path)
    return path


def review_shortfall(path: str | os.PathLike, asked: int, df: pd.DataFrame | None = None) -> str | None:
    """One line when the sheet at ``path`` holds fewer items than ``asked`` (None when it holds them all):
    how many it holds and why (the dataset has no more distinct instructions with an output)."""
    have = len(pd.read_csv(path, dtype=str, keep_default_na=False))
    if have >= asked:
        return None
    why = ""
    if df is not None:
        distinct = int(df[df["output"].notna()]["instruction"].nunique())
        why = f": the dataset has {distinct} distinct instructions with an output"
    return f"NOTE: the sheet holds {have} items, not the {asked} asked{why} (the sample takes one item per instruction)"


def load_review_sheets(folder: str | os.PathLike) -> list[pd.DataFrame]:
    """Every rater's sheet (``review_*.csv``) of a folder, in file-name order (see :func:`load_sheet`)."""
    return [load_sheet(p) for p in sorted(Path(folder).glob("review_*.csv"))]


def quality_table(*sheets: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Table 2 from one or more completed sheets (answers pooled over raters).

    Returns:
        One row per question plus ``all_fields_valid`` (items where a rater said yes to all three):
        columns ``question``, ``yes``, ``answered``, ``percent_yes``, ``ci_low``, ``ci_high`` (Wilson
        interval at ``confidence``, in percent), and ``paper`` (the paper's percentage).
        Unanswered cells are left out of the counts.
    Source: paper Table 2; Wilson (1927) score interval via ``scipy.stats.binomtest``.
    """
    data = pd.concat(sheets, ignore_index=True)
    rows = []

    def row(name: str, yes: int, answered: int) -> dict:
        if answered:
            ci = binomtest(yes, answered).proportion_ci(confidence_level=confidence, method="wilson")
            low, high = 100 * ci.low, 100 * ci.high
        else:
            low = high = float("nan")
        return {"question": name, "yes": yes, "answered": answered,
                "percent_yes": 100 * yes / answered if answered else float("nan"),
                "ci_low": low, "ci_high": high, "paper": PAPER_TABLE2[name]}

    for q in QUESTIONS:
        answered = data[q].isin(ANSWERS)
        rows.append(row(q, int((data[q] == "yes").sum()), int(answered.sum())))
    complete = data[list(QUESTIONS)].isin(ANSWERS).all(axis=1)
    all_yes = (data.loc[complete, list(QUESTIONS)] == "yes").all(axis=1)
    rows.append(row("all_fields_valid", int(all_yes.sum()), int(complete.sum())))
    return pd.DataFrame(rows)
