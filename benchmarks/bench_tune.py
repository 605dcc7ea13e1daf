"""Speed of step 5 on this machine: LoRA training tokens/s and evaluation (greedy generation) tokens/s.

Run from the project root: ``python benchmarks/bench_tune.py`` (``--steps 2`` for a quick run). Trains
the offline default model (the embedded SmolLM2-135M GGUF, de-quantized to float32) with LoRA r=16 on the
attention projections, on real finetuning examples, and answers user-oriented instructions greedily.
Prints a table and appends it to ``benchmarks/results/bench_tune.md`` under the device's name, so CPU and
GPU figures stand side by side (the same command on a GPU machine records the GPU's).

Reference: the full 82K finetuning data at these settings is 82,612 examples x 2 epochs; the table's last
column extrapolates its training time from the measured speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    import torch

    from selfinstruct_utils.data import DATASETS, data_dir
    from selfinstruct_utils.evaluate import generate, user_oriented_tasks
    from selfinstruct_utils.tune import TuneConfig, load_base, training_records, tune

    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6, help="optimizer steps timed")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--eval-tasks", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()

    root = data_dir(must_contain="self_instruct/seed_tasks.jsonl")
    paper = root / DATASETS["Self-Instruct finetuning data (paper)"].path
    source = paper if paper.is_file() else root / DATASETS["GPT-3 run (original code)"].path
    records = training_records(source, limit=args.steps * args.batch_size, seed=0)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {os.cpu_count()} cores ({platform.machine()})"

    t0 = time.perf_counter()
    load_base(device=device)  # converts the GGUF once (cached); timed separately from training
    load_s = time.perf_counter() - t0
    config = TuneConfig(max_steps=args.steps, batch_size=args.batch_size, max_length=args.max_length, save_steps=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        result = tune(records, Path(tmp) / "run", config=config, device=device, progress=False)
    train_tokens = result.manifest["totals"]["tokens"]
    train_s = result.manifest["totals"]["seconds"]
    tasks = user_oriented_tasks(tasks=args.eval_tasks)
    model = load_base(device=device)
    _, stats = generate(model.model, model.tokenizer, tasks["prompt"].tolist(), max_new_tokens=args.new_tokens,
                        batch_size=8, progress=False)
    per_token = train_s / train_tokens
    full = 2 * 82_612 * (train_tokens / len(records))
    rows = [
        ("device", name),
        ("model", f"{result.manifest['base']['name']} ({result.manifest['base']['parameters']:,} parameters, float32)"),
        ("load (s, cached conversion)", f"{load_s:.1f}"),
        ("training: steps x batch x max tokens", f"{args.steps} x {args.batch_size} x {args.max_length}"),
        ("training tokens/s (non-padding)", f"{train_tokens / train_s:.0f}"),
        ("seconds per optimizer step", f"{train_s / args.steps:.1f}"),
        ("evaluation: tasks x new tokens (greedy, batch 8)", f"{args.eval_tasks} x {args.new_tokens}"),
        ("evaluation new tokens/s", f"{stats.tokens_per_second:.1f}"),
        ("evaluation prompt tokens", f"{stats.prompt_tokens}"),
        ("paper's 82K data, 2 epochs (extrapolated hours)", f"{full * per_token / 3600:.1f}"),
    ]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(table)
    if not args.no_write:
        out = HERE / "results" / "bench_tune.md"
        header = f"## {name} ({time.strftime('%Y-%m-%d')}, torch {torch.__version__})\n\n"
        previous = out.read_text(encoding="utf-8") if out.is_file() else "# bench_tune\n\n"
        out.write_text(previous.rstrip("\n") + "\n\n" + header + table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
