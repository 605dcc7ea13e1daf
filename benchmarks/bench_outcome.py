"""Step 5's outcome: does instruction tuning on generated data make the model better, and by how much?

Run from the project root::

    python benchmarks/bench_outcome.py --scale laptop          # 2 CPU cores (about an hour, quiet)
    python benchmarks/bench_outcome.py --scale gpu             # 10x the data, on a GPU (minutes)
    python benchmarks/bench_outcome.py --scale laptop --rate 24    # + the embedded LM as rater

Every point of a grid is one model answering the paper's 252 user-oriented instructions (Sec. 4.4) in
the published predictions' format, scored by ROUGE-L F1 against the reference output with a percentile
bootstrap interval over tasks (:func:`selfinstruct_utils.evaluate.rouge_summary`):

- ``base``: the base model untuned (the zero point);
- ``kit-run``: LoRA-tuned on a run of the kit with the embedded model (``--kit-run``, default
  ``runs/demo``; left out with one line when absent);
- ``gpt3-run``, ``code-alpaca``, ``gpteacher``: LoRA-tuned on real generated data beside the project
  (the original code's GPT-3 run, Code Alpaca 2K, GPTeacher role-play), read by the kit's loaders;
- ``code-alpaca-<n>``: Figure 7's question, the same data at growing sizes (nested seeded samples).

Each tuned point is compared with ``base`` on the same tasks by a paired bootstrap of the per-task
difference: "better"/"worse" when the interval excludes 0, else "no significant difference". The
eight published models' ROUGE-L on the same tasks stand beside them so the scale is visible. With
``--rate N`` the embedded LM also rates (A-D, paper Figure 6's scale) every point's answers on a seeded
subset of N tasks: an AUTOMATIC stand-in for the paper's human raters, and a weak one at 135M
parameters (say so wherever it is quoted).

Everything is resumable: a point whose tuning run is complete and whose predictions name the same
model, tasks and settings is not recomputed (run again after a kill). Results: a section per scale in
``benchmarks/results/bench_outcome.md`` (device, date, versions, settings, the wall time of each point),
``bench_outcome_<scale>.csv`` and ``bench_outcome_<scale>.png``. The work folder (``--work``, default
``~/.cache/selfinstruct/bench_outcome/<scale>``) keeps the adapters and predictions; a predictions folder
made elsewhere (``--predictions``, e.g. a GPU machine's) is scored and rated here without any model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

#: Real generated data beside the project, by the kit's dataset names.
SOURCES = {"gpt3-run": "GPT-3 run (original code)", "code-alpaca": "Code Alpaca 2K", "gpteacher": "GPTeacher role-play"}
CURVE_SOURCE = "code-alpaca"


@dataclass(frozen=True)
class Scale:
    """One size of the experiment. ``examples``: training examples per data source (None: all of it);
    ``curve``: Figure 7's sizes on :data:`CURVE_SOURCE` (0 is the base model)."""

    tasks: int | None
    new_tokens: int
    gen_batch: int
    epochs: float
    max_length: int
    examples: int | None
    curve: tuple[int, ...]
    sources: tuple[str, ...] = tuple(SOURCES)
    train_batch: int = 8
    learning_rate: float = 3e-4
    notes: str = ""
    extra: dict = field(default_factory=dict)


SCALES = {
    # plumbing only (the test): a handful of examples, two tasks, a few tokens
    "smoke": Scale(tasks=2, new_tokens=4, gen_batch=2, epochs=1, max_length=256, examples=4, curve=(0, 2, 4)),
    # 2 CPU cores: all 252 tasks, 256 examples of each source, one epoch, Figure 7 to 1,024 examples. Sized
    # from measurements here: 13-28 s per optimizer step of 8 examples, and 5-8 minutes to answer the 252
    # tasks (the long inputs of a few tasks dominate the prompt reading): about 2.5 hours for the 7 points
    "laptop": Scale(tasks=None, new_tokens=64, gen_batch=32, epochs=1, max_length=256, examples=256,
                    curve=(0, 64, 256, 1024)),
    # a GPU: 10x the examples (every example of each source), two epochs (paper A.3), the curve to 1,024
    # (and all of Code Alpaca, the source point), answers twice as long
    "gpu": Scale(tasks=None, new_tokens=128, gen_batch=64, epochs=2, max_length=256, examples=None,
                 curve=(0, 64, 256, 1024)),
}


