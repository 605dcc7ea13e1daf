"""ROUGE-L scorer and novelty filter vs rouge-score and the two previous engines, CPU time beside wall time.

Run from the project root (no Makefile needed)::

    python benchmarks/bench_rouge.py            # measure, print, rewrite benchmarks/results/bench_rouge.md
    python benchmarks/bench_rouge.py --check    # measure, compare with the committed table, exit 1 on a regression
    python benchmarks/bench_rouge.py --check --only filter-10k max-5k   # some cases only
    python benchmarks/bench_rouge.py --quick    # a smoke run at small sizes (writes nothing)

``--check`` measures this tree only and flags a case whose CPU time exceeds the committed table's by
more than ``--tolerance`` (default 1.5x), after dividing by the machine factor (rouge-score's CPU time per
pair now / in the table: other load inflates every CPU time). CPU time (``time.process_time``: every thread of the process; ``getrusage(RUSAGE_SELF)``
user+sys beside it) depends much less on other load than wall time, which is shown but not checked.
The previous engines and rouge-score are measured in the same run, so their ratios hold under any load.

Data: every distinct real instruction in the shared data (seed tasks, user-oriented tasks, the
generated runs), enlarged to 52K by recombining real instructions' words (``_data.enlarged``).

Cases (each (case, engine) in a fresh process; the best of ``repeat`` runs; index construction and
tokenization included unless said otherwise):

- ``max-5k``, ``max-52k``: ``max_rougeL`` of 200 real queries against 5,000 / 52,000 texts;
- ``top_k-5k``: ``RougeIndex(pool).top_k(queries, 10)``, 200 x 5,000;
- ``no-shared-52k``: 10 queries sharing no word with 52,000 pre-indexed texts (``RougeIndex.max``);
- ``filter-2k``, ``filter-10k``, ``filter-52k``: the incremental novelty filter (seeds first, then N
  candidates in calls of 64, threshold 0.7); every engine must keep the same instructions;
- ``filter-52k-one-call``: the same 52,000 candidates in one call (bounded memory: peak RSS shown);
- ``step1-4k``: what step 1 decides per request (``generate.decide_candidates`` without parsing): 3
  candidates a call from the seeds on, and the 10 nearest pool texts and mean F1 of each kept one
  (``top_k`` on the pool as it was before it joined); notes give the CPU milliseconds per call.

Engines: this tree (``selfinstruct_utils.rouge`` / ``.novelty``); ``5046d98`` and ``b42ab15``, the
``selfinstruct_utils/rouge.py`` of those commits read with ``git show`` and imported as modules;
rouge-score 0.1.2 (``RougeScorer(["rougeL"]).score``), whose CPU time per pair is measured on a sample
(3 queries x 2,000 texts) and multiplied by the pairs each case compares (a filter: the pairs a
one-by-one loop compares, pool = seeds + kept so far).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from _data import enlarged  # noqa: E402

RESULTS = HERE / "results" / "bench_rouge.md"
OLD_ENGINES = ("5046d98", "b42ab15")

#: case -> (description, pairs-or-size parameter, engines measured, repeats)
CASES = {
    "max-5k": ("max_rougeL, 200 queries x 5,000", None, ("new", "5046d98", "b42ab15"), 5),
    "max-52k": ("max_rougeL, 200 queries x 52,000", None, ("new", "5046d98", "b42ab15"), 2),
    "top_k-5k": ("RougeIndex.top_k(k=10), 200 queries x 5,000", None, ("new", "5046d98", "b42ab15"), 3),
    "no-shared-52k": ("10 queries sharing no word vs 52,000 (index built)", None, ("new", "5046d98", "b42ab15"), 3),
    "filter-2k": ("novelty filter, 2,000 candidates in calls of 64", 2_000, ("new", "5046d98", "b42ab15"), 3),
    "filter-10k": ("novelty filter, 10,000 candidates in calls of 64", 10_000, ("new", "5046d98", "b42ab15"), 2),
    "filter-52k": ("novelty filter, 52,000 candidates in calls of 64", 52_000, ("new", "5046d98"), 1),
    "filter-52k-one-call": ("novelty filter, 52,000 candidates in one call", 52_000, ("new",), 1),
    "step1-4k": ("step 1's decisions: 4,000 candidates, 3 a call, 10 neighbours per kept", 4_000, ("new",), 3),
}
QUICK = {"max-5k": 1_000, "max-52k": 5_000, "top_k-5k": 1_000, "no-shared-52k": 5_000, "filter-2k": 500,
         "filter-10k": 1_000, "filter-52k": 2_000, "filter-52k-one-call": 2_000, "step1-4k": 300}


def seeds() -> list[str]:
    from selfinstruct_utils.data import seed_tasks_path
    from selfinstruct_utils.records import load_seed_tasks

    return [t.instruction for t in load_seed_tasks(seed_tasks_path())]


def candidates(n: int) -> list[str]:
    texts = enlarged(52_000, seed=0)
    random.Random(1).shuffle(texts)
    return texts[:n]


def _engine(name: str):
    """The rouge module of an engine: this tree's, or an old commit's (path in $BENCH_ROUGE_<name>)."""
    if name == "new":
        from selfinstruct_utils import rouge

        return rouge
    spec = importlib.util.spec_from_file_location(f"rouge_{name}", os.environ[f"BENCH_ROUGE_{name}"])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _filter(engine: str, mod):
    """(make pool, decide a list of candidates -> accepted flags) for an engine's novelty filter."""
    if engine == "new":
        from selfinstruct_utils.novelty import NoveltyPool

        return NoveltyPool, lambda pool, batch: [d.accepted for d in pool.add_novel(batch)]
    if engine == "5046d98":
        return mod.RougeIndex, lambda pool, batch: [d.accepted for d in pool.add_novel(batch)]
    return mod.NoveltyPool, lambda pool, batch: [d.accepted for d in pool.add_batch(batch)]


