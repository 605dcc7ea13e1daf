"""ROUGE-L engine vs rouge-score, side by side, on real instructions (issue: 1000x, 52K filter < 2 min).

Run from the project root: ``python benchmarks/bench_rouge.py`` (``--quick`` for a smoke run).
Prints a table and writes it to ``benchmarks/results/bench_rouge.md``.

Data: every distinct real instruction in the shared data (seed tasks, user-oriented tasks, the
generated runs), enlarged to 52K by recombining real instructions' words (``_data.enlarged``: each
word of a random real instruction is kept or, with probability 0.5, replaced by a random real word).

Measured:
1. one-vs-many pairs/s: one query against a pre-tokenized pool (the engine's ``RougeIndex``) and the
   same through ``max_rougeL`` (tokenization included), vs rouge-score's ``RougeScorer.score`` loop;
2. the full incremental novelty filter (seeds first, then N candidates in batches of 64, threshold
   0.7) for N = 2K, 10K, 52K; rouge-score runs the same loop only at sizes it can finish (checked to
   keep the same instructions), and its time at larger N is extrapolated from the number of pairs a
   one-by-one loop compares there, with the time-vs-pairs exponent measured between those sizes;
3. peak memory (max RSS of a fresh process running each filter size).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _data import enlarged  # noqa: E402


def seeds() -> list[str]:
    from selfinstruct_utils.data import seed_tasks_path
    from selfinstruct_utils.records import load_seed_tasks

    return [t.instruction for t in load_seed_tasks(seed_tasks_path())]


def candidates(n: int) -> list[str]:
    texts = enlarged(52_000, seed=0)
    random.Random(1).shuffle(texts)
    return texts[:n]


def engine_filter(n: int, batch: int = 64) -> dict:
    from selfinstruct_utils.rouge import RougeIndex

    cands = candidates(n)
    t = time.perf_counter()
    pool = RougeIndex(seeds())
    kept = pairs = 0
    for lo in range(0, n, batch):
        size = len(pool)
        for d in pool.add_novel(cands[lo : lo + batch]):
            pairs += size  # the pairs a one-by-one loop compares (pruned pairs included)
            size += d.accepted
            kept += d.accepted
    return {"seconds": time.perf_counter() - t, "kept": kept, "pairs": pairs,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def reference_filter(n: int) -> dict:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool = seeds()
    t = time.perf_counter()
    kept = 0
    pairs = 0
    for c in candidates(n):
        pairs += len(pool)
        if max(scorer.score(c, p)["rougeL"].fmeasure for p in pool) > 0.7:
            continue
        pool.append(c)
        kept += 1
    return {"seconds": time.perf_counter() - t, "kept": kept, "pairs": pairs}


def in_subprocess(fn: str, n: int) -> dict:
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_rouge, json; print(json.dumps(bench_rouge.{fn}({n})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def one_vs_many(pool_size: int, queries: int, ref_pool: int) -> dict:
    from rouge_score import rouge_scorer

    from selfinstruct_utils.rouge import RougeIndex, max_rougeL

    pool = enlarged(pool_size, seed=2)
    qs = random.Random(3).sample(pool[:4000], queries)
    ref_sample = random.Random(4).sample(pool, ref_pool)  # same length distribution as the whole pool
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    t = time.perf_counter()
    for q in qs[:2]:
        for p in ref_sample:
            scorer.score(q, p)
    ref = 2 * ref_pool / (time.perf_counter() - t)
    index = RougeIndex(pool)
    index.max(qs[:1])  # warm-up
    t = time.perf_counter()
    for q in qs[:10]:
        index.max([q])
    single = 10 * pool_size / (time.perf_counter() - t)
    t = time.perf_counter()
    index.max(qs)
    batched = queries * pool_size / (time.perf_counter() - t)
    t = time.perf_counter()
    max_rougeL(qs, pool)
    e2e = queries * pool_size / (time.perf_counter() - t)
    t = time.perf_counter()
    for k in range(10):
        index.max([f"zzyzx{k} qwvfj{k} plmokn{k}"])  # a query sharing no word with the pool
    no_shared_ms = (time.perf_counter() - t) / 10 * 1000
    return {"rouge_score": ref, "single": single, "batched": batched, "max_rougeL": e2e, "no_shared_ms": no_shared_ms}


#: The figures of the engine before this version (benchmarks/results/bench_rouge.md of 2026-11-21, same
#: data and machine): the incremental filter scored every length-compatible pair in C++, and a query
#: sharing no word with the pool was rescored column by column in Python.
BEFORE = {
    "novelty filter, 2,000 candidates (s)": "0.2",
    "novelty filter, 10,000 candidates (s)": "2.8",
    "novelty filter, 52,000 candidates (s)": "58.0",
    "one query sharing no word vs 52,000 (ms)": "171",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = ap.parse_args()
    sizes = [500, 2000] if args.quick else [2_000, 10_000, 52_000]
    ref_sizes = [100, 200] if args.quick else [300, 600]
    rows = []

    ovm = one_vs_many(5_000 if args.quick else 52_000, 20 if args.quick else 100, 1_000 if args.quick else 3_000)
    n_pool = 5_000 if args.quick else 52_000
    rows.append((f"one query vs {n_pool:,}, one call per query (pairs/s)", f"{ovm['rouge_score']:,.0f}", f"{ovm['single']:,.0f}",
                 f"{ovm['single'] / ovm['rouge_score']:,.0f}x"))
    rows.append((f"100 queries vs {n_pool:,} in one call, pre-tokenized (pairs/s)", f"{ovm['rouge_score']:,.0f}",
                 f"{ovm['batched']:,.0f}", f"{ovm['batched'] / ovm['rouge_score']:,.0f}x"))
    rows.append(("max_rougeL, tokenization included (pairs/s)", f"{ovm['rouge_score']:,.0f}", f"{ovm['max_rougeL']:,.0f}",
                 f"{ovm['max_rougeL'] / ovm['rouge_score']:,.0f}x"))
    rows.append((f"one query sharing no word vs {n_pool:,} (ms)", f"{n_pool / ovm['rouge_score'] * 1000:,.0f}",
                 f"{ovm['no_shared_ms']:.1f}", f"{n_pool / ovm['rouge_score'] * 1000 / ovm['no_shared_ms']:,.0f}x"))

    refs = {n: in_subprocess("reference_filter", n) for n in ref_sizes}
    (n1, r1), (n2, r2) = sorted(refs.items())
    # rouge-score's loop costs ~ the pairs it compares (pool = seeds + kept so far, so pairs grow
    # ~ n^2 only once the kept instructions outnumber the seeds): extrapolate in pairs, with the
    # exponent measured between the two sizes it finished.
    exponent = math.log(r2["seconds"] / r1["seconds"]) / math.log(r2["pairs"] / r1["pairs"])
    for n, r in sorted(refs.items()):
        eng = in_subprocess("engine_filter", n)
        assert eng["kept"] == r["kept"] and eng["pairs"] == r["pairs"], (n, eng, r)  # same decisions, same pool
        rows.append((f"novelty filter, {n:,} candidates (s)", f"{r['seconds']:.1f} (measured)", f"{eng['seconds']:.3f}",
                     f"{r['seconds'] / eng['seconds']:,.0f}x"))
    for n in sizes:
        eng = in_subprocess("engine_filter", n)
        ref_s = r2["seconds"] * (eng["pairs"] / r2["pairs"]) ** exponent
        rows.append((f"novelty filter, {n:,} candidates (s)", f"{ref_s:,.0f} (extrapolated: {eng['pairs']:,} pairs^{exponent:.2f})",
                     f"{eng['seconds']:.1f} (kept {eng['kept']:,}, peak RSS {eng['max_rss_mb']:,.0f} MB)",
                     f"{ref_s / eng['seconds']:,.0f}x"))

    rows = [(*r, BEFORE.get(r[0], "")) for r in rows]
    header = ("measurement", "rouge-score", "selfinstruct_utils.rouge", "speedup", "engine before (2026-11-21)")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(5)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        out = HERE / "results" / "bench_rouge.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(f"# bench_rouge ({time.strftime('%Y-%m-%d')}, {__import__('os').cpu_count()} cores)\n\n{table}\n")
        print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
