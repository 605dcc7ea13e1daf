"""Dataset statistics (paper Table 1) and length distributions (paper Figure 4). Lengths are in words
(whitespace-separated tokens)."""

from __future__ import annotations

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
        instructions (distinct), non-empty inputs and outputs (NaN where nothing is counted).
    Source: paper Table 1 (Sec. 3.1).
    """
    instr = df.drop_duplicates("instruction")
    clf = instr["is_classification"]
    flagged = clf.isin([True, False]).any()
    inst = df[df["output"].notna()]
    inputs = inst["input"].fillna("")
    non_empty = inputs[inputs.str.strip() != ""]
    return pd.Series({
        "instructions": len(instr),
        "classification instructions": int((clf == True).sum()) if flagged else "n/a",  # noqa: E712 (True/False/None)
        "non-classification instructions": int((clf == False).sum()) if flagged else "n/a",  # noqa: E712
        "instances": len(inst),
        "instances with empty input": int((inputs.str.strip() == "").sum()),
        "avg. instruction length (words)": instr["instruction"].map(word_count).mean(),
        "avg. non-empty input length (words)": non_empty.map(word_count).mean() if len(non_empty) else float("nan"),
        "avg. output length (words)": inst["output"].map(word_count).mean() if len(inst) else float("nan"),
    }, dtype=object)


def table1(columns: dict[str, pd.Series]) -> pd.DataFrame:
    """Table 1 for display: one column per dataset (from :func:`dataset_statistics` or
    :data:`PAPER_TABLE1`), counts with thousands separators, means with one decimal, "n/a" kept."""

    def fmt(value) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 100):
            return f"{int(value):,}"
        return "n/a" if pd.isna(value) else f"{value:.1f}"

    return pd.DataFrame({name: pd.Series(col).map(fmt) for name, col in columns.items()})


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
