"""Human evaluation on the 252 user-oriented instructions (paper Sec. 4.4, Figure 6, Appendix B).

- :func:`load_predictions` reads the eight models' published responses.
- :func:`rating_sheet` builds a blind sheet: per task, the responses in random order, model names kept
  in a separate key file (Appendix B.1); raters grade each response A-D (:data:`SCALE`).
- :func:`ratings_by_model` and :func:`agreement` turn completed sheets into Figure 6 and the agreement
  statistics (Cohen's kappa on four levels and on acceptable vs. not; Spearman's rho).
- :func:`rouge_by_model` and :func:`lm_rate` give automatic views, clearly labelled as automatic.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from ..records import DataFormatError, read_jsonl

__all__ = [
    "SCALE",
    "ACCEPTABLE",
    "PAPER_AGREEMENT",
    "load_predictions",
    "rating_sheet",
    "save_rating_sheet",
    "load_ratings",
    "ratings_by_model",
    "agreement",
    "rouge_by_model",
    "lm_rate",
]

#: The four-level scale (paper Sec. 4.4, in our words).
SCALE: dict[str, str] = {
    "A": "Correct and satisfying: the response fully does what the instruction asks.",
    "B": "Acceptable with minor flaws: small errors or imperfections a user could easily fix.",
    "C": "Relevant but with significant errors: it responds to the instruction but its content is wrong or incomplete.",
    "D": "Invalid: irrelevant, or not an attempt at the task.",
}
#: Ratings that count as acceptable in the binary agreement (the paper's A/B vs. C/D).
ACCEPTABLE = ("A", "B")
#: The paper's agreement between two raters.
PAPER_AGREEMENT = {"kappa_4_levels": 0.58, "kappa_acceptable": 0.75, "spearman_rho": 0.81}


def load_predictions(folder: str | os.PathLike, tasks_path: str | os.PathLike | None = None) -> pd.DataFrame:
    """All ``<model>_predictions.jsonl`` files of a folder, in one long table.

    Args:
        folder: the predictions folder (e.g. :func:`selfinstruct_utils.data.predictions_dir`).
        tasks_path: the user-oriented task file, to attach task ids (files are in its order).
    Returns:
        Columns ``task`` (0-based index), ``task_id``, ``model``, ``instruction``, ``input``,
        ``target``, ``response``.
    Raises:
        DataFormatError: a file without ``*_predictions.jsonl`` files, a missing field, or files whose
            lengths differ.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*_predictions.jsonl"))
    if not files:
        raise DataFormatError(folder, None, None, "holds no *_predictions.jsonl files")
    ids = None
    if tasks_path is not None:
        ids = [o.get("id") for _, o in read_jsonl(tasks_path)]
    frames = []
    n = None
    for f in files:
        model = f.name[: -len("_predictions.jsonl")]
        rows = []
        for line, o in read_jsonl(f):
            for key in ("instruction", "response"):
                if not isinstance(o.get(key), str):
                    raise DataFormatError(f, line, key, "missing or not a string")
            rows.append({"model": model, "instruction": o["instruction"].strip(), "input": (o.get("input") or "").strip(),
                         "target": (o.get("target") or "").strip(), "response": o["response"].strip()})
        if n is not None and len(rows) != n:
            raise DataFormatError(f, None, None, f"has {len(rows)} predictions, other files {n}")
        n = len(rows)
        df = pd.DataFrame(rows)
        df.insert(0, "task", range(len(df)))
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.insert(1, "task_id", [ids[t] if ids and t < len(ids) else f"task_{t}" for t in out["task"]])
    return out


