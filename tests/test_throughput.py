"""Driving a server at its capacity (issue 17) and counting its tokens exactly (issue 18.1), on loopback
fakes: a continuous window in steps 2-3, step 1's lag schedule (the same files whatever order answers
come in, and after kills), timeouts from max_tokens, usage equal to what a counting server delivered."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import HANG_GUARD_S
from fake_openai import FakeOpenAI, bench_text, shuffled_latency

from selfinstruct_utils.generate import classify_instructions, generate_instances, generate_instructions
from selfinstruct_utils.llm import TABLE4, LMClient
from selfinstruct_utils.pipeline import PipelineConfig, run_pipeline
from selfinstruct_utils.records import load_seed_tasks
from selfinstruct_utils.runs import RunDir

STEP_FILES = ["instruction_requests.jsonl", "machine_generated_instructions.jsonl", "is_clf_or_not.jsonl",
              "machine_generated_instances.jsonl", "finetuning/prompt_completion.jsonl"]


@pytest.fixture(scope="module")
def seeds(data):
    return load_seed_tasks(data / "self_instruct" / "seed_tasks.jsonl")


# --- steps 2-3: a continuous window -----------------------------------------------------------------------
def _until_in_flight(fake_box: list, c: int, then=lambda body: 0.0):
    """A latency function: every answer waits (at most HANG_GUARD_S) until the server has once seen ``c`` requests in
    flight at the same moment, then takes ``then(body)`` seconds. So "C in flight" is observed whatever the
    machine's load, and never more than C can be (the count is exact)."""
    seen = threading.Event()

    def latency(body: dict) -> float:
        deadline = time.monotonic() + HANG_GUARD_S
        while not seen.is_set() and time.monotonic() < deadline:
            if fake_box[0].in_flight >= c:
                seen.set()
            time.sleep(0.002)
        return then(body)

    return latency


def test_steps_2_and_3_keep_c_requests_in_flight_with_no_batch_barrier(tmp_path):
    """The first request is answered only after 31 later ones arrived: with any batch barrier the run would
    stall at the end of the first batch. The server never sees more than C = 4 at once, and sees 4."""
    instructions = [f"Task number {k} to classify." for k in range(40)]
    released = threading.Event()
    first_waited: list[bool] = []

    def latency(body: dict) -> float:
        if "Task number 0 to" in body["prompt"]:
            first_waited.append(released.wait(HANG_GUARD_S))  # False: the window never got 31 requests past it
            return 0.0
        if len(fake.requests) >= 32:
            released.set()
        return 0.005

    box: list = []
    with FakeOpenAI(text=" No", latency=_until_in_flight(box, 4, latency)) as fake:
        box.append(fake)
        client = LMClient("m", base_url=fake.base_url, api_key="k", max_concurrency=4)
        run = RunDir(tmp_path / "run")
        res = classify_instructions(client, instructions, run, progress=False)
        assert first_waited == [True], "a batch barrier held the window back"
        assert fake.max_in_flight == 4 and len(fake.requests) == 40
        assert fake.answer_order[-1] != 0 or fake.answer_order.index(0) > 30
    assert [r["instruction"] for r in run.read("classification")] == instructions  # input order
    assert res.counts["classified"] == 40
    # one truth for usage: the in-memory counters equal the usage log, one line per answer
    logged = [u for u in run.read("usage") if u["step"] == "classification"]
    assert sorted(u["request_idx"] for u in logged) == list(range(40))
    mem = client.usage["classification"]
    assert (mem.requests, mem.prompt_tokens, mem.completion_tokens) == (
        sum(u["requests"] for u in logged), sum(u["prompt_tokens"] for u in logged),
        sum(u["completion_tokens"] for u in logged)) == (40, 440, 80)
    # step 3 through the same window: C in flight, records in order
    box = []
    with FakeOpenAI(text=bench_text, latency=_until_in_flight(box, 8, shuffled_latency(0.0, 0.03, seed=3))) as fake:
        box.append(fake)
        client = LMClient("m", base_url=fake.base_url, api_key="k", max_concurrency=8)
        generate_instances(client, [(i, False) for i in instructions], run, progress=False)
        assert fake.max_in_flight == 8 and fake.answer_order != sorted(fake.answer_order)
    assert [r["instruction"] for r in run.read("instances")] == instructions


