"""Step 5, evaluation: a (tuned) model's responses to the paper's evaluation sets (paper Sec. 4.3-4.5).

- :func:`evaluate_user_oriented` answers the 252 user-oriented instructions (Sec. 4.4) greedily, in
  batches, with the prompt format of the eight published models' prediction files
  (:func:`evaluation_prompt`), and writes ``<name>_predictions.jsonl`` in their schema, so notebook 09's
  views (ROUGE-L per model, blind rating sheets, the LM rater) show the kit's models beside GPT-3's.
- :func:`rouge_summary` gives each model's mean ROUGE-L F1 against the reference outputs with a
  bootstrap interval (an automatic view; the paper's own evaluation is human).
- :func:`evaluate_superni` scores held-out SuperNI tasks with their definitions by ROUGE-L, the paper's
  Table 3 metric, on the test file that ``selfinstruct download --what superni`` fetches.
- :func:`data_size_curve` is Figure 7's experiment at laptop scale: the same base model tuned on growing
  shares of a dataset's instructions, each evaluated the same way.

Needs the ``train`` extra (``torch``, ``transformers``, ``peft``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .analysis.human_eval import load_predictions
from .records import DataFormatError, read_jsonl, write_atomic, write_json_atomic, write_jsonl
from .rouge import paired
from .runs import now_utc, package_versions

__all__ = [
    "evaluation_prompt",
    "user_oriented_tasks",
    "generate",
    "GenerationStats",
    "evaluate_user_oriented",
    "common_task_scores",
    "rouge_summary",
    "mean_interval",
    "predictions_made_by",
    "superni_examples",
    "evaluate_superni",
    "data_size_curve",
]


def evaluation_prompt(instruction: str, input: str = "") -> str:
    """The prompt of the published prediction files for one user-oriented instance.

    ``"<instruction>\\n\\nInput: <input>\\nOutput:"``, or ``"<instruction>\\nOutput:"`` without an input
    (both stripped); it reproduces the ``prompt`` field of all 252 records of each published file.
    """
    instruction, input = instruction.strip(), input.strip()
    return f"{instruction}\n\nInput: {input}\nOutput:" if input else f"{instruction}\nOutput:"


def user_oriented_tasks(path: str | os.PathLike | None = None, tasks: Sequence[int] | int | None = None) -> pd.DataFrame:
    """The user-oriented evaluation set, one row per task (each has one instance).

    Args:
        path: ``user_oriented_instructions.jsonl`` (default: :func:`selfinstruct_utils.data.user_oriented_path`).
        tasks: task indices (0-based, file order) to keep, or an int n for the first n (default: all 252).
    Returns:
        Columns ``task``, ``id``, ``instruction``, ``input``, ``target``, ``prompt``.
    Raises:
        DataFormatError: a record without ``instruction`` or ``instances`` (file, line and field named).
    """
    from .data import user_oriented_path

    path = Path(path) if path is not None else user_oriented_path()
    rows = []
    for k, (line, obj) in enumerate(read_jsonl(path)):
        instances = obj.get("instances")
        if not isinstance(obj.get("instruction"), str):
            raise DataFormatError(path, line, "instruction", "missing or not a string")
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            raise DataFormatError(path, line, "instances", "missing or empty")
        inst = instances[0]
        rows.append({"task": k, "id": obj.get("id", f"task_{k}"), "instruction": obj["instruction"].strip(),
                     "input": (inst.get("input") or "").strip(), "target": (inst.get("output") or "").strip()})
    df = pd.DataFrame(rows)
    if isinstance(tasks, int):
        df = df.head(tasks)
    elif tasks is not None:
        df = df[df["task"].isin(set(tasks))]
    df = df.reset_index(drop=True)
    df["prompt"] = [evaluation_prompt(i, x) for i, x in zip(df["instruction"], df["input"], strict=True)]
    return df


@dataclass
class GenerationStats:
    """``prompt_tokens`` and ``new_tokens`` (summed over prompts), ``seconds`` of wall time."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second of generation."""
        return self.new_tokens / self.seconds if self.seconds else float("nan")