def rating_sheet(predictions: pd.DataFrame, *, seed: int = 0, tasks: list[int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A blind rating sheet and its key.

    Args:
        predictions: from :func:`load_predictions`.
        seed: shuffles the responses of each task (same seed, same sheet for every rater).
        tasks: task indices to include (default: all).
    Returns:
        ``(sheet, key)``. The sheet has ``item``, ``task``, ``slot`` (1..number of models), the
        instruction, input, target, response and an empty ``rating`` column: no model name anywhere.
        The key maps (``item``) to ``model``; keep it away from raters.
    Source: paper Appendix B.1 (responses shown in random order without model names).
    """
    rng = np.random.default_rng(seed)
    chosen = sorted(predictions["task"].unique()) if tasks is None else list(tasks)
    rows, keys = [], []
    for task in chosen:
        group = predictions[predictions["task"] == task]
        order = rng.permutation(len(group))
        for slot, k in enumerate(order, start=1):
            r = group.iloc[int(k)]
            item = len(rows)
            rows.append({"item": item, "task": int(task), "slot": slot, "instruction": r["instruction"], "input": r["input"],
                         "target": r["target"], "response": r["response"], "rating": ""})
            keys.append({"item": item, "model": r["model"]})
    return pd.DataFrame(rows), pd.DataFrame(keys)


def save_rating_sheet(sheet: pd.DataFrame, key: pd.DataFrame, folder: str | os.PathLike, *, name: str = "rating_sheet") -> tuple[Path, Path]:
    """Write ``<name>.csv`` (for raters) and ``<name>.key.csv`` (model identities) into ``folder``."""
    from .quality import save_sheet

    folder = Path(folder)
    return save_sheet(sheet, folder / f"{name}.csv"), save_sheet(key, folder / f"{name}.key.csv")


def load_ratings(path: str | os.PathLike) -> pd.DataFrame:
    """Read a completed rating sheet; ratings are normalized to A-D or "" (unrated).

    Raises:
        ValueError: a rating outside A-D (names the row).
    """
    sheet = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "rating" not in sheet.columns or "item" not in sheet.columns:
        raise ValueError(f"{path}: needs columns 'item' and 'rating'")
    norm = sheet["rating"].str.strip().str.upper()
    bad = ~norm.isin(list(SCALE) + [""])
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}:{k + 2}: column 'rating': {sheet['rating'].iloc[k]!r} is not A, B, C or D")
    sheet["rating"] = norm
    sheet["item"] = sheet["item"].astype(int)
    return sheet


def ratings_by_model(sheet: pd.DataFrame, key: pd.DataFrame) -> pd.DataFrame:
    """Counts of each rating per model (Figure 6): rows models, columns A-D, unrated items left out."""
    merged = sheet[["item", "rating"]].merge(key, on="item", validate="one_to_one")
    merged = merged[merged["rating"].isin(list(SCALE))]
    table = merged.groupby(["model", "rating"]).size().unstack(fill_value=0)
    return table.reindex(columns=list(SCALE), fill_value=0)


def agreement(first: pd.Series, second: pd.Series) -> dict[str, float]:
    """Agreement of two raters on the same items (paper Sec. 4.4).

    Args:
        first, second: ratings A-D of the same items, aligned; pairs where either is unrated are dropped.
    Returns:
        ``kappa_4_levels`` (Cohen's kappa on A-D), ``kappa_acceptable`` (on A/B vs. C/D),
        ``spearman_rho`` (A=4 ... D=1), and ``n`` (items compared).
    Source: scikit-learn's ``cohen_kappa_score``, scipy's ``spearmanr``.
    """
    a = pd.Series(first).reset_index(drop=True)
    b = pd.Series(second).reset_index(drop=True)
    keep = a.isin(list(SCALE)) & b.isin(list(SCALE))
    a, b = a[keep], b[keep]
    if len(a) < 2:
        raise ValueError("agreement needs at least two items rated by both raters")
    ordinal = {"A": 4, "B": 3, "C": 2, "D": 1}
    labels = list(SCALE)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = spearmanr(a.map(ordinal), b.map(ordinal)).statistic
        return {
            "kappa_4_levels": float(cohen_kappa_score(a, b, labels=labels)),
            "kappa_acceptable": float(cohen_kappa_score(a.isin(ACCEPTABLE), b.isin(ACCEPTABLE), labels=[True, False])),
            "spearman_rho": float(rho),
            "n": int(len(a)),
        }


def rouge_by_model(predictions: pd.DataFrame) -> pd.DataFrame:
    """ROUGE-L F1 of each response against its task's target (an automatic view, not a human rating).

    Returns:
        ``predictions`` with a ``rougeL`` column added.
    """
    from ..rouge import paired

    out = predictions.copy()
    out["rougeL"] = paired(out["target"].tolist(), out["response"].tolist())
    return out


_RATING = re.compile(r"\b([ABCD])\b")


def lm_rate(client, sheet: pd.DataFrame, *, max_tokens: int = 4, progress: bool = True) -> pd.DataFrame:
    """Fill a rating sheet with an LM as the rater (AUTOMATIC: not a human judgement).

    The LM reads the scale, the instruction, input, target and the response, and answers one letter.

    Args:
        client: an :class:`~selfinstruct_utils.llm.LMClient`.
        sheet: from :func:`rating_sheet`.
    Returns:
        A copy of the sheet with ``rating`` filled (A-D, or "" when the answer had no letter),
        ``raw_rating`` (the LM's text) and ``rater`` = ``"automatic:<model>"``.
    """
    from tqdm.auto import tqdm

    from ..llm import SamplingParams

    scale = "\n".join(f"{k}: {v}" for k, v in SCALE.items())
    header = ("Rate the response to the task on this scale:\n" + scale + "\nAnswer with one letter.\n\n")
    prompts = []
    for r in sheet.itertuples():
        body = f"Task: {r.instruction}\n" + (f"Input: {r.input}\n" if r.input else "")
        body += f"Reference answer: {r.target}\nResponse: {r.response}\nRating:"
        prompts.append(header + body)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=("\n",))
    texts = []
    step = 8
    for lo in tqdm(range(0, len(prompts), step), desc="LM rater", disable=not progress):
        texts += [c.text for c in client.complete(prompts[lo : lo + step], params, step="lm_rater")]
    out = sheet.copy()
    out["raw_rating"] = texts
    out["rating"] = [(m.group(1) if (m := _RATING.search(t.upper())) else "") for t in texts]
    out["rater"] = f"automatic:{client.model}"
    return out
