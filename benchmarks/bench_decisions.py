"""Step 1's decisions per request at the pool sizes of a large run: this engine one request at a time
(``Decisions.decide``) and the answers at hand together (``Decisions.decide_many``, runs of 64 as a busy
run delivers them), beside an older engine's ``Decisions.decide`` measured in the same run.

Run from the project root::

    git archive 68baaa0 selfinstruct_utils | tar -x -C /tmp/oldeng     # an older engine (optional)
    python benchmarks/bench_decisions.py --old /tmp/oldeng [--pools 1000 10000 42000] [--requests 200]

Each (pool size, mode) runs in a fresh process. The pool is the 175 seed tasks plus ``pool`` instructions
replayed as kept (real instructions, then recombinations of their words: ``_data.enlarged``); then
``--requests`` completions of 3 more such instructions each (the rule filters, the novelty filter against
the pool, the 10 nearest pool instructions and mean ROUGE-L of each kept one) are decided, and only that
is timed (CPU seconds of the process; the worker of a live run is one such process). Every mode must give
the same records (their SHA-256 is compared). The table is printed in markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MODES = {"one": "this engine, one request at a time", "together": "this engine, runs of 64 (decide_many)",
         "old": "older engine, one request at a time"}


def _answers(pool: int, n: int) -> tuple[list[list[str]], list[tuple[int, str, str]]]:
    """The replayed pool (3 instructions a request) and n completions of 3 instructions each."""
    from _data import enlarged

    texts = [" ".join(t.split()) for t in enlarged(pool + 3 * n, seed=4)]
    replay = [texts[k : k + 3] for k in range(0, pool, 3)]
    timed = texts[pool:]
    answers = [(len(replay) + r, f" {a}\n10. {b}\n11. {c}", "stop") for r, (a, b, c) in
               enumerate(zip(timed[0::3], timed[1::3], timed[2::3], strict=True))]
    return replay, answers


def one(engine: str, pool: int, n: int, mode: str) -> dict:
    """Measure one (pool, mode) in this process."""
    sys.path.insert(0, engine)
    sys.path.insert(1, str(HERE))
    import scipy.sparse  # noqa: F401 -- an engine that imports it lazily must not pay for it in the timing

    from selfinstruct_utils.data import seed_tasks_path
    from selfinstruct_utils.deciding import DecisionRules, Decisions
    from selfinstruct_utils.records import load_seed_tasks

    seeds = [t.instruction for t in load_seed_tasks(seed_tasks_path())]
    replay, answers = _answers(pool, n)
    decisions = Decisions(seeds, DecisionRules(num_instructions=10**9, W=256), replay)
    cpu, wall = time.process_time(), time.perf_counter()
    if mode == "together":
        out = [d for lo in range(0, n, 64) for d in decisions.decide_many(answers[lo : lo + 64])]
    else:
        out = [decisions.decide(*a) for a in answers]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    kept = sum(len(o[1]) for o in out if o)
    digest = hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()[:16]
    return {"pool": len(decisions.pool) - kept, "cpu_ms": 1000 * cpu / n, "wall_ms": 1000 * wall / n,
            "kept": kept, "sha256": digest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", help="a folder holding an older engine's selfinstruct_utils (its 'old' rows)")
    ap.add_argument("--pools", type=int, nargs="+", default=[1000, 10000, 42000])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--one", nargs=4, metavar=("ENGINE", "POOL", "N", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        engine, pool, n, mode = args.one
        print(json.dumps(one(engine, int(pool), int(n), mode)))
        return
    modes = ["one", "together"] + (["old"] if args.old else [])
    results = []
    for pool in args.pools:
        for mode in modes:
            engine = str(Path(args.old).resolve()) if mode == "old" else str(ROOT)
            proc = subprocess.run([sys.executable, "-P", __file__, "--one", engine, str(pool), str(args.requests), mode],
                                  capture_output=True, text=True, check=True)
            r = {"mode": mode, **json.loads(proc.stdout.strip().splitlines()[-1])}
            results.append(r)
            print(f"pool {r['pool']:>6,}  {MODES[mode]:<40} {r['cpu_ms']:7.2f} ms CPU/request ({r['wall_ms']:.2f} ms wall), "
                  f"kept {r['kept']}, records {r['sha256']}", flush=True)
    print("\n| pool | " + " | ".join(f"{MODES[m]}: CPU ms/request" for m in modes) + " | same records |")
    print("|---|" + "---|" * (len(modes) + 1))
    for i in range(len(args.pools)):
        rows = results[i * len(modes) : (i + 1) * len(modes)]
        same = "yes" if len({r["sha256"] for r in rows}) == 1 else "NO"
        print(f"| {rows[0]['pool']:,} | " + " | ".join(f"{r['cpu_ms']:.2f}" for r in rows) + f" | {same} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