def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 128, batch_size: int = 8,
             chat: bool = False, progress: bool = True, desc: str = "generating") -> tuple[list[str], GenerationStats]:
    """Greedy responses to ``prompts``, in batches (left padding), each cut at the end-of-text token.

    Args:
        model, tokenizer: a ``transformers`` causal LM and its tokenizer (e.g. from
            :func:`selfinstruct_utils.tune.load_tuned`).
        max_new_tokens: tokens generated at most per prompt.
        batch_size: prompts per forward pass; prompts are sorted by length so batches pad little.
        chat: wrap each prompt as a user turn of the tokenizer's chat template (for a chat model used
            as it was trained; the paper's format is plain text).
    Returns:
        ``(responses, stats)``: responses in the order of ``prompts``, whitespace stripped.
    """
    import torch

    device = next(model.parameters()).device
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             if chat else p for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    out: list[str] = [""] * len(texts)
    stats = GenerationStats(prompt_tokens=sum(lengths))
    start = time.perf_counter()
    try:
        with tqdm(total=len(texts), desc=desc, disable=not progress) as bar:
            for b in range(0, len(order), batch_size):
                idx = order[b: b + batch_size]
                enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                with torch.no_grad():
                    gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                new = gen[:, enc["input_ids"].shape[1]:]
                for i, row in zip(idx, new, strict=True):
                    ids = row.tolist()
                    if tokenizer.eos_token_id in ids:
                        ids = ids[: ids.index(tokenizer.eos_token_id)]
                    while ids and ids[-1] == tokenizer.pad_token_id:
                        ids.pop()
                    stats.new_tokens += len(ids)
                    out[i] = tokenizer.decode(ids, skip_special_tokens=True).strip()
                bar.update(len(idx))
    finally:
        tokenizer.padding_side = side
    stats.seconds = time.perf_counter() - start
    return out, stats


def evaluate_user_oriented(model, tokenizer, *, name: str, out_dir: str | os.PathLike,
                           tasks: Sequence[int] | int | None = None, tasks_path: str | os.PathLike | None = None,
                           max_new_tokens: int = 128, batch_size: int = 8, chat: bool = False,
                           identity: dict | None = None, progress: bool = True) -> pd.DataFrame:
    """Answer the user-oriented instructions and write ``<out_dir>/<name>_predictions.jsonl``.

    Args:
        name: the model's name in the predictions table (file name stem; letters, digits, ``-_.``).
        tasks: task indices or a count (default: all 252); see :func:`user_oriented_tasks`.
        identity: what made the model (e.g. ``load_tuned(...).identity``), written to
            ``<name>_predictions.meta.json`` with the settings, tokens and seconds.
    Returns:
        The predictions in :func:`~selfinstruct_utils.analysis.human_eval.load_predictions`' columns.
        The file holds ``prompt``, ``instruction``, ``input``, ``target``, ``response`` (the published
        schema) and ``id`` (the task id, which places a file of fewer than 252 tasks).
    Raises:
        ValueError: a name with other characters.
    """
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"model name {name!r}: use letters, digits, '-', '_' or '.'")
    from .data import user_oriented_path

    tasks_path = Path(tasks_path) if tasks_path is not None else user_oriented_path()
    df = user_oriented_tasks(tasks_path, tasks)
    responses, stats = generate(model, tokenizer, df["prompt"].tolist(), max_new_tokens=max_new_tokens,
                                batch_size=batch_size, chat=chat, progress=progress, desc=f"evaluating {name}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / f"{name}_predictions.jsonl",
                ({"id": r.id, "prompt": r.prompt, "instruction": r.instruction, "input": r.input, "target": r.target,
                  "response": resp} for r, resp in zip(df.itertuples(index=False), responses, strict=True)))
    meta = {"created": now_utc(), "model": identity or {}, "tasks": len(df), "max_new_tokens": max_new_tokens,
            "batch_size": batch_size, "chat": chat, "decoding": "greedy", "prompt_tokens": stats.prompt_tokens,
            "new_tokens": stats.new_tokens, "seconds": round(stats.seconds, 2),
            "tokens_per_second": round(stats.tokens_per_second, 2), "packages": package_versions()}
    write_json_atomic(out / f"{name}_predictions.meta.json", meta, default=str)  # atomic: a kill never leaves half a meta file
    return load_predictions(out, tasks_path, models=[name])


def common_task_scores(predictions: pd.DataFrame) -> pd.DataFrame:
    """``predictions`` on the tasks every model answered, with each response's ROUGE-L F1 (``rougeL``)
    against its target (added when absent)."""
    from .analysis.human_eval import rouge_by_model

    df = predictions if "rougeL" in predictions.columns else rouge_by_model(predictions)
    per_task = df.groupby("task")["model"].nunique()
    return df[df["task"].isin(per_task[per_task == df["model"].nunique()].index)]


