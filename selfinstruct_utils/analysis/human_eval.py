"""Human evaluation on the 252 user-oriented instructions (paper Sec. 4.4, Figure 6, Appendix B).

- :func:`load_predictions` reads the eight models' published responses.
- :func:`rating_sheet` builds a blind sheet: per task, the responses in random order, model names kept
  in a separate key file (Appendix B.1); raters grade each response A-D (:data:`SCALE`).
- :func:`ratings_by_model` and :func:`agreement` turn completed sheets into Figure 6 and the agreement
  statistics (Cohen's kappa on four levels and on acceptable vs. not; Spearman's rho).
- :func:`open_rating_sheet` gives each rater a sheet of their own (created once, never overwritten);
  :func:`load_all_ratings` reads every rater's sheet for Figure 6 and the agreement.
- :func:`open_sheet_for_models` keeps one sheet folder per set of models under one root: a new set
  (e.g. the kit's own models after notebook 10) opens a new sheet, earlier sheets keep their answers.
- :func:`rouge_by_model` gives an automatic view, clearly labelled as automatic (the LM as a rater is
  :func:`selfinstruct_utils.rater.lm_rate`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from ..records import DataFormatError, read_jsonl
from .quality import rater_file_name, save_sheet

__all__ = [
    "SCALE",
    "ACCEPTABLE",
    "PAPER_AGREEMENT",
    "load_predictions",
    "rating_sheet",
    "load_ratings",
    "ratings_by_model",
    "agreement",
    "rouge_by_model",
    "open_rating_sheet",
    "load_all_ratings",
    "agreement_between_raters",
    "KEY_FILE",
    "sheet_digest",
    "OpenedSheet",
    "sheet_folders",
    "open_sheet_for_models",
    "sheets_summary",
    "rating_counts",
    "rating_counts_all_sheets",
    "on_common_tasks",
    "UNGRADED",
    "lm_rating_counts",
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


def load_predictions(folder: str | os.PathLike | Sequence[str | os.PathLike], tasks_path: str | os.PathLike | None = None,
                     *, models: Sequence[str] | None = None) -> pd.DataFrame:
    """All ``<model>_predictions.jsonl`` files of one or more folders, in one long table.

    A published file holds the 252 tasks in file order; a file whose records carry an ``id`` (what
    :func:`selfinstruct_utils.evaluate.evaluate_user_oriented` writes) may hold any subset of them.

    Args:
        folder: the predictions folder (e.g. :func:`selfinstruct_utils.data.predictions_dir`), or a list
            of folders (e.g. the published predictions and a folder of the kit's own).
        tasks_path: the user-oriented task file, to attach task ids (files are in its order).
        models: only these models (file name stems).
    Returns:
        Columns ``task`` (0-based index), ``task_id``, ``model``, ``instruction``, ``input``,
        ``target``, ``response``.
    Raises:
        DataFormatError: a folder without ``*_predictions.jsonl`` files, a missing field, an unknown task
            ``id``, or files without ids whose lengths differ.
    """
    folders = [Path(folder)] if isinstance(folder, str | os.PathLike) else [Path(f) for f in folder]
    files = [f for d in folders for f in sorted(d.glob("*_predictions.jsonl"))]
    if models is not None:
        files = [f for f in files if f.name[: -len("_predictions.jsonl")] in set(models)]
    if not files:
        where = ", ".join(map(str, folders))
        raise DataFormatError(where, None, None, "holds no *_predictions.jsonl files" + (f" of {list(models)}" if models else ""))
    ids = None
    if tasks_path is not None:
        ids = [o.get("id") for _, o in read_jsonl(tasks_path)]
    frames = []
    n = None
    for f in files:
        model = f.name[: -len("_predictions.jsonl")]
        rows, has_ids = [], False
        for line, o in read_jsonl(f):
            for key in ("instruction", "response"):
                if not isinstance(o.get(key), str):
                    raise DataFormatError(f, line, key, "missing or not a string")
            task = len(rows)
            if isinstance(o.get("id"), str):
                has_ids = True
                task = _task_index(o["id"], ids, f, line)
            rows.append({"task": task, "model": model, "instruction": o["instruction"].strip(),
                         "input": (o.get("input") or "").strip(), "target": (o.get("target") or "").strip(),
                         "response": o["response"].strip()})
        if not has_ids:
            if n is not None and len(rows) != n:
                raise DataFormatError(f, None, None, f"has {len(rows)} predictions, other files {n}")
            n = len(rows)
        frames.append(pd.DataFrame(rows, columns=["task", "model", "instruction", "input", "target", "response"]))
    out = pd.concat(frames, ignore_index=True)
    out.insert(1, "task_id", [ids[t] if ids and t < len(ids) else f"user_oriented_task_{t}" for t in out["task"]])
    return out


def _task_index(task_id: str, ids: list | None, path: Path, line: int) -> int:
    if ids is not None:
        if task_id not in ids:
            raise DataFormatError(path, line, "id", f"{task_id!r} is not a task of the evaluation set")
        return ids.index(task_id)
    m = re.search(r"(\d+)$", task_id)
    if m is None:
        raise DataFormatError(path, line, "id", f"{task_id!r} names no task number")
    return int(m.group(1))


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


def open_rating_sheet(predictions: pd.DataFrame, folder: str | os.PathLike, rater: str, *, seed: int = 0,
                      tasks: list[int] | None = None) -> tuple[Path, Path]:
    """This rater's blind sheet ``rating_<rater>.csv`` and the shared key ``rating_key.csv`` in ``folder``.

    Every rater gets the same items in the same order (same ``seed`` and ``tasks``); a sheet is
    created only when it does not exist yet, and an existing one (with its ratings) is never rewritten.

    Returns:
        (sheet path, key path).
    Raises:
        ValueError: the folder's key was made from other predictions, seed or tasks (its items differ).
    """
    folder = Path(folder)
    sheet, key = rating_sheet(predictions, seed=seed, tasks=tasks)
    key_path = folder / "rating_key.csv"
    if key_path.exists():
        stored = pd.read_csv(key_path, dtype={"item": int, "model": str})
        if not stored.equals(key.astype({"item": int})):
            raise ValueError(f"{key_path} belongs to another sheet (other predictions, seed or tasks): "
                             "use another folder for this one")
    else:
        save_sheet(key, key_path)
    sheet_path = folder / f"rating_{rater_file_name(rater)}.csv"
    if not sheet_path.exists():
        sheet["rater"] = rater
        save_sheet(sheet, sheet_path)
    return sheet_path, key_path


def load_all_ratings(folder: str | os.PathLike) -> pd.DataFrame:
    """Every rater's sheet (``rating_*.csv``) of a folder, with the model of each item from its key.

    Returns:
        Columns ``rater`` (from the file name), ``item``, ``task``, ``rating`` (A-D or "" unrated),
        ``model``; empty (with those columns) when no sheet exists.
    Raises:
        ValueError: a rating outside A-D (names file and row).
    """
    folder = Path(folder)
    key_path = folder / "rating_key.csv"
    frames = []
    for path in sorted(folder.glob("rating_*.csv")):
        if path == key_path:
            continue
        sheet = load_ratings(path)
        frames.append(sheet.assign(rater=path.stem[len("rating_"):])[["rater", "item", "task", "rating"]])
    if not frames:
        return pd.DataFrame(columns=["rater", "item", "task", "rating", "model"])
    key = pd.read_csv(key_path, dtype={"item": int, "model": str})
    out = pd.concat(frames, ignore_index=True)
    out["task"] = out["task"].astype(int)
    return out.merge(key, on="item", how="left", validate="many_to_one")


def agreement_between_raters(ratings: pd.DataFrame) -> pd.DataFrame:
    """:func:`agreement` for every pair of raters in a table from :func:`load_all_ratings`.

    Returns:
        One row per pair (``rater_1``, ``rater_2``, and the statistics); pairs with fewer than two
        items rated by both are left out.
    """
    raters = sorted(ratings["rater"].unique())
    rows = []
    for a_k, a in enumerate(raters):
        for b in raters[a_k + 1 :]:
            merged = ratings[ratings.rater == a][["item", "rating"]].merge(
                ratings[ratings.rater == b][["item", "rating"]], on="item", suffixes=("_1", "_2"))
            try:
                rows.append({"rater_1": a, "rater_2": b, **agreement(merged.rating_1, merged.rating_2)})
            except ValueError:
                continue
    return pd.DataFrame(rows, columns=["rater_1", "rater_2", "kappa_4_levels", "kappa_acceptable", "spearman_rho", "n"])


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


# --- one sheet per set of models: a new set opens a new sheet, earlier sheets keep their answers -------------

#: The key file that marks a folder as one sheet (items -> models).
KEY_FILE = "rating_key.csv"


def sheet_digest(sheet: pd.DataFrame, key: pd.DataFrame) -> str:
    """A short hash (12 hex digits) of a blind sheet's items: task, slot, response and model of each item.

    Two sheets with the same digest show raters the same responses in the same order with the same key;
    a new model, a re-generated answer, another seed or other tasks give another digest.
    """
    import hashlib

    merged = sheet[["item", "task", "slot", "instruction", "input", "response"]].merge(key, on="item", validate="one_to_one")
    return hashlib.sha256(merged.to_csv(index=False).encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class OpenedSheet:
    """Where this rater's sheet for one set of models lives (from :func:`open_sheet_for_models`).

    Attributes:
        folder: the sheet's folder (its key ``rating_key.csv`` and one ``rating_<rater>.csv`` per rater).
        sheet_path, key_path: this rater's sheet and the shared key.
        models: the models on the sheet, sorted.
        tasks: the number of tasks on it.
        new: True when this call created the folder's key (a new set of models).
        earlier: the other sheet folders under the same root, which keep their answers.
        message: one line saying which sheet is open and why.
    """

    folder: Path
    sheet_path: Path
    key_path: Path
    models: tuple[str, ...]
    tasks: int
    new: bool
    earlier: tuple[Path, ...]
    message: str


def sheet_folders(root: str | os.PathLike) -> list[Path]:
    """Every sheet folder under ``root``: ``root`` itself when it holds a key (the layout before sheets
    got folders of their own) and each subfolder that holds one, oldest key first."""
    root = Path(root)
    found = [root] if (root / KEY_FILE).is_file() else []
    found += [p.parent for p in root.glob(f"*/{KEY_FILE}")]
    return sorted(found, key=lambda p: ((p / KEY_FILE).stat().st_mtime_ns, str(p)))


def open_sheet_for_models(predictions: pd.DataFrame, root: str | os.PathLike, rater: str, *, seed: int = 0,
                          tasks: list[int] | None = None, models: Sequence[str] | None = None) -> OpenedSheet:
    """This rater's blind sheet for the models in ``predictions``, in a folder of its own under ``root``.

    A sheet's folder is ``root/sheet-<digest>`` (:func:`sheet_digest`), so a new set of models (e.g.
    after notebook 10 adds the kit's own) opens a new sheet there, and every earlier sheet keeps its
    folder, key and answers untouched. A ``root`` that itself holds a matching key (sheets made before
    folders) is used as it is. Within a folder, :func:`open_rating_sheet` creates each rater's sheet once.

    Args:
        predictions: from :func:`load_predictions`.
        root: the folder that holds every sheet (``SHEET_DIR`` of notebook 09).
        rater: the rater's name (file ``rating_<rater>.csv``).
        seed, tasks: as in :func:`rating_sheet`.
        models: only these models, on the tasks every one of them answered (e.g. the kit's tuned and
            untuned pair for a sheet of their own).
    Returns:
        An :class:`OpenedSheet`.
    Raises:
        ValueError: ``models`` names a model not in ``predictions``, or they share no task.
    """
    root = Path(root)
    if models is not None:
        missing = sorted(set(models) - set(predictions["model"]))
        if missing:
            raise ValueError(f"no predictions of {missing} (models present: {sorted(set(predictions['model']))})")
        predictions = predictions[predictions["model"].isin(list(models))]
        per_task = predictions.groupby("task")["model"].nunique()
        common = sorted(int(t) for t in per_task[per_task == len(set(models))].index)
        if not common:
            raise ValueError(f"{list(models)} answered no task in common")
        tasks = common if tasks is None else [t for t in tasks if t in set(common)]
    sheet, key = rating_sheet(predictions, seed=seed, tasks=tasks)
    legacy = root / KEY_FILE
    if legacy.is_file() and pd.read_csv(legacy, dtype={"item": int, "model": str}).equals(key.astype({"item": int})):
        folder = root
    else:
        folder = root / f"sheet-{sheet_digest(sheet, key)}"
    earlier = tuple(p for p in sheet_folders(root) if p != folder)
    new = not (folder / KEY_FILE).exists()
    folder.mkdir(parents=True, exist_ok=True)
    sheet_path, key_path = open_rating_sheet(predictions, folder, rater, seed=seed, tasks=tasks)
    names = tuple(sorted(key["model"].unique()))
    n_tasks = int(sheet["task"].nunique())
    what = f"{len(names)} models on {n_tasks} tasks"
    if new and earlier:
        message = (f"a new set of models ({what}): opened a new sheet in {folder}; the {len(earlier)} earlier "
                   f"sheet(s) keep their answers ({', '.join(str(p) for p in earlier)})")
    elif new:
        message = f"opened a new sheet in {folder} ({what})"
    else:
        message = f"the sheet for these models ({what}) is {folder}" + (
            f"; {len(earlier)} other sheet(s) beside it" if earlier else "")
    return OpenedSheet(folder, sheet_path, key_path, names, n_tasks, new, earlier, message)


def sheets_summary(root: str | os.PathLike) -> pd.DataFrame:
    """One row per sheet folder under ``root``: ``sheet`` (folder), ``models``, ``items``, ``raters``,
    ``rated`` (answers given, all raters together)."""
    rows = []
    for folder in sheet_folders(root):
        key = pd.read_csv(folder / KEY_FILE, dtype={"item": int, "model": str})
        ratings = load_all_ratings(folder)
        rows.append({"sheet": str(folder), "models": int(key["model"].nunique()), "items": len(key),
                     "raters": int(ratings["rater"].nunique()), "rated": int((ratings["rating"] != "").sum())})
    return pd.DataFrame(rows, columns=["sheet", "models", "items", "raters", "rated"])


def rating_counts(ratings: pd.DataFrame) -> pd.DataFrame:
    """Figure 6's counts from :func:`load_all_ratings`: rows models, columns A-D, unrated left out."""
    rated = ratings[ratings["rating"].isin(list(SCALE))]
    if rated.empty:
        return pd.DataFrame(columns=list(SCALE), dtype=int)
    return rated.groupby(["model", "rating"]).size().unstack(fill_value=0).reindex(columns=list(SCALE), fill_value=0)


def rating_counts_all_sheets(root: str | os.PathLike) -> pd.DataFrame:
    """Figure 6's counts over every sheet under ``root``: a model rated on several sheets (e.g. the kit's
    pair on a sheet of its own and on the sheet with the published models) adds up its ratings."""
    frames = [rating_counts(load_all_ratings(f)) for f in sheet_folders(root)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(SCALE))
    return pd.concat(frames).groupby(level=0).sum().reindex(columns=list(SCALE), fill_value=0)


def on_common_tasks(predictions: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``predictions`` restricted to the tasks every model answered, and their number.

    A model of the kit evaluated on 16 tasks and the published ones on 252 are compared on those 16
    only, so every box or mean in a view is over the same tasks.
    """
    per_task = predictions.groupby("task")["model"].nunique()
    common = per_task[per_task == predictions["model"].nunique()].index
    return predictions[predictions["task"].isin(common)], int(len(common))


#: The column that counts answers an LM rater gave no grade (see :func:`lm_rating_counts`).
UNGRADED = "no grade"


def lm_rating_counts(rated: pd.DataFrame, key: pd.DataFrame) -> pd.DataFrame:
    """Counts of an LM rater's grades per model with the answers it gave no grade counted, not dropped.

    Args:
        rated: a sheet filled by :func:`selfinstruct_utils.rater.lm_rate` (``rating`` A-D or "").
        key: the sheet's key.
    Returns:
        Rows every model of the key, columns A-D and :data:`UNGRADED`.
    """
    merged = rated[["item", "rating"]].merge(key, on="item", validate="one_to_one")
    merged["rating"] = merged["rating"].where(merged["rating"].isin(list(SCALE)), UNGRADED)
    table = merged.groupby(["model", "rating"]).size().unstack(fill_value=0)
    return table.reindex(index=sorted(key["model"].unique()), columns=[*SCALE, UNGRADED], fill_value=0)
