"""Time of each analysis at the paper's scale (52,445 instructions, 82,439 instances), and verb-noun
extraction speed (instructions/s).

Run from the project root: ``python benchmarks/bench_analyses.py`` (``--n 5000`` for a quick run).
Prints a table and writes it to ``benchmarks/results/bench_analyses.md``. Instructions are the real
ones from the shared data, enlarged by recombining their words (see ``_data.enlarged``); the instances
(inputs and outputs: real ones reused cyclically) number 82,439 as in the paper's 82K file, written as a
JSONL file of that format and read back with ``load_dataset`` (the real file is not available here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _data import enlarged  # noqa: E402


def main() -> None:
    import tempfile

    from selfinstruct_utils.analysis import (
        dataset_statistics,
        length_table,
        load_dataset,
        seed_vs_test_overlap,
        similarity_to_seeds,
    )
    from selfinstruct_utils.analysis import verb_noun as vn
    from selfinstruct_utils.data import data_dir, seed_tasks_path, user_oriented_path
    from selfinstruct_utils.records import load_seed_tasks

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=52_445, help="instructions")
    ap.add_argument("--instances", type=int, default=82_439)
    ap.add_argument("--n-process", type=int, default=2, help="spaCy worker processes")
    args = ap.parse_args()

    texts = enlarged(args.n, seed=0)
    alpaca = json.load(open(data_dir() / "generated" / "sahil280114__codealpaca" / "code_alpaca_2k.json"))
    rows = []

    def timed(label, fn):
        t = time.perf_counter()
        result = fn()
        rows.append((label, time.perf_counter() - t))
        return result

    with tempfile.TemporaryDirectory() as tmp:  # the 82K file's format: one instance per line
        path = Path(tmp) / "all_instances_82K.jsonl"
        with open(path, "w") as f:
            for k in range(args.instances):
                ex = alpaca[k % len(alpaca)]
                f.write(json.dumps({"instruction": texts[k % args.n], "input": ex["input"], "output": ex["output"]}) + "\n")
        df = timed(f"load_dataset on the 82K format ({args.instances:,} lines)", lambda: load_dataset(path))
    seeds = [t.instruction for t in load_seed_tasks(seed_tasks_path())]
    user = [json.loads(x)["instruction"] for x in open(user_oriented_path())]
    timed("dataset statistics (Table 1)", lambda: dataset_statistics(df))
    timed("length distributions (Figure 4)", lambda: length_table(df))
    timed("similarity to seeds (Figure 3)", lambda: similarity_to_seeds(texts, seeds))
    timed("seeds vs. user-oriented (Figure 8)", lambda: seed_vs_test_overlap(seeds, user))
    nlp = vn.load_spacy()
    pairs = timed(f"verb-noun, spaCy, {args.n_process} processes (Figure 2)",
                  lambda: vn.verb_noun_pairs(texts, nlp, n_process=args.n_process, progress=False))
    timed("verb-noun top-20 table", lambda: vn.top_verb_noun(pairs))
    per_s = args.n / dict(rows)[f"verb-noun, spaCy, {args.n_process} processes (Figure 2)"]

    lines = [f"| analysis at {args.n:,} instructions, {args.instances:,} instances | seconds |", "|---|---|"]
    lines += [f"| {label} | {sec:.2f} |" for label, sec in rows]
    lines.append(f"| verb-noun extraction speed | {per_s:,.0f} instructions/s |")
    table = "\n".join(lines)
    print(table)
    if args.n >= 52_445:
        out = HERE / "results" / "bench_analyses.md"
        out.write_text(f"# bench_analyses ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)\n\n{table}\n")
        print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
