"""Throughput of steps 1-3 against a latency-simulating OpenAI-compatible server (issue 17).

The server (``tests/fake_openai.py``, run in its own process so its CPU is not counted as the kit's)
answers each request after L seconds, serves at most C at once, and counts how many are in flight.
For each C the kit runs each step with ``--concurrency C`` (step 1 with W = C) and we report:

- achieved requests/s against the ideal C / L, and the mean number in flight at the server;
- the kit's CPU milliseconds per request (this process's user + system CPU time over the step, plus its
  reaped children's: step 1's decision worker process);
- a whole run through all four steps (``--full N``) against C = 256, L = 1 s: wall time beside the
  ideal (requests x L / C) and peak memory (max RSS).

``--engine PATH`` runs the same measurements with the engine found at PATH (e.g. a worktree of an
earlier commit: ``git worktree add /tmp/oldmain 5046d98``), so figures from before and after come from
one run on one machine. Usage::

    python benchmarks/bench_throughput.py --out benchmarks/results/bench_throughput.md
    python benchmarks/bench_throughput.py --engine /tmp/oldmain --only-steps   # the previous engine alone
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "fake_openai.py"


class Server:
    """The fake server in a child process: ``stats()`` and ``reset()`` over its stdin/stdout."""

    def __init__(self, latency: float, capacity: int | None, token_rate: float | None = None):
        cmd = [sys.executable, str(FAKE), "--latency", str(latency)]
        if capacity:
            cmd += ["--capacity", str(capacity)]
        if token_rate:
            cmd += ["--token-rate", str(token_rate)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
        self.base_url = self.proc.stdout.readline().strip()

    def _ask(self, cmd: str) -> str:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def stats(self) -> dict:
        return json.loads(self._ask("stats"))

    def reset(self) -> None:
        self._ask("reset")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _cpu() -> float:
    """This process's CPU seconds plus its reaped children's: step 1's decision worker (a child process,
    reaped before ``generate_instructions`` returns) counts as the kit's; the fake server (a child reaped
    only after the measurements) does not."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _measure(server: Server, fn) -> dict:
    server.reset()
    before = server.stats()["delivered"]
    cpu0, t0 = _cpu(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    st = server.stats()
    n = st["delivered"] - before
    return {"requests": n, "wall": wall, "cpu_ms_per_request": 1000 * cpu / max(1, n), "cpu_share": cpu / wall,
            "mean_in_flight": st["in_flight_seconds"] / wall if wall else 0.0, "max_in_flight": st["max_in_flight"]}


def bench_reference(server: Server, C: int, n: int) -> dict:
    """The machine's ceiling for any Python client: a bare asyncio + aiohttp loop that keeps C requests in
    flight and does nothing with the answers (no kit code)."""
    import asyncio

    import aiohttp

    async def go() -> None:
        body = json.dumps({"model": "m", "prompt": "Task: x\nIs it classification?", "max_tokens": 3}).encode()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=C + 16)) as session:
            sem = asyncio.Semaphore(C)

            async def one() -> None:
                async with sem, session.post(server.base_url + "/completions", data=body,
                                             headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()

            await asyncio.gather(*(one() for _ in range(n)))

    return _measure(server, lambda: asyncio.run(go()))


def bench_steps(C: int, L: float, n_requests: int, work: Path, steps: tuple[str, ...] = ("1", "2", "3"),
                step1_decisions: tuple[str, ...] = ("auto",)) -> dict:
    """Steps 2, 3 and 1 (those in ``steps``) at concurrency C against a server of latency L and capacity C;
    step 1 once per entry of ``step1_decisions`` (``generate_instructions(decisions=...)``; "auto": the
    engine's default, also for an engine without that parameter)."""
    from selfinstruct_utils.data import seed_tasks_path
    from selfinstruct_utils.generate import classify_instructions, generate_instances, generate_instructions
    from selfinstruct_utils.llm import LMClient
    from selfinstruct_utils.records import load_seed_tasks
    from selfinstruct_utils.runs import RunDir

    seeds = load_seed_tasks(seed_tasks_path())
    server = Server(L, C)
    out = {}
    try:
        client = LMClient("m", base_url=server.base_url, api_key="k", max_concurrency=C, timeout=600)
        instructions = [f"Write a short poem about the number {k} and the colour of the sea." for k in range(n_requests)]
        try:
            out["reference (bare aiohttp loop)"] = bench_reference(server, C, n_requests)
        except ImportError:
            pass
        run = RunDir(work / f"c{C}")
        classify_instructions(client, [f"Warm-up task {k}." for k in range(20)], RunDir(work / f"warm{C}"),
                              progress=False)  # imports and first connections are not measured
        if "2" in steps:
            out["step 2"] = _measure(server, lambda: classify_instructions(client, instructions, run, progress=False))
        if "3" in steps:
            out["step 3"] = _measure(server, lambda: generate_instances(client, [(i, False) for i in instructions],
                                                                          run, progress=False))
        # step 1 with W = C: about 3 novel instructions per request
        n_inst = max(3, n_requests * 3 - 3 * C)
        has_decisions = "decisions" in inspect.signature(generate_instructions).parameters  # an older engine: auto only
        for decisions in step1_decisions if "1" in steps else ():
            if decisions != "auto" and not has_decisions:
                continue
            kw = {} if decisions == "auto" else {"decisions": decisions}
            name = "step 1" if decisions == "auto" else f"step 1 ({decisions} decisions)"
            out[name] = _measure(server, lambda kw=kw, d=decisions: generate_instructions(
                client, seeds, RunDir(work / f"s1-c{C}-{d}"), num_instructions=n_inst, request_batch_size=C,
                max_requests=n_requests, progress=False, **kw))
    finally:
        server.close()
    for row in out.values():
        row["ideal_rps"] = C / L
        row["rps"] = row["requests"] / row["wall"]
    return out


def bench_full(n: int, C: int, L: float, work: Path) -> dict:
    """All four steps for n instructions (CLI code path: run_pipeline) at concurrency C, W = C."""
    from selfinstruct_utils.llm import LMClient
    from selfinstruct_utils.pipeline import PipelineConfig, run_pipeline

    server = Server(L, C)
    try:
        client = LMClient("m", base_url=server.base_url, api_key="k", max_concurrency=C, timeout=600)
        config = PipelineConfig(num_instructions=n, request_batch_size=C)
        cpu0, t0 = _cpu(), time.perf_counter()
        results = run_pipeline(client, work / f"full-{n}", config, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        worker_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # before the server is reaped
        st = server.stats()
    finally:
        server.close()
    requests = st["delivered"]
    return {"instructions": n, "concurrency": C, "latency": L, "requests": requests, "wall": wall, "ideal": requests * L / C, "cpu_share": cpu / wall,
            "cpu_ms_per_request": 1000 * cpu / max(1, requests),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_rss_children_mb": worker_rss,
            # each step's wall seconds and LM requests (step 4 sends none)
            "per_step": {name: {"seconds": r.seconds, "requests": r.counts.get("requests", 0)} for name, r in results.items()}}


def markdown(new: dict, old: dict | None, label: str = "previous engine") -> str:
    """The results table: this engine per C and step beside the ``label`` engine's figures (``old``)."""
    rows = ["| C | L (s) | step | requests | requests/s | ideal C/L | % of ideal | mean in flight | kit CPU ms/request "
            f"| kit's share of a core | {label}: requests/s (% of ideal), mean in flight, CPU ms/request |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for C, entry in new["steps"].items():
        L = entry["latency"]
        for step, r in entry.items():
            if step == "latency":
                continue
            olds = (old or {}).get("steps", {}).get(str(C), {})
            # an engine without the decision worker measured step 1 once, as "step 1": beside each variant
            o = olds.get(step) or (olds.get("step 1") if step.startswith("step 1") else None)
            before = (f"{o['rps']:.1f} ({100 * o['rps'] / o['ideal_rps']:.0f}%), {o['mean_in_flight']:.1f}, "
                      f"{o['cpu_ms_per_request']:.2f}") if o else ""
            rows.append(f"| {C} | {L:g} | {step} | {r['requests']} | {r['rps']:.1f} | {r['ideal_rps']:.0f} | "
                        f"{100 * r['rps'] / r['ideal_rps']:.0f}% | {r['mean_in_flight']:.1f} | {r['cpu_ms_per_request']:.2f} | "
                        f"{100 * r['cpu_share']:.0f}% | {before} |")
    out = "\n".join(rows) + "\n"
    f = new.get("full")
    if f:
        out += (f"\nAll four steps, {f['instructions']:,} instructions at C = 256, L = 1 s (W = 256): {f['requests']:,} "
                f"requests in {f['wall']:.0f} s; ideal (requests x L / C) {f['ideal']:.0f} s: {f['wall'] / f['ideal']:.2f}x; "
                f"kit CPU {f['cpu_ms_per_request']:.2f} ms/request ({100 * f['cpu_share']:.0f}% of a core); "
                f"peak RSS {f['peak_rss_mb']:.0f} MB"
                + (f" (step 1's decision worker: {f['peak_rss_children_mb']:.0f} MB)" if f.get("peak_rss_children_mb") else "")
                + ".\n")
        if f.get("per_step"):
            out += "Per step: " + "; ".join(
                f"{name} {r['seconds']:.0f} s" + (f" for {r['requests']:,} requests (ideal {r['requests'] * f['latency'] / f['concurrency']:.0f} s)"
                                                  if r["requests"] else "")
                for name, r in f["per_step"].items()) + ".\n"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", help="a checkout whose selfinstruct_utils to measure (default: this one)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 64, 256])
    ap.add_argument("--latency", type=float, nargs="+", default=None,
                    help="L per C (default: 0.1 s at 8, 0.5 s at 64, 1 s at 256: at most 256 requests/s)")
    ap.add_argument("--requests", type=int, default=None, help="requests per step (default: 6 x C, at least 200)")
    ap.add_argument("--full", type=int, default=0, help="instructions of the all-four-steps run (0: none)")
    ap.add_argument("--steps", nargs="+", choices=["1", "2", "3"], default=["1", "2", "3"], help="steps to measure")
    ap.add_argument("--step1-decisions", nargs="+", choices=["auto", "worker", "inline"],
                    default=["auto", "inline", "worker"],
                    help="step 1 once per entry: where its decisions run (auto: the engine's default, which for W >= 128 "
                         "takes the worker only when a core is spare; an engine without the choice: auto only)")
    ap.add_argument("--json", help="write the results here as JSON")
    ap.add_argument("--previous", help="JSON of the previous engine's run (--engine ... --json), for --out")
    ap.add_argument("--previous-label", default="previous engine", help="the --previous column's name")
    ap.add_argument("--out", help="write the markdown table here")
    args = ap.parse_args()
    if args.engine:
        sys.path.insert(0, str(Path(args.engine).resolve()))
    import selfinstruct_utils

    engine = str(Path(selfinstruct_utils.__file__).parent.parent)
    latencies = args.latency or [{8: 0.1, 64: 0.5, 256: 1.0}.get(c, 1.0) for c in args.concurrency]
    results = {"engine": engine, "steps": {}, "full": None}
    with tempfile.TemporaryDirectory() as tmp:
        for C, L in zip(args.concurrency, latencies, strict=True):
            n = args.requests or max(200, 6 * C)
            res = bench_steps(C, L, n, Path(tmp), tuple(args.steps), tuple(args.step1_decisions))
            results["steps"][C] = {"latency": L, **res}
            for step, row in res.items():
                print(f"C={C:4d} L={L:.2f}s {step:>30}: {row['requests']:5d} requests {row['rps']:7.1f}/s "
                      f"(ideal {row['ideal_rps']:.0f}/s, {100 * row['rps'] / row['ideal_rps']:.0f}%), "
                      f"mean in flight {row['mean_in_flight']:.1f}, kit CPU {row['cpu_ms_per_request']:.2f} ms/request "
                      f"({100 * row['cpu_share']:.0f}% of a core)",
                      flush=True)
        if args.full:
            full = bench_full(args.full, 256, 1.0, Path(tmp))
            results["full"] = full
            print(f"full run: {full['instructions']} instructions, {full['requests']} requests, {full['wall']:.0f} s "
                  f"(ideal {full['ideal']:.0f} s, {full['wall'] / full['ideal']:.2f}x), kit CPU "
                  f"{full['cpu_ms_per_request']:.2f} ms/request ({100 * full['cpu_share']:.0f}% of a core), peak RSS {full['peak_rss_mb']:.0f} MB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    previous = json.loads(Path(args.previous).read_text()) if args.previous else None
    table = markdown(json.loads(json.dumps(results)), previous, args.previous_label)
    print("\n" + table, flush=True)
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