@dataclass
class Point:
    name: str
    source: str | None  # a path or a kit dataset name; None: the base model
    examples: int | None
    group: str


def grid(scale: Scale, kit_run: Path | None) -> list[Point]:
    """The points of one scale: base, Figure 7's smaller sizes, the sources, the kit's run; a Figure 7
    size equal to the sources' is the source's point."""
    points = [Point("base", None, 0, "base")]
    for n in scale.curve:
        if n and n != scale.examples:
            points.append(Point(f"{CURVE_SOURCE}-{n}", SOURCES[CURVE_SOURCE], n, "data size"))
    for name in scale.sources:
        points.append(Point(name, SOURCES[name], scale.examples, "data source"))
    if kit_run is not None:
        points.append(Point("kit-run", str(kit_run), scale.examples, "data source"))
    return points


def _dataset_path(source: str) -> Path:
    from selfinstruct_utils.data import find_datasets

    if Path(source).exists():
        return Path(source)
    found = find_datasets()
    if source not in found:
        raise FileNotFoundError(f"dataset {source!r} is not in the data folder ($SELFINSTRUCT_DATA)")
    return found[source]


def run_point(point: Point, scale: Scale, work: Path, *, base: str | None, device: str, seed: int,
              progress: bool) -> dict:
    """Tune (unless the base point) and evaluate one point; returns its row (wall seconds included)."""
    from selfinstruct_utils.evaluate import evaluate_user_oriented, predictions_made_by, user_oriented_tasks
    from selfinstruct_utils.tune import (
        TuneConfig,
        load_base,
        load_tuned,
        resolve_base,
        training_records,
        tune,
    )

    config = TuneConfig(epochs=scale.epochs, batch_size=scale.train_batch, max_length=scale.max_length,
                        learning_rate=scale.learning_rate, seed=seed, save_steps=50)
    n_tasks = len(user_oriented_tasks(None, scale.tasks))
    pred_dir = work / "predictions"
    row = {"model": point.name, "group": point.group, "source": point.source or "", "examples": 0,
           "instructions": 0, "steps": 0, "train_s": 0.0, "eval_s": 0.0, "final_loss": float("nan")}
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = None
    if point.source is None:
        identity = resolve_base(base)[1]
    else:
        records = training_records(_dataset_path(point.source), limit=point.examples, seed=seed)
        result = tune(records, work / point.name, base=base, config=config, device=device, progress=progress)
        identity = result.identity
        losses = result.losses()
        row.update(examples=len(records), instructions=len({r["instruction"] for r in records}),
                   steps=result.manifest["steps"], final_loss=float(losses["loss"].iloc[-1]) if len(losses) else float("nan"),
                   data_sha256=result.manifest["data"]["sha256"], adapter_sha256=identity.get("adapter_sha256"))
    row["train_s"] = round(time.perf_counter() - t0, 1)
    t1 = time.perf_counter()
    current = predictions_made_by(pred_dir, point.name, identity, tasks=n_tasks, max_new_tokens=scale.new_tokens)
    row["reused"] = current and (result is None or result.model is None)  # nothing trained or evaluated now
    if not current:
        model = (result if result is not None and result.model is not None else
                 load_tuned(work / point.name, device=device) if result is not None else load_base(base, device=device))
        evaluate_user_oriented(model.model, model.tokenizer, name=point.name, out_dir=pred_dir, tasks=scale.tasks,
                               max_new_tokens=scale.new_tokens, batch_size=scale.gen_batch, identity=model.identity,
                               progress=progress)
    meta = json.loads((pred_dir / f"{point.name}_predictions.meta.json").read_text(encoding="utf-8"))
    row["eval_s"] = round(time.perf_counter() - t1, 1)
    row["eval_generation_s"] = meta.get("seconds")
    row["base_id"] = identity.get("id")
    row["cpu_s"] = round(time.process_time() - cpu0, 1)  # this process's CPU seconds (all its threads)
    row["load_avg"] = round(os.getloadavg()[0], 1)  # the machine's 1-minute load when the point finished
    return row


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed)"