def mean_interval(values: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 2000,
                  seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (``scipy.stats.bootstrap``, seeded).

    Returns:
        ``(low, high)``; both equal the mean when the values do not vary (or there is one), NaN for none.
    """
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if len(values) > 1 and np.ptp(values) > 0:
        ci = bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                       method="percentile", rng=np.random.default_rng(seed)).confidence_interval
        return float(ci.low), float(ci.high)
    mean = float(values.mean()) if len(values) else float("nan")
    return mean, mean


def rouge_summary(predictions: pd.DataFrame, *, common_tasks: bool = True, confidence: float = 0.95,
                  n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean ROUGE-L F1 of each model's responses against the targets, with a bootstrap interval.

    Args:
        predictions: from :func:`~selfinstruct_utils.analysis.human_eval.load_predictions` (any number
            of models; a ``rougeL`` column is computed when absent).
        common_tasks: compare every model on the tasks all of them answered (default), so a model
            evaluated on a subset is compared on that subset.
        confidence, n_resamples, seed: the percentile bootstrap over tasks (``scipy.stats.bootstrap``).
    Returns:
        One row per model, best first: ``model``, ``tasks``, ``rougeL`` (mean, 0-1), ``low``, ``high``.
    """
    from .analysis.human_eval import rouge_by_model

    df = common_task_scores(predictions) if common_tasks else (
        predictions if "rougeL" in predictions.columns else rouge_by_model(predictions))
    rows = []
    for model, g in df.groupby("model"):
        scores = g["rougeL"].to_numpy(dtype=float)
        low, high = mean_interval(scores, confidence=confidence, n_resamples=n_resamples, seed=seed)
        rows.append({"model": model, "tasks": len(scores), "rougeL": float(scores.mean()), "low": low, "high": high})
    return pd.DataFrame(rows).sort_values(["rougeL", "model"], ascending=[False, True]).reset_index(drop=True)


def superni_examples(path: str | os.PathLike, *, tasks: int | None = 12, per_task: int = 4) -> pd.DataFrame:
    """Evaluation instances of the SuperNI test file (the paper's Table 3 set), a few per task.

    Args:
        path: ``superni_test_set.jsonl`` (``selfinstruct download --what superni``), read by the kit's one
            reader, :func:`~selfinstruct_utils.analysis.overlap.read_superni_jsonl`.
        tasks: the first this many tasks (distinct definitions) in file order (None: all 119).
        per_task: instances per task, the first in file order.
    Returns:
        Columns ``task`` (``task_<k>``, numbered as
        :func:`~selfinstruct_utils.analysis.overlap.load_superni_test_tasks` numbers them), ``definition``,
        ``prompt``, ``target`` (the reference output without its end-of-text marker).
    Raises:
        DataFormatError: a line without a string ``prompt`` or ``completion``, or a prompt holding no task
            definition (file and line named).
    """
    from .analysis.overlap import read_superni_jsonl

    df = read_superni_jsonl(path)
    if tasks is not None:
        df = df[df["task"].isin({f"task_{k}" for k in range(1, tasks + 1)})]
    df = df.groupby("task", sort=False).head(per_task).reset_index(drop=True)
    return df[["task", "definition", "prompt", "target"]]


def evaluate_superni(model, tokenizer, path: str | os.PathLike, *, tasks: int | None = 12, per_task: int = 4,
                     max_new_tokens: int = 64, batch_size: int = 8, progress: bool = True) -> dict[str, Any]:
    """ROUGE-L on held-out SuperNI tasks with their definitions (paper Sec. 4.3, Table 3's metric).

    Each prompt (definition, examples and input, as the file holds it) is answered greedily; each response
    is scored against its reference by ROUGE-L F1 (:func:`selfinstruct_utils.rouge.paired`), averaged per
    task, then over tasks, so every task weighs the same whatever its number of instances.

    Args:
        model, tokenizer: as for :func:`generate`.
        path, tasks, per_task: the instances, see :func:`superni_examples`.
        max_new_tokens, batch_size: as for :func:`generate`.
    Returns:
        ``{"rougeL": mean over tasks of the per-task mean ROUGE-L F1 (0-1), "per_task": DataFrame
        (task, instances, rougeL), "predictions": DataFrame (task, prompt, target, response, rougeL),
        "stats": GenerationStats}``.
    Raises:
        DataFormatError: a malformed file (see :func:`superni_examples`).
    """
    df = superni_examples(path, tasks=tasks, per_task=per_task)
    responses, stats = generate(model, tokenizer, df["prompt"].tolist(), max_new_tokens=max_new_tokens,
                                batch_size=batch_size, progress=progress, desc="SuperNI")
    df = df.assign(response=responses)
    df["rougeL"] = paired(df["target"].tolist(), df["response"].tolist())
    per_task = df.groupby("task", sort=False)["rougeL"].agg(instances="size", rougeL="mean").reset_index()
    return {"rougeL": float(per_task["rougeL"].mean()), "per_task": per_task, "predictions": df, "stats": stats}


def data_size_curve(data, out_dir: str | os.PathLike, *, fractions: Sequence[float] = (0, 1 / 8, 1 / 4, 1 / 2, 1),
                    base: str | os.PathLike | None = None, config=None, limit: int | None = 64,
                    tasks: Sequence[int] | int | None = 16, max_new_tokens: int = 64, batch_size: int = 8,
                    device: str = "auto", progress: bool = True) -> pd.DataFrame:
    """Figure 7 at laptop scale: tune on growing shares of a dataset's instructions, evaluate each.

    Each fraction f trains a fresh LoRA adapter on the examples of the first ``round(f * n)`` instructions
    of one seeded order (so smaller sets are nested in larger ones), with the same configuration, and
    answers the same user-oriented tasks; f = 0 is the base model itself, untuned.

    Args:
        data: what :func:`selfinstruct_utils.tune.training_records` reads (run directory, file, DataFrame).
        out_dir: one sub-folder per fraction (``frac_0.125/``: the tuning run and its predictions).
            Called again, a finished fraction loads no model: its tuning run is complete and its
            predictions' ``.meta.json`` names the same model (base identity, adapter hash, data hash),
            tasks and ``max_new_tokens``; otherwise it is tuned (resumed) and evaluated again.
        fractions: shares of the instructions, 0 to 1.
        config: a :class:`~selfinstruct_utils.tune.TuneConfig` (default: its defaults).
        limit: examples drawn from ``data`` first (None: all of it; 64 keeps 2 cores to minutes).
        tasks: user-oriented tasks to evaluate on (indices or the first n).
    Returns:
        One row per fraction: ``fraction``, ``instructions``, ``examples``, ``steps``, ``train_seconds``,
        ``final_loss``, ``rougeL`` with ``low``/``high`` (bootstrap over tasks), ``model`` (the
        predictions' name). Also written to ``out_dir/curve.csv``.
    Raises:
        ValueError: a fraction outside [0, 1].
        ConfigChangedError: a fraction's folder holds a run of other data or configuration (from
            :func:`~selfinstruct_utils.tune.tune`).
    """
    from .tune import TuneConfig, load_base, load_tuned, resolve_base, training_records, tune

    config = config or TuneConfig()
    for f in fractions:
        if not 0 <= f <= 1:
            raise ValueError(f"fractions must lie in [0, 1], not {f}")
    records = training_records(data, limit=limit, seed=config.seed)
    order = list(dict.fromkeys(r["instruction"] for r in records))
    n_tasks = len(user_oriented_tasks(None, tasks))
    out = Path(out_dir)
    rows = []
    for f in sorted(fractions):
        n_instr = round(f * len(order))
        keep = set(order[:n_instr])
        subset = [r for r in records if r["instruction"] in keep]
        folder = out / f"frac_{f:g}"
        name = f"kit-{n_instr}-instructions"
        steps = train_seconds = 0
        final_loss = float("nan")
        if subset:
            result = tune(subset, folder, base=base, config=config, device=device, progress=progress)
            losses = result.losses()
            steps, train_seconds = result.manifest["steps"], result.manifest["totals"]["seconds"]
            final_loss = float(losses["loss"].iloc[-1]) if len(losses) else float("nan")
            identity = result.identity
        else:
            result, identity = None, resolve_base(base)[1]
        if predictions_made_by(folder, name, identity, tasks=n_tasks, max_new_tokens=max_new_tokens):
            preds = load_predictions(folder, models=[name])
        else:  # only now load weights
            model = (result if result is not None and result.model is not None else
                     load_tuned(folder, device=device) if result is not None else load_base(base, device=device))
            preds = evaluate_user_oriented(model.model, model.tokenizer, name=name, out_dir=folder, tasks=tasks,
                                           max_new_tokens=max_new_tokens, batch_size=batch_size,
                                           identity=model.identity, progress=progress)
        summary = rouge_summary(preds).iloc[0]
        rows.append({"fraction": f, "instructions": n_instr, "examples": len(subset), "steps": steps,
                     "train_seconds": train_seconds, "final_loss": final_loss, "rougeL": summary["rougeL"],
                     "low": summary["low"], "high": summary["high"], "model": name})
    curve = pd.DataFrame(rows)
    write_atomic(out / "curve.csv", curve.to_csv(index=False))
    return curve


def predictions_made_by(folder: str | os.PathLike, name: str, identity: dict, *, tasks: int, max_new_tokens: int) -> bool:
    """Whether ``folder`` holds ``name``'s predictions made by the model ``identity`` names (base id,
    adapter hash, tuning data) on ``tasks`` tasks with ``max_new_tokens``, read from their meta file
    (an unreadable meta file: False, the predictions are made again)."""
    folder = Path(folder)
    meta_path = folder / f"{name}_predictions.meta.json"
    if not (folder / f"{name}_predictions.jsonl").is_file() or not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    made_by = meta.get("model") or {}
    same = all(made_by.get(k) == identity.get(k) for k in ("id", "adapter_sha256", "tuning"))
    return same and meta.get("tasks") == tasks and meta.get("max_new_tokens") == max_new_tokens