# --- step 1: the lag schedule, whatever the order of the answers --------------------------------------------
class RoundClient:
    """A client that answers whole rounds (the interface of a batch API client: ``batch_api = True``)."""

    batch_api = True

    def __init__(self, inner: LMClient):
        self.inner = inner
        self.price_per_million = inner.price_per_million
        self.max_concurrency = inner.max_concurrency
        self.calls: list[tuple[str, list[int]]] = []

    def complete(self, prompts, params, *, step, request_ids, seeds=None):
        self.calls.append((step, list(request_ids)))
        return self.inner.complete(prompts, params, step=step, request_ids=request_ids, seeds=seeds)


def _step1(seeds, folder: Path, *, latency=0.0, concurrency=6, rounds=False, scheduler="lag", n=30, decisions="auto"):
    with FakeOpenAI(text=bench_text, latency=latency) as fake:
        client = LMClient("m", base_url=fake.base_url, api_key="k", max_concurrency=concurrency)
        if rounds:
            client = RoundClient(client)
        run = RunDir(folder)
        generate_instructions(client, seeds, run, num_instructions=n, request_batch_size=6, progress=False,
                              scheduler=scheduler, record_similar=3, decisions=decisions)
        order = list(fake.answer_order)
    files = tuple((folder / f).read_bytes() for f in STEP_FILES[:2])
    return files, order, client