def _logged_rows(path: Path) -> dict[str, dict]:
    """The last logged row of each point in ``rows.jsonl`` (model name -> row)."""
    if not path.is_file():
        return {}
    return {r["model"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r}


def score(pred_dir: Path, rows: pd.DataFrame, *, seed: int) -> pd.DataFrame:
    """ROUGE-L with intervals for every point and the published models, and each point's paired
    difference from ``base``. ``empty``: answers without a word (they score 0, and a tuned model may stop
    at once more or less often than the untuned one); ``rougeL_answered``: the mean over the others."""
    from selfinstruct_utils.analysis.human_eval import load_predictions, rouge_by_model
    from selfinstruct_utils.data import predictions_dir, user_oriented_path
    from selfinstruct_utils.evaluate import mean_interval, rouge_summary

    ours = load_predictions(pred_dir, user_oriented_path(), models=list(rows["model"]))
    tasks = sorted(ours["task"].unique())
    published = load_predictions(predictions_dir(), user_oriented_path())
    published = published[published["task"].isin(tasks)]
    scored = rouge_by_model(pd.concat([ours, published], ignore_index=True))
    summary = rouge_summary(scored, seed=seed)
    per_task = scored.pivot_table(index="task", columns="model", values="rougeL")
    answered = scored["response"].str.split().str.len().fillna(0) > 0
    by_model = scored.assign(empty=~answered, said=scored["rougeL"].where(answered)).groupby("model")
    summary = summary.merge(by_model.agg(empty=("empty", "sum"), rougeL_answered=("said", "mean")).reset_index(),
                            on="model", how="left")
    out = summary.merge(rows, on="model", how="left")
    out["group"] = out["group"].fillna("published (GPT-3 family)")
    diffs = []
    for model in out["model"]:
        if model == "base" or model not in set(rows["model"]):
            diffs.append((np.nan, np.nan, np.nan, ""))
            continue
        d = (per_task[model] - per_task["base"]).to_numpy(dtype=float)
        low, high = mean_interval(d, seed=seed)
        verdict = "better" if low > 0 else "worse" if high < 0 else "no significant difference"
        diffs.append((float(d.mean()), low, high, verdict))
    out[["vs_base", "vs_base_low", "vs_base_high", "verdict"]] = pd.DataFrame(diffs, index=out.index)
    return out


def rate(pred_dir: Path, models: list[str], n_tasks: int, *, seed: int, base_url: str | None = None) -> pd.DataFrame:
    """An LM's A-D grades of ``models``' answers on a seeded subset of ``n_tasks`` tasks: the embedded
    LM, or the server at ``base_url``. Returns :func:`lm_rating_counts`' table with ``rated_tasks`` and
    ``A_or_B`` (the share of graded answers rated A or B)."""
    from selfinstruct_utils.analysis.human_eval import lm_rating_counts, load_predictions, rating_sheet
    from selfinstruct_utils.data import user_oriented_path
    from selfinstruct_utils.rater import lm_rate
    from selfinstruct_utils.session import open_client

    preds = load_predictions(pred_dir, user_oriented_path(), models=models)
    tasks = sorted(np.random.default_rng(seed).choice(sorted(preds["task"].unique()), size=n_tasks, replace=False).tolist())
    sheet, key = rating_sheet(preds, seed=seed, tasks=tasks)
    client, server = open_client("server" if base_url else "embedded", base_url=base_url,
                                 cache_dir=pred_dir.parent / "rater_cache")
    try:
        rated = lm_rate(client, sheet)
    finally:
        if server is not None:
            server.stop()
    counts = lm_rating_counts(rated, key)
    graded = counts[["A", "B", "C", "D"]].sum(axis=1)
    counts["A_or_B"] = ((counts["A"] + counts["B"]) / graded.where(graded > 0)).round(3)
    counts["rated_tasks"] = n_tasks
    return counts


def figure(table: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.32 * len(table) + 2), gridspec_kw={"width_ratios": [3, 2]})
    t = table.sort_values("rougeL")
    colors = {"base": "black", "data source": "tab:blue", "data size": "tab:green"}
    for i, r in enumerate(t.itertuples()):
        c = colors.get(r.group, "tab:gray")
        left.errorbar(r.rougeL, i, xerr=[[r.rougeL - r.low], [r.high - r.rougeL]], fmt="o", color=c, capsize=3)
    left.set_yticks(range(len(t)), t["model"])
    base = table.loc[table["model"] == "base", "rougeL"]
    if len(base):
        left.axvline(float(base.iloc[0]), ls="--", color="black", lw=0.8)
    left.set_xlabel("ROUGE-L F1 vs. reference (mean, 95% bootstrap interval over tasks)")
    left.set_title("gray: the published models; black: untuned; blue/green: LoRA-tuned")
    curve = table[table["group"].isin(["base", "data size"]) | (table["model"] == CURVE_SOURCE)].sort_values("examples")
    right.errorbar(curve["examples"].clip(lower=1), curve["rougeL"],
                   yerr=[curve["rougeL"] - curve["low"], curve["high"] - curve["rougeL"]], fmt="o-", capsize=3,
                   color="tab:green", label="all answers")
    if "rougeL_answered" in curve:
        right.plot(curve["examples"].clip(lower=1), curve["rougeL_answered"], "s--", color="tab:olive",
                   label="answers with a word (empty ones left out)")
        right.legend(loc="upper left", fontsize="small")
    right.set_xscale("log")
    right.set_xlabel("training examples (Code Alpaca; 1 = untuned)")
    right.set_ylabel("ROUGE-L F1")
    right.set_title("Figure 7's question at this scale")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(table: pd.DataFrame, rating: pd.DataFrame | None, header: list[str]) -> str:
    cols = ["model", "group", "examples", "steps", "rougeL", "low", "high", "vs_base", "vs_base_low", "vs_base_high",
            "verdict", "empty", "rougeL_answered", "train_s", "eval_s", "cpu_s", "load_avg"]
    t = table[[c for c in cols if c in table.columns]].copy()
    for c in ("rougeL", "low", "high", "vs_base", "vs_base_low", "vs_base_high", "rougeL_answered"):
        t[c] = t[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    for c in ("examples", "steps"):
        t[c] = t[c].map(lambda v: "" if pd.isna(v) else f"{int(v)}")
    for c in [c for c in ("train_s", "eval_s", "cpu_s") if c in t.columns]:
        t[c] = t[c].map(lambda v: "" if pd.isna(v) else f"{v:.0f}")
    if "load_avg" in t.columns:
        t["load_avg"] = t["load_avg"].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    lines = header + ["", t.to_markdown(index=False)]
    if rating is not None:
        lines += ["", "The embedded LM (SmolLM2-135M) as an AUTOMATIC rater, A-D (paper Figure 6's scale), on "
                  f"{int(rating['rated_tasks'].iloc[0])} seeded tasks; a 135M model is a weak judge:", "",
                  rating.drop(columns=["rated_tasks"]).round(3).to_markdown()]
    return "\n".join(lines) + "\n"


def write_section(path: Path, scale: str, text: str) -> None:
    """Replace this scale's section of ``path`` (``## <scale>: ...``) or add it; other sections stay."""
    from selfinstruct_utils.records import write_atomic

    old = path.read_text(encoding="utf-8") if path.is_file() else "# bench_outcome\n"
    parts = old.split("\n## ")
    kept = [parts[0].rstrip("\n")] + ["## " + p.rstrip("\n") for p in parts[1:] if not p.startswith(f"{scale}:")]
    write_atomic(path, "\n\n".join(kept + [text.rstrip("\n")]) + "\n")


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="laptop")
    p.add_argument("--kit-run", type=Path, default=HERE.parent / "runs" / "demo",
                   help="a kit run (embedded model) to tune on (default runs/demo, from make demo)")
    p.add_argument("--base", default=None, help="base model (default: the embedded GGUF)")
    p.add_argument("--device", default="auto")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--only", nargs="*", default=None, help="run only these points (names)")
    p.add_argument("--predictions", type=Path, default=None,
                   help="score (and rate) a predictions folder made elsewhere; trains nothing")
    p.add_argument("--rate", type=int, default=0, help="tasks the embedded LM rates (0: no rater)")
    p.add_argument("--rater-url", default=None, help="rate with this OpenAI-compatible server instead (…/v1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from selfinstruct_utils.data import CACHE_DIR
    from selfinstruct_utils.runs import package_versions

    scale = SCALES[args.scale]
    work = args.work or CACHE_DIR / "bench_outcome" / args.scale
    work.mkdir(parents=True, exist_ok=True)
    kit_run = args.kit_run if args.kit_run is not None and args.kit_run.exists() else None
    if kit_run is None:
        print(f"NOTE: no kit run at {args.kit_run} (make demo, or --kit-run DIR): the kit-run point is left out")
    points = grid(scale, kit_run)
    if args.only:
        points = [pt for pt in points if pt.name in args.only or pt.name == "base"]
    rows_path = work / "rows.jsonl"
    if args.predictions is None:
        import torch

        device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
            "cpu" if args.device == "auto" else args.device)
        logged = _logged_rows(rows_path)
        for pt in points:
            print(f"== {pt.name}: " + (f"up to {pt.examples or 'all'} examples from {pt.source}" if pt.source else "untuned"), flush=True)
            row = run_point(pt, scale, work, base=args.base, device=device, seed=args.seed, progress=not args.no_progress)
            if row.pop("reused") and pt.name in logged:
                print("   reused (trained and evaluated by an earlier invocation)", flush=True)
                continue  # the logged row keeps the wall times measured when it was made
            print(f"   trained {row['train_s']} s, evaluated {row['eval_s']} s", flush=True)
            with open(rows_path, "a", encoding="utf-8") as f:  # every point's wall time, as it finishes
                f.write(json.dumps({**row, "scale": args.scale, "device": device}) + "\n")
        pred_dir = work / "predictions"
        # every point of this scale's grid with a logged row (one invocation may run only some: --only)
        names = [pt.name for pt in grid(scale, kit_run)]
        logged = _logged_rows(rows_path)
        rows_df = pd.DataFrame([logged[n] for n in names if n in logged])
        rows_df = rows_df[[c for c in rows_df.columns if c not in ("scale", "device")]]
        device_name = (torch.cuda.get_device_name(0) if device == "cuda" else
                       f"CPU, {os.cpu_count()} cores ({platform.machine()}), torch threads {torch.get_num_threads()}")
    else:
        pred_dir = args.predictions
        rows_df = pd.DataFrame(list(_logged_rows(pred_dir.parent / "rows.jsonl").values()))
        device_name = str(rows_df["device"].iloc[0]) if "device" in rows_df else "elsewhere"
        rows_df = rows_df[[c for c in rows_df.columns if c not in ("scale", "device")]]
    table = score(pred_dir, rows_df, seed=args.seed)
    rating = rate(pred_dir, list(rows_df["model"]), args.rate, seed=args.seed,
                  base_url=args.rater_url) if args.rate else None
    meta = json.loads((pred_dir / "base_predictions.meta.json").read_text(encoding="utf-8"))
    on_gpu = "CPU" not in device_name
    label = args.scale if (args.scale == "gpu") == on_gpu else f"{args.scale}-on-{'gpu' if on_gpu else 'cpu'}"
    versions = package_versions()
    header = [
        f"## {label}: {device_name} ({time.strftime('%Y-%m-%d')})",
        "",
        f"Base model: {meta['model'].get('name')} ({meta['model'].get('id', '')[:23]}...), "
        f"{meta['model'].get('parameters', 0):,} parameters; tasks: {meta['tasks']} user-oriented; greedy, "
        f"{scale.new_tokens} new tokens; LoRA r=16 on q/k/v/o, lr {scale.learning_rate}, batch {scale.train_batch}, "
        f"{scale.max_length} tokens, {scale.epochs:g} epoch(s), seed {args.seed}. Examples per source: "
        f"{scale.examples or 'all'}. Packages: " + ", ".join(f"{k} {_version(k)}" for k in ("torch", "transformers", "peft", "trl"))
        + f", Python {versions['python']}.",
        f"Command: `python benchmarks/bench_outcome.py --scale {args.scale}"
        + (f" --kit-run {kit_run}" if kit_run is not None and args.predictions is None else "")
        + (f" --rate {args.rate}" if args.rate else "") + "`. train_s/eval_s: wall seconds of each point "
        "(0 when reused from an earlier invocation's files); cpu_s: the benchmark process's CPU seconds for it; "
        "load_avg: the machine's 1-minute load average when it finished (2 cores: above 2, other work shared them); "
        "empty: answers without a word (they score 0); rougeL_answered: the mean over the other answers.",
    ]
    text = markdown(table, rating, header)
    print(text)
    if not args.no_write:
        args.results.mkdir(parents=True, exist_ok=True)
        write_section(args.results / "bench_outcome.md", label, text)
        table.to_csv(args.results / f"bench_outcome_{label}.csv", index=False)
        if rating is not None:
            rating.to_csv(args.results / f"bench_outcome_{label}_rater.csv")
        figure(table, args.results / f"bench_outcome_{label}.png",
               f"Step 5's outcome, {label}: {meta['tasks']} user-oriented tasks, {device_name}")
    return table


if __name__ == "__main__":
    main()
