"""Time of each analysis at 52K instructions, and verb-noun extraction speed (instructions/s).

Run from the project root: ``python benchmarks/bench_analyses.py`` (``--n 5000`` for a quick run).
Prints a table and writes it to ``benchmarks/results/bench_analyses.md``. Instructions are the real
ones from the shared data, enlarged by recombining their words (see ``_data.enlarged``); outputs and
inputs for the statistics are real ones reused cyclically.
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
    import pandas as pd

    from selfinstruct_utils.analysis import (
        dataset_statistics,
        length_table,
        seed_vs_test_overlap,
        similarity_to_seeds,
    )
    from selfinstruct_utils.analysis import verb_noun as vn
    from selfinstruct_utils.data import data_dir, seed_tasks_path, user_oriented_path
    from selfinstruct_utils.records import load_seed_tasks

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=52_000)
    ap.add_argument("--n-process", type=int, default=2, help="spaCy worker processes")
    args = ap.parse_args()

    texts = enlarged(args.n, seed=0)
    alpaca = json.load(open(data_dir() / "generated" / "sahil280114__codealpaca" / "code_alpaca_2k.json"))
    df = pd.DataFrame({
        "instruction": texts,
        "input": [alpaca[k % len(alpaca)]["input"] for k in range(len(texts))],
        "output": [alpaca[k % len(alpaca)]["output"] for k in range(len(texts))],
        "is_classification": [k % 5 == 0 for k in range(len(texts))],
        "source": "bench",
    })
    seeds = [t.instruction for t in load_seed_tasks(seed_tasks_path())]
    user = [json.loads(x)["instruction"] for x in open(user_oriented_path())]
    rows = []

    def timed(label, fn):
        t = time.perf_counter()
        result = fn()
        rows.append((label, time.perf_counter() - t))
        return result

    timed("dataset statistics (Table 1)", lambda: dataset_statistics(df))
    timed("length distributions (Figure 4)", lambda: length_table(df))
    timed("similarity to seeds (Figure 3)", lambda: similarity_to_seeds(texts, seeds))
    timed("seeds vs. user-oriented (Figure 8)", lambda: seed_vs_test_overlap(seeds, user))
    nlp = vn.load_spacy()
    pairs = timed(f"verb-noun, spaCy, {args.n_process} processes (Figure 2)",
                  lambda: vn.verb_noun_pairs(texts, nlp, n_process=args.n_process, progress=False))
    timed("verb-noun top-20 table", lambda: vn.top_verb_noun(pairs))
    per_s = args.n / dict(rows)[f"verb-noun, spaCy, {args.n_process} processes (Figure 2)"]

    lines = [f"| analysis at {args.n:,} instructions | seconds |", "|---|---|"]
    lines += [f"| {label} | {sec:.2f} |" for label, sec in rows]
    lines.append(f"| verb-noun extraction speed | {per_s:,.0f} instructions/s |")
    table = "\n".join(lines)
    print(table)
    if args.n >= 52_000:
        out = HERE / "results" / "bench_analyses.md"
        out.write_text(f"# bench_analyses ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)\n\n{table}\n")
        print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