class _Clock:
    """Wall time, process CPU time (all threads) and getrusage(RUSAGE_SELF) user+sys, since start."""

    def __enter__(self):
        self.wall, self.cpu, self.ru = time.perf_counter(), time.process_time(), self._rusage()
        return self

    @staticmethod
    def _rusage() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def __exit__(self, *exc):
        self.wall, self.cpu, self.ru = (time.perf_counter() - self.wall, time.process_time() - self.cpu,
                                        self._rusage() - self.ru)


def run_case(case: str, engine: str, size: int | None = None) -> dict:
    """Measure one (case, engine) once in this process: wall, cpu, rusage seconds, pairs, and for a filter
    kept and peak RSS (MB)."""
    mod = _engine(engine)
    out: dict = {}
    if case.startswith("step1"):
        from selfinstruct_utils.novelty import NoveltyPool

        n = size or CASES[case][1]
        cands = candidates(n)
        kept = pairs = calls = 0
        with _Clock() as clock:
            pool = NoveltyPool(seeds())
            for lo in range(0, n, 3):
                n_before = len(pool)
                calls += 1
                pairs += 3 * n_before
                accepted = [c for c, d in zip(cands[lo : lo + 3], pool.add_novel(cands[lo : lo + 3]), strict=True)
                            if d.accepted]
                for j, c in enumerate(accepted):
                    pool.index.top_k([c], 10, upto=n_before + j)
                kept += len(accepted)
        out.update(kept=kept, calls=calls, max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    elif case.startswith("filter"):
        n = size or CASES[case][1]
        batch = n if case.endswith("one-call") else 64
        cands = candidates(n)
        make, decide = _filter(engine, mod)
        kept = pairs = 0
        with _Clock() as clock:
            pool = make(seeds())
            for lo in range(0, n, batch):
                size_now = len(pool)
                for accepted in decide(pool, cands[lo : lo + batch]):
                    pairs += size_now  # the pairs a one-by-one loop compares (pruned pairs included)
                    size_now += accepted
                    kept += accepted
        out.update(kept=kept, max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    else:
        m = size or (52_000 if case.endswith("52k") else 5_000)
        pool = enlarged(m, seed=2)
        if case == "no-shared-52k":
            qs = [f"zzyzx{k} qwvfj{k} plmokn{k}" for k in range(10)]
            index = mod.RougeIndex(pool)
            index.max(["warm up"])
            with _Clock() as clock:
                for q in qs:
                    assert index.max([q]) == [0.0]
        else:
            qs = random.Random(3).sample(pool[: min(4000, m)], 200)
            with _Clock() as clock:
                if case.startswith("max"):
                    got = mod.max_rougeL(qs, pool)
                else:
                    got = [s for nb, _ in mod.RougeIndex(pool).top_k(qs, 10) for _, s in nb]
            out["checksum"] = repr(sum(got))
        pairs = len(qs) * m
    out.update(wall=clock.wall, cpu=clock.cpu, rusage=clock.ru, pairs=pairs)
    return out


def rouge_score_rate() -> dict:
    """rouge-score's CPU and wall seconds per pair, on 3 real queries x 2,000 texts."""
    from rouge_score import rouge_scorer

    pool = enlarged(5_000, seed=2)
    sample = random.Random(4).sample(pool, 2_000)
    qs = random.Random(3).sample(pool[:4000], 3)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    with _Clock() as clock:
        for q in qs:
            for p in sample:
                scorer.score(q, p)
    return {"cpu": clock.cpu / 6_000, "wall": clock.wall / 6_000}


def in_subprocess(fn: str, *args, env: dict | None = None) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import bench_rouge; "
            f"print(json.dumps(bench_rouge.{fn}(*{list(args)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{fn}{args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def old_engine_files(tmp: Path) -> dict[str, str]:
    """$BENCH_ROUGE_<commit> -> the commit's selfinstruct_utils/rouge.py written under ``tmp`` (none
    when git or the commit is unavailable)."""
    env = {}
    for commit in OLD_ENGINES:
        src = subprocess.run(["git", "show", f"{commit}:selfinstruct_utils/rouge.py"], capture_output=True,
                             text=True, cwd=ROOT)
        if src.returncode == 0:
            path = tmp / f"rouge_{commit}.py"
            path.write_text(src.stdout)
            env[f"BENCH_ROUGE_{commit}"] = str(path)
    return env


def measure(cases: list[str], quick: bool, old_engines: bool = True) -> tuple[dict, dict]:
    """{case: {engine: best result}} and rouge-score's rate (the best of 3 samples)."""
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **(old_engine_files(Path(tmp)) if old_engines else {})}
        rates = [in_subprocess("rouge_score_rate", env=env) for _ in range(1 if quick else 3)]
        rate = {key: min(r[key] for r in rates) for key in ("cpu", "wall")}
        for case in cases:
            _, _, engines, repeat = CASES[case]
            results[case] = {}
            for engine in engines:
                if engine != "new" and f"BENCH_ROUGE_{engine}" not in env:
                    continue
                runs = [in_subprocess("run_case", case, engine, QUICK[case] if quick else None, env=env)
                        for _ in range(1 if quick else repeat)]
                best = min(runs, key=lambda r: r["cpu"])
                best["wall"] = min(r["wall"] for r in runs)
                results[case][engine] = best
                print(f"  {case:20s} {engine:8s} wall {best['wall']:8.3f} s  cpu {best['cpu']:8.3f} s", file=sys.stderr, flush=True)
            new = results[case]["new"]
            for engine, r in results[case].items():  # the same work: same decisions, same scores
                for key in ("kept", "pairs", "checksum"):
                    if key in new and key in r:
                        assert r[key] == new[key], (case, engine, key, r[key], new[key])
    return results, rate


def table(results: dict, rate: dict) -> str:
    header = ("case", "measurement", "wall s", "CPU s (process_time / getrusage)", "rouge-score CPU s (est.)",
              "speedup vs rouge-score (CPU / wall)", "5046d98 CPU s (wall)", "b42ab15 CPU s (wall)", "notes")
    rows = []
    for case, by_engine in results.items():
        new = by_engine["new"]
        ref_cpu, ref_wall = new["pairs"] * rate["cpu"], new["pairs"] * rate["wall"]
        old = [f"{by_engine[e]['cpu']:.3f} ({by_engine[e]['wall']:.3f})" if e in by_engine else "" for e in OLD_ENGINES]
        notes = f"kept {new['kept']:,}, peak RSS {new['max_rss_mb']:,.0f} MB" if "kept" in new else f"{new['pairs']:,} pairs"
        if "calls" in new:
            notes = f"kept {new['kept']:,}, {1000 * new['cpu'] / new['calls']:.2f} ms CPU per call"
        rows.append((case, CASES[case][0], f"{new['wall']:.3f}", f"{new['cpu']:.3f} / {new['rusage']:.3f}",
                     f"{ref_cpu:,.1f}", f"{ref_cpu / new['cpu']:,.0f}x / {ref_wall / new['wall']:,.0f}x", *old, notes))
    widths = [max(len(str(r[i])) for r in [*rows, header]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def committed(path: Path = RESULTS) -> tuple[dict[str, float], float | None]:
    """The committed table's CPU seconds per case, and its rouge-score CPU microseconds per pair."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    cpu = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] in CASES:
            cpu[cells[0]] = float(cells[3].split("/")[0])
    m = re.search(r"rouge-score: ([0-9.]+) µs CPU per pair", text)
    return cpu, float(m.group(1)) if m else None


def check(results: dict, rate: dict, tolerance: float) -> int:
    """Print each case's CPU time against the committed table; 1 when any exceeds it by > tolerance.

    The ratio is divided by the machine factor (rouge-score's CPU time per pair now / in the committed
    table, measured in both runs), so that a loaded or slower machine, which inflates every CPU time,
    does not read as a regression (measured here: the factor moved 0.99x-1.6x with other load).
    """
    reference, ref_rate = committed()
    factor = rate["cpu"] * 1e6 / ref_rate if ref_rate else 1.0
    print(f"machine factor {factor:.2f} (rouge-score CPU per pair {rate['cpu'] * 1e6:.1f} µs now, "
          f"{ref_rate or float('nan'):.1f} µs in the committed table)")
    failed = 0
    for case, by_engine in results.items():
        now = by_engine["new"]["cpu"]
        if case not in reference:
            print(f"{case:20s} CPU {now:8.3f} s   (no committed figure)")
            continue
        ratio = now / reference[case]
        bad = ratio / factor > tolerance
        failed += bad
        print(f"{case:20s} CPU {now:8.3f} s   committed {reference[case]:8.3f} s   {ratio:5.2f}x   "
              f"{ratio / factor:5.2f}x for the machine   {f'REGRESSION (> {tolerance:.2f}x)' if bad else 'ok'}")
    print(f"{failed} regression(s)" if failed else "no regression")
    return 1 if failed else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run; writes nothing)")
    ap.add_argument("--check", action="store_true", help="compare CPU time with the committed table; exit 1 on a regression")
    ap.add_argument("--tolerance", type=float, default=1.5, help="--check: allowed CPU ratio to the committed figure")
    ap.add_argument("--only", nargs="+", choices=list(CASES), help="measure these cases only")
    ap.add_argument("--with-old", action="store_true", help="--check: measure the previous engines too")
    args = ap.parse_args()
    results, rate = measure(args.only or list(CASES), args.quick, old_engines=args.with_old or not args.check)
    text = table(results, rate)
    print(text)
    if args.check:
        sys.exit(check(results, rate, args.tolerance) if not args.quick else 0)
    if not args.quick and not args.only:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(
            f"# bench_rouge ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
            f"rouge-score: {rate['cpu'] * 1e6:.1f} µs CPU per pair)\n\n"
            "Measured by `python benchmarks/bench_rouge.py` (no Makefile needed); "
            "`python benchmarks/bench_rouge.py --check` measures again and exits 1 when a case's CPU time exceeds "
            "the CPU s column below by more than 1.5x once divided by the machine factor (rouge-score's CPU per pair "
            "now / in this header) (`--tolerance`; `--only CASE ...` for some cases). "
            "CPU time counts every thread of the process; the engines use all cores, so it exceeds wall time "
            "on an idle machine. The columns 5046d98 and b42ab15 are those commits' rouge.py measured in the "
            "same run. Each (case, engine) runs in a fresh process; best of several runs for the short cases.\n\n"
            f"{text}\n", encoding="utf-8")
        print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
