"""Dataset statistics (paper Table 1) and length distributions (paper Figure 4). Lengths are in words
(whitespace-separated tokens)."""

from __future__ import annotations

import warnings

import pandas as pd

__all__ = ["word_count", "dataset_statistics", "length_table", "table1", "PAPER_TABLE1"]

#: The paper's Table 1 for its 52K-instruction GPT-3 dataset.
PAPER_TABLE1 = {
    "instructions": 52_445,
    "classification instructions": 11_584,
    "non-classification instructions": 40_861,
    "instances": 82_439,
    "instances with empty input": 35_878,
    "avg. instruction length (words)": 15.9,
    "avg. non-empty input length (words)": 12.7,
    "avg. output length (words)": 18.9,
}


def word_count(text) -> int:
    """Number of whitespace-separated words (0 for None)."""
    return len(text.split()) if isinstance(text, str) else 0


def dataset_statistics(df: pd.DataFrame) -> pd.Series:
    """Table 1 of the paper for any loaded dataset.

    Args:
        df: rows of :func:`~selfinstruct_utils.analysis.datasets.load_dataset` (one per instance).
    Returns:
        A Series (object dtype) with the keys of :data:`PAPER_TABLE1`: counts (ints) of distinct
        instructions (by exact text), classification / non-classification instructions ("n/a" when
        the data flags none of its instructions; unknown flags count in neither), instances (rows
        with an output), instances with an empty input, and mean lengths (floats) in words of
        instructions (distinct), non-empty inputs and outputs (NaN where nothing is counted); then
        ``instances with empty output`` (int; the paper does not report it). Instances with an empty
        output are counted as instances and their 0 words enter the mean output length, as the paper's
        definition does; when there are any, a warning says how many and ``attrs["notes"]`` holds it
        (:func:`table1` shows it under the table).
    Source: paper Table 1 (Sec. 3.1).
    """
    instr = df.drop_duplicates("instruction")
    clf = instr["is_classification"]
    flagged = clf.isin([True, False]).any()
    inst = df[df["output"].notna()]
    inputs = inst["input"].fillna("")
    non_empty = inputs[inputs.str.strip() != ""]
    empty_out = int((inst["output"].astype(str).str.strip() == "").sum())
    notes = []
    if empty_out:
        notes.append(f"{empty_out} of {len(inst)} instances have an empty output: counted as instances, and their "
                     "0 words enter the mean output length")
        warnings.warn(notes[-1], stacklevel=2)
    stats = pd.Series({
        "instructions": len(instr),
        "classification instructions": int((clf == True).sum()) if flagged else "n/a",  # noqa: E712 (True/False/None)
        "non-classification instructions": int((clf == False).sum()) if flagged else "n/a",  # noqa: E712
        "instances": len(inst),
        "instances with empty input": int((inputs.str.strip() == "").sum()),
        "avg. instruction length (words)": instr["instruction"].map(word_count).mean(),
        "avg. non-empty input length (words)": non_empty.map(word_count).mean() if len(non_empty) else float("nan"),
        "avg. output length (words)": inst["output"].map(word_count).mean() if len(inst) else float("nan"),
        "instances with empty output": empty_out,
    }, dtype=object)
    stats.attrs["notes"] = notes
    return stats


def table1(columns: dict[str, pd.Series]) -> pd.DataFrame:
    """Table 1 for display: one column per dataset (from :func:`dataset_statistics` or
    :data:`PAPER_TABLE1`), counts with thousands separators, means with one decimal, "n/a" kept (also
    where a column lacks a row). ``attrs["notes"]`` lists the columns' notes ("<name>: <note>"), e.g.
    instances with an empty output."""

    def fmt(value) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 100):
            return f"{int(value):,}"
        return "n/a" if pd.isna(value) else f"{value:.1f}"

    rows = list(dict.fromkeys(key for col in columns.values() for key in pd.Series(col).index))  # in order
    table = pd.DataFrame({name: pd.Series(col).map(fmt) for name, col in columns.items()}).reindex(rows).fillna("n/a")
    # what a column's statistics warned about (e.g. empty outputs), for the notes under the table
    table.attrs["notes"] = [f"{name}: {note}" for name, col in columns.items()
                            for note in getattr(col, "attrs", {}).get("notes", [])]
    return table


def length_table(df: pd.DataFrame) -> pd.DataFrame:
    """Long table of lengths in words for Figure 4: columns ``field`` (instruction / non-empty input /
    output) and ``words``; instructions are counted once each."""
    instr = df.drop_duplicates("instruction")["instruction"].map(word_count)
    inst = df[df["output"].notna()]
    inputs = inst["input"].fillna("")
    parts = [
        pd.DataFrame({"field": "instruction", "words": instr}),
        pd.DataFrame({"field": "non-empty input", "words": inputs[inputs.str.strip() != ""].map(word_count)}),
        pd.DataFrame({"field": "output", "words": inst["output"].map(word_count)}),
    ]
    return pd.concat(parts, ignore_index=True)