def test_step1_gives_the_same_files_whatever_order_the_answers_arrive_in(seeds, tmp_path):
    reference, order, _ = _step1(seeds, tmp_path / "sequential", concurrency=1)
    assert order == sorted(order)
    for k, seed in enumerate((1, 2)):
        files, order, _ = _step1(seeds, tmp_path / f"shuffled{k}", latency=shuffled_latency(0.0, 0.05, seed=seed))
        assert order != sorted(order)  # the answers really came back out of order
        assert files == reference
    files, _, client = _step1(seeds, tmp_path / "rounds", rounds=True)
    assert files == reference  # a batch API client: rounds of W, the same request -> pool mapping
    assert [ids for _, ids in client.calls][:2] == [list(range(6)), list(range(6, 12))]
    log = [json.loads(x) for x in reference[0].splitlines()]
    assert [r["pool_upto_request"] for r in log] == [r - 6 for r in range(len(log))]
    # the schedule of earlier runs (batches of W) is kept too, and is also order-independent
    batch, _, _ = _step1(seeds, tmp_path / "batch", scheduler="batch", latency=shuffled_latency(0.0, 0.05, seed=4))
    batch_rounds, _, _ = _step1(seeds, tmp_path / "batch-rounds", scheduler="batch", rounds=True)
    assert batch == batch_rounds and batch != reference
    assert all(json.loads(x)["batch_idx"] == json.loads(x)["request_idx"] // 6 for x in batch[0].splitlines())


@pytest.mark.parametrize("decisions", ["inline", "worker"])
def test_step1_interrupted_after_any_request_resumes_to_the_same_files(seeds, tmp_path, decisions):
    """Stop step 1 after k logged requests (answers still in flight are abandoned, a decision worker is
    killed), for every k, and run it again: the files equal an uninterrupted inline run's, whatever order
    the answers arrived in."""

    class Stop(Exception):
        pass

    reference, _, _ = _step1(seeds, tmp_path / "ref", concurrency=1, n=12)
    n_requests = len(reference[0].splitlines())
    for k in range(1, n_requests):
        folder = tmp_path / f"stop{k}"
        with FakeOpenAI(text=bench_text, latency=shuffled_latency(0.0, 0.03, seed=k)) as fake:
            client = LMClient("m", base_url=fake.base_url, api_key="k", max_concurrency=6)

            def stop_after_k(record, k=k):
                if record["request_idx"] + 1 == k:
                    raise Stop

            with pytest.raises(Stop):
                generate_instructions(client, seeds, RunDir(folder), num_instructions=12, request_batch_size=6,
                                      progress=False, record_similar=3, on_request=stop_after_k, decisions=decisions)
            assert len(RunDir(folder).read("requests")) == k
            generate_instructions(client, seeds, RunDir(folder), num_instructions=12, request_batch_size=6,
                                  progress=False, record_similar=3, decisions=decisions)
        assert tuple((folder / f).read_bytes() for f in STEP_FILES[:2]) == reference, k


# --- step 1's decisions in a worker process ----------------------------------------------------------------
class _Workers:
    """Counts (and keeps) the decision workers generate_instructions starts."""

    def __init__(self, monkeypatch):
        from selfinstruct_utils import deciding, generate

        self.started: list = []
        outer = self

        class Counted(deciding.DecisionWorker):
            def __init__(self, *args, **kw):
                super().__init__(*args, **kw)
                self.decided = 0
                outer.started.append(self)

            def recv(self):
                msg = super().recv()
                self.decided += msg[0] == "decided"
                return msg

        monkeypatch.setattr(generate, "DecisionWorker", Counted)


def _usage_of(folder: Path, upto: int) -> list[tuple]:
    """Step 1's usage lines of requests 0..upto, without their wall seconds, sorted by request."""
    lines = [json.loads(x) for x in (folder / "usage.jsonl").read_bytes().splitlines()]
    return sorted((u["request_idx"], u["requests"], u["prompt_tokens"], u["completion_tokens"], u["cache_hits"])
                  for u in lines if u["step"] == "instructions" and u["request_idx"] <= upto)


def test_step1_decided_in_a_worker_gives_the_inline_files_whatever_the_order(seeds, tmp_path, monkeypatch):
    """The same seed gives byte-identical step-1 files with the decisions in a worker process and inline,
    whatever order the answers arrive in; the usage log counts the same requests (its seconds are wall
    time); "auto" chooses the worker for a live client with W >= WORKER_MIN_W and never for a batch API's rounds."""
    from selfinstruct_utils.generate import WORKER_MIN_W, _decisions_mode

    workers = _Workers(monkeypatch)
    reference, _, _ = _step1(seeds, tmp_path / "inline", concurrency=1, decisions="inline")
    assert workers.started == []
    n_log = len(reference[0].splitlines())
    for k, seed in enumerate((1, 2)):
        folder = tmp_path / f"worker{k}"
        files, order, _ = _step1(seeds, folder, latency=shuffled_latency(0.0, 0.05, seed=seed), decisions="worker")
        assert order != sorted(order)
        assert files == reference
        assert _usage_of(folder, n_log - 1) == _usage_of(tmp_path / "inline", n_log - 1)
    assert len(workers.started) == 2 and all(w.process.returncode == 0 for w in workers.started)
    assert [w.decided for w in workers.started] == [n_log, n_log]  # every decision made there
    files, _, _ = _step1(seeds, tmp_path / "batch-worker", scheduler="batch", decisions="worker",
                         latency=shuffled_latency(0.0, 0.05, seed=4))
    batch, _, _ = _step1(seeds, tmp_path / "batch-inline", scheduler="batch", decisions="inline")
    assert files == batch and len(workers.started) == 3
    # exact_num_instructions=False: the request reaching the target keeps all its novel candidates
    for decisions in ("inline", "worker"):
        with FakeOpenAI(text=bench_text, latency=shuffled_latency(0.0, 0.03, seed=7)) as fake:
            client = LMClient("m", base_url=fake.base_url, api_key="k", max_concurrency=6)
            generate_instructions(client, seeds, RunDir(tmp_path / f"loose-{decisions}"), num_instructions=10,
                                  request_batch_size=6, progress=False, exact_num_instructions=False,
                                  decisions=decisions)
    assert [(tmp_path / "loose-inline" / f).read_bytes() for f in STEP_FILES[:2]] == [
        (tmp_path / "loose-worker" / f).read_bytes() for f in STEP_FILES[:2]]
    from selfinstruct_utils import generate

    live = LMClient("m", base_url="http://127.0.0.1:9/v1", api_key="k")
    monkeypatch.setattr(generate, "_spare_core", lambda: True)
    assert [_decisions_mode("auto", live, W) for W in (WORKER_MIN_W - 1, WORKER_MIN_W)] == ["inline", "handover"]
    monkeypatch.setattr(generate, "_spare_core", lambda: False)  # a saturated machine: the worker would only compete
    assert _decisions_mode("auto", live, WORKER_MIN_W) == "inline" and _decisions_mode("worker", live, 1) == "worker"
    assert _decisions_mode("worker", RoundClient(live), 256) == "inline"
    monkeypatch.setenv("SELFINSTRUCT_STEP1_DECISIONS", "inline")
    assert _decisions_mode("auto", live, 256) == "inline" and _decisions_mode("worker", live, 1) == "worker"
    with pytest.raises(ValueError, match="decisions must be one of"):
        _decisions_mode("thread", live, 8)


@pytest.mark.parametrize("decisions", ["inline", "worker"])
def test_step1_sends_request_r_as_soon_as_decision_r_minus_w_exists(seeds, tmp_path, decisions):
    """Each answer r is held at the server until request r + W - 1 has arrived, and request r + W - 1 can
    only be sent once decision r - 1 exists: so the run finishes (every hold released by its condition,
    never by the guard) only if the driver sends a request the moment the decision it waits for exists,
    with no other answer arriving to wake it. The server sees W in flight, never more."""
    from selfinstruct_utils.generate import request_seed

    W, N = 8, 40
    index = {request_seed(42, r): r for r in range(N)}
    waited: list[tuple[int, bool]] = []
    box: list = []

    stalled = threading.Event()  # one hold gave up: release the others at once (a failing run ends in one guard)

    def latency(body: dict) -> float:
        r = index[body["seed"]]
        need = min(r + W, N)
        deadline = time.monotonic() + HANG_GUARD_S
        while len(box[0].requests) < need and time.monotonic() < deadline and not stalled.is_set():
            time.sleep(0.002)
        waited.append((r, len(box[0].requests) >= need))
        if not waited[-1][1]:
            stalled.set()
        return 0.0

    with FakeOpenAI(text=bench_text, latency=latency) as fake:
        box.append(fake)
        client = LMClient("m", base_url=fake.base_url, api_key="k", max_concurrency=W)
        res = generate_instructions(client, seeds, RunDir(tmp_path / "run"), num_instructions=1000, max_requests=N,
                                    request_batch_size=W, progress=False, record_similar=3, decisions=decisions)
        assert res.counts["requests"] == N and len(fake.requests) == N
        assert fake.max_in_flight == W
    assert sorted(waited) == [(r, True) for r in range(N)]


def test_auto_decides_here_until_the_worker_is_ready_then_hands_over(seeds, tmp_path, monkeypatch):
    """decisions="auto" at W = 32: the worker's start is held until 5 requests were decided in this process,
    and answers from request 5 on are held until the driver has seen the worker ready: requests 0-4 are
    decided here, every later one by the worker, and the files equal an all-inline run's."""
    from selfinstruct_utils import deciding, generate

    W, N, k = 32, 48, 5
    go = tmp_path / "go"
    started: list = []

    class SlowStart(deciding.DecisionWorker):
        def command(self, to_worker, from_worker):
            wait = (f"import os, runpy, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
                    "runpy.run_module('selfinstruct_utils.deciding', run_name='__main__')")
            return [sys.executable, "-c", wait, str(to_worker), str(from_worker)]

        def __init__(self):
            super().__init__()
            self.decided = 0
            started.append(self)

        def recv(self):
            msg = super().recv()
            self.decided += msg[0] == "decided"
            return msg

    monkeypatch.setattr(generate, "DecisionWorker", SlowStart)
    monkeypatch.setattr(generate, "_spare_core", lambda: True)
    monkeypatch.setattr(generate, "WORKER_MIN_W", W)  # the hand-over at a W small enough for a fast test
    index = {generate.request_seed(42, r): r for r in range(N)}

    def latency(body: dict) -> float:
        if index[body["seed"]] >= k:
            deadline = time.monotonic() + HANG_GUARD_S
            while not (started and started[0].ready) and time.monotonic() < deadline:
                time.sleep(0.002)
        return 0.0

    def run(folder: Path, decisions: str, on_request=None) -> tuple[bytes, ...]:
        with FakeOpenAI(text=bench_text, latency=latency if decisions == "auto" else 0.0) as fake:
            client = LMClient("m", base_url=fake.base_url, api_key="k", max_concurrency=W)
            generate_instructions(client, seeds, RunDir(folder), num_instructions=1000, max_requests=N,
                                  request_batch_size=W, progress=False, record_similar=3, decisions=decisions,
                                  on_request=on_request)
        return tuple((folder / f).read_bytes() for f in STEP_FILES[:2])

    reference = run(tmp_path / "inline", "inline")
    assert started == []
    files = run(tmp_path / "auto", "auto", on_request=lambda rec: rec["request_idx"] == k - 1 and go.touch())
    assert files == reference
    assert len(started) == 1 and started[0].ready and started[0].decided == N - k
    assert started[0].process.returncode == 0


def test_a_decision_worker_that_dies_raises_a_clear_error_and_keeps_the_records(seeds, tmp_path, monkeypatch):
    """Kill the worker (SIGKILL) after 4 records: the run raises DecisionWorkerError naming it, the 4
    records stay, and running again gives the files of an uninterrupted run."""
    from selfinstruct_utils.deciding import DecisionWorkerError

    reference, _, _ = _step1(seeds, tmp_path / "ref", concurrency=1, n=12, decisions="inline")
    workers = _Workers(monkeypatch)
    folder = tmp_path / "run"

    def kill_worker(record):
        if record["request_idx"] == 3:
            workers.started[0].process.send_signal(signal.SIGKILL)
            workers.started[0].process.wait()

    with FakeOpenAI(text=bench_text, latency=shuffled_latency(0.0, 0.03, seed=9)) as fake:
        client = LMClient("m", base_url=fake.base_url, api_key="k", max_concurrency=6)
        with pytest.raises(DecisionWorkerError, match=r"decision worker \(pid \d+\) ended unexpectedly \(exit code -9\)"):
            generate_instructions(client, seeds, RunDir(folder), num_instructions=12, request_batch_size=6,
                                  progress=False, record_similar=3, on_request=kill_worker, decisions="worker")
        assert [r["request_idx"] for r in RunDir(folder).read("requests")] == [0, 1, 2, 3]
        generate_instructions(client, seeds, RunDir(folder), num_instructions=12, request_batch_size=6,
                              progress=False, record_similar=3, decisions="worker")
    assert tuple((folder / f).read_bytes() for f in STEP_FILES[:2]) == reference


@pytest.mark.slow  # three CLI starts: about 30 s on a loaded 2-core machine
def test_a_killed_run_leaves_no_decision_worker_behind(tmp_path):
    """SIGKILL the CLI while its decision worker runs (forced by SELFINSTRUCT_STEP1_DECISIONS): the worker
    ends by itself (its driver's pipe closed); the resumed run gives an uninterrupted inline run's step-1
    files."""
    import os

    import psutil

    env = {**os.environ, "SELFINSTRUCT_STEP1_DECISIONS": "worker"}

    def step1(run_dir: Path, base_url: str, cache: Path) -> list[str]:
        cmd = _cli(run_dir, base_url, cache)
        return cmd[:3] + ["step", "instructions"] + cmd[4:]

    full = tmp_path / "full"  # the reference, in this process, inline (as the CLI's run: 10 instructions, W = 3)
    with _counting_fake() as fake:
        run_pipeline(LMClient("m", base_url=fake.base_url, api_key="k", max_concurrency=4), full,
                     PipelineConfig(num_instructions=10, request_batch_size=3), steps=("instructions",), progress=False)
    part = tmp_path / "part"
    with _counting_fake() as fake:
        fake.hold_after(5)
        proc = subprocess.Popen(step1(part, fake.base_url, tmp_path / "cache"), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + HANG_GUARD_S
        children: list = []
        while time.monotonic() < deadline and not (fake.delivered >= 5 and fake.in_flight > 0 and children):
            children = [c for c in psutil.Process(proc.pid).children() if "selfinstruct_utils.deciding" in c.cmdline()]
            time.sleep(0.01)
        assert proc.poll() is None and len(children) == 1, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        fake.drop_held()
        worker = children[0]

        def ended() -> bool:
            try:
                return worker.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        while time.monotonic() < deadline and not ended():
            time.sleep(0.01)
        assert ended(), "the decision worker outlived its killed driver"
        subprocess.run(step1(part, fake.base_url, tmp_path / "cache"), check=True,
                       capture_output=True, timeout=HANG_GUARD_S, env=env)
    for name in STEP_FILES[:2]:
        assert (full / name).read_bytes() == (part / name).read_bytes(), name


def test_a_run_without_a_stored_scheduler_keeps_the_batch_schedule(seeds, tmp_path):
    """Manifests written before the lag schedule have no "scheduler": such a run resumes in batches."""
    assert PipelineConfig.from_dict({"num_instructions": 3}).scheduler == "batch"
    assert PipelineConfig().scheduler == "lag"
    from selfinstruct_utils.cli import main

    run_dir = tmp_path / "old"
    with FakeOpenAI(text=bench_text) as fake:
        client = LMClient("m", base_url=fake.base_url, api_key="k")
        run_pipeline(client, run_dir, PipelineConfig(num_instructions=3, request_batch_size=2, scheduler="batch"),
                     steps=("instructions",), progress=False)
        assert "scheduler" not in json.loads((run_dir / "manifest.json").read_text())["config"]
        assert main(["run", "--run-dir", str(run_dir), "--backend", "server", "--base-url", fake.base_url, "--model", "m",
                     "--cache-dir", "", "--no-progress", "--num-instructions", "9"]) in (0, 3)
    log = RunDir(run_dir).read("requests")
    assert len(log) >= 4 and all("batch_idx" in r and "pool_upto_request" not in r for r in log)


# --- kills: identical files, and every token counted exactly once --------------------------------------------
def _cli(run_dir: Path, base_url: str, cache: Path) -> list[str]:
    return [sys.executable, "-m", "selfinstruct_utils.cli", "run", "--run-dir", str(run_dir), "--backend", "server",
            "--base-url", base_url, "--model", "m", "--num-instructions", "10", "--request-batch-size", "3",
            "--concurrency", "4", "--no-progress", "--cache-dir", str(cache)]


def _logged(run_dir: Path) -> tuple[int, int, int]:
    """(requests, prompt tokens, completion tokens) in the run's usage log (complete lines only)."""
    path = run_dir / "usage.jsonl"
    if not path.exists():
        return 0, 0, 0
    lines = [json.loads(x) for x in path.read_bytes().split(b"\n") if x.strip()]
    return (sum(x["requests"] for x in lines), sum(x["prompt_tokens"] for x in lines),
            sum(x["completion_tokens"] for x in lines))


def _counting_fake(**kw) -> FakeOpenAI:
    probe = getattr(LMClient, "PROBE_PROMPT", None)  # a client's own model probe is not a step's request
    return FakeOpenAI(text=bench_text, tokens="words", latency=shuffled_latency(0.0, 0.04, seed=5),
                      count_if=lambda body: probe is None or body.get("prompt") != probe, **kw)


def test_sigkill_at_several_points_gives_identical_files_and_exact_usage(tmp_path):
    """Kill the CLI (SIGKILL) in step 1, step 2 and step 3, each time with answers delivered and more held
    in flight, and resume: the files equal an uninterrupted run's, and the usage log's requests and tokens
    equal what the counting server delivered, exactly (killed invocations included; never a 0-token
    "cache hit" for an answer the server produced)."""
    full = tmp_path / "full"
    with _counting_fake() as fake:
        subprocess.run(_cli(full, fake.base_url, tmp_path / "cache-full"), check=True, capture_output=True, timeout=HANG_GUARD_S)
        assert _logged(full) == (fake.delivered, fake.prompt_tokens, fake.completion_tokens)
        n1 = len(RunDir(full).read("requests"))
    part = tmp_path / "part"
    kill_at = [2, n1 + 4, n1 + 10 + 5]  # answers delivered: in step 1, step 2 (10 requests), step 3
    with _counting_fake() as fake:
        for target in [*kill_at, None]:
            if target is not None:
                fake.hold_after(target)
            proc = subprocess.Popen(_cli(part, fake.base_url, tmp_path / "cache"), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            if target is None:
                _, err = proc.communicate(timeout=HANG_GUARD_S)
                assert proc.returncode == 0, err.decode()[-2000:]
                break
            deadline = time.monotonic() + HANG_GUARD_S
            # wait until the server holds answers back and the run logged every answer it was sent
            while time.monotonic() < deadline and not (
                    fake.delivered >= target and fake.in_flight > 0 and _logged(part)[0] == fake.delivered):
                time.sleep(0.01)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            fake.drop_held()
        delivered = (fake.delivered, fake.prompt_tokens, fake.completion_tokens)
    for name in STEP_FILES:
        assert (full / name).read_bytes() == (part / name).read_bytes(), name
    assert _logged(part) == delivered
    manifest = json.loads((part / "manifest.json").read_text())
    steps = manifest["steps"]
    assert sum(steps[s]["usage"]["requests"] for s in ("instructions", "classification", "instances")) == delivered[0]
    assert sum(steps[s]["usage"]["prompt_tokens"] for s in ("instructions", "classification", "instances")) == delivered[1]
    assert len(steps["instructions"]["usage_by_invocation"]) == 2  # the run killed in step 1 and the next one
    assert [i["status"] for i in manifest["invocations"]] == ["running"] * 3 + ["finished"]


# --- timeouts ---------------------------------------------------------------------------------------------
def test_server_timeouts_follow_max_tokens_and_are_never_retried():
    from selfinstruct_utils.cli import _client
    from selfinstruct_utils.session import SERVER_TOKENS_PER_SECOND, open_client

    client, _ = open_client("server", base_url="http://127.0.0.1:9/v1", model="m")
    assert client.timeout is None and client.retry_timeouts is False
    assert client.timeout_for(TABLE4["instructions"]) == 60 + 1024 / SERVER_TOKENS_PER_SECOND
    assert client.timeout_for(TABLE4["classification"]) == 60 + 3 / SERVER_TOKENS_PER_SECOND
    args = argparse.Namespace(backend="server", model="m", base_url="http://127.0.0.1:9/v1", api="completions",
                              cache_dir="", concurrency=64, timeout=None, tokens_per_second=10.0)
    with _client(args) as (cli_client, _):
        assert cli_client.max_concurrency == 64 and cli_client.retry_timeouts is False
        assert cli_client.timeout_for(TABLE4["instances"]) == 60 + 300 / 10
        assert cli_client.timeout_for(TABLE4["instructions"].replace(max_tokens=100)) == 60 + 100 / 10


# --- the request path ---------------------------------------------------------------------------------------
def test_the_direct_path_honours_the_environment_proxy_looked_up_once(monkeypatch, tmp_path):
    """The aiohttp session no longer looks up the proxy (and ~/.netrc) at every request: the environment's
    proxy is read once per session. It is still honoured: through a dead proxy the request fails; with the
    server in NO_PROXY it goes straight to the server, and a ~/.netrc entry for the server's host does not
    clash with the Authorization header."""
    from selfinstruct_utils.llm import LMRequestError

    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login u password p\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    for var in ("http_proxy", "https_proxy", "no_proxy", "HTTPS_PROXY", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    with FakeOpenAI(text=" No") as fake:
        client = LMClient("m", base_url=fake.base_url, api_key="k", max_concurrency=2, max_retries=0)
        with pytest.raises(LMRequestError, match="APIConnectionError"):
            client.complete(["Task: a\nIs it classification?"], TABLE4["classification"])
        assert fake.requests == []
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        out = client.complete(["Task: a\nIs it classification?", "Task: b\nIs it classification?"],
                              TABLE4["classification"])
        assert [c.text for c in out] == [" No", " No"] and len(fake.requests) == 2
        assert fake.auth == ["Bearer k", "Bearer k"]
