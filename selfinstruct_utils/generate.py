"""Steps 1-3 of Self-Instruct against any :class:`~selfinstruct_utils.llm.LMClient`.

Step 1, as the paper's Sec. 2.2 reads, in three pieces:

- :func:`build_prompts`: the prompts of one batch of requests, each with 8 in-context instructions
  (6 seeds + 2 machine-generated) drawn from the task pool as it was when the batch started;
- :func:`decide_candidates` (from :mod:`selfinstruct_utils.deciding`): one completion -> candidate
  instructions -> rule filters -> ROUGE-L novelty filter against the pool (kept ones join it);
- :func:`generate_instructions`: the driver that resumes from the request log, sends requests and writes
  each request's record; with many requests in flight the decisions run in a worker process
  (:class:`~selfinstruct_utils.deciding.DecisionWorker`) while the driver keeps sending.

Step 2, :func:`classify_instructions`: is each instruction a classification task? Step 3,
:func:`generate_instances`: input-first or output-first instances for each instruction.

Every step keeps up to ``max_concurrency`` requests in flight at every moment (a continuous window, no
batch barrier: a new request leaves as soon as one returns), writes its records in input order as
they become ready, and resumes where a previous run stopped. Step 1 stays deterministic without a
barrier: request r is built from the pool as decided after requests ``<= r - W`` (W =
``request_batch_size``) and candidates are decided in request order, so the same seed gives the same
files whatever order the answers arrive in. Randomness is seeded per request (``seed`` and request
index), so a resumed run builds the same prompts as an uninterrupted one. Each answer's LM usage goes
to the run's usage log where the answer is cached, before its record is written.

Every step follows one protocol, :class:`Step` (name, output file, sampling parameters, template,
``run(ctx, inputs) -> StepResult``); :class:`MapStep` is the shape of steps 2-3 (one request per input
record, a parser from answer to record), so a new step of that shape is a :class:`MapStep` with a template
and a parser, placed in :data:`selfinstruct_utils.pipeline.PIPELINE` (or passed as ``pipeline=``).

Clients with a true ``batch_api`` attribute (a batch API: ``complete`` blocks until a whole round
returns) are driven in rounds instead: steps 2-3 send all remaining requests in one ``complete`` call,
step 1 sends every request its schedule allows (W per round); the request -> pool mapping, hence
the files, are the same as with a live client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from .deciding import DecisionRules, Decisions, DecisionWorker, decide_candidates, last_decided
from .llm import TABLE4, Completion, LMClient, SamplingParams, run_sync
from .parse import parse_is_classification
from .records import SeedTask, write_jsonl
from .runs import RunDir, StepResult
from .templates import KIT_TEMPLATES, TemplateSet

__all__ = [
    "request_seed",
    "step_seed",
    "sample_prompt_instructions",
    "build_prompts",
    "decide_candidates",
    "generate_instructions",
    "classify_instructions",
    "generate_instances",
    "SCHEDULERS",
    "Step",
    "StepContext",
    "MapStep",
    "render_prompt",
    "CLASSIFICATION",
    "INSTANCES",
]

#: Step 1's schedules. "lag" (runs started by this version): request r sees the decisions of requests
#: ``<= r - W``, so W requests are in flight continuously. "batch" (runs started before; their manifests
#: have no ``scheduler`` field): batches of W requests built from the pool as it was when the batch
#: started, each waiting for the previous one. Both equal the sequential method when W = 1.
SCHEDULERS = ("lag", "batch")


def request_seed(seed: int, request_idx: int) -> int:
    """A 31-bit sampling seed for one request, derived from the run seed and the request index."""
    digest = hashlib.sha256(f"{seed}:{request_idx}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def sample_prompt_instructions(
    seed_instructions: Sequence[str],
    machine_instructions: Sequence[str],
    rng: random.Random,
    *,
    num_prompt_instructions: int = 8,
    num_machine_instructions: int = 2,
) -> list[str]:
    """The in-context instructions of one prompt: 2 machine-generated (fewer while the pool has fewer)
    and the rest human-written seeds, shuffled.

    Args:
        seed_instructions: the seed pool.
        machine_instructions: the machine-generated pool so far.
        rng: the request's random generator.
        num_prompt_instructions: total in the prompt (paper: 8).
        num_machine_instructions: machine-generated among them (paper: 2).
    Returns:
        ``num_prompt_instructions`` instructions (fewer only if the seed pool is too small).
    Source: paper Sec. 2.2, "Instruction Generation".
    """
    if not isinstance(machine_instructions, Sequence):
        machine_instructions = list(machine_instructions)
    # random.sample draws the same items from any sequence of the same length: no copy of the pool.
    machine = rng.sample(machine_instructions, min(num_machine_instructions, len(machine_instructions)))
    n_seed = min(num_prompt_instructions - len(machine), len(seed_instructions))
    chosen = machine + rng.sample(list(seed_instructions), n_seed)
    rng.shuffle(chosen)
    return chosen


def build_prompts(
    seed_instructions: Sequence[str],
    machine_instructions: Sequence[str],
    request_ids: Sequence[int],
    *,
    seed: int,
    num_prompt_instructions: int = 8,
    num_machine_instructions: int = 2,
    classification: bool = False,
    templates: TemplateSet = KIT_TEMPLATES,
) -> list[tuple[list[str], str]]:
    """The prompts of one batch of step-1 requests (pure: the same arguments give the same prompts).

    Args:
        seed_instructions: the human-written seed instructions.
        machine_instructions: the machine-generated pool as it was when the batch started.
        request_ids: the batch's request indices; request r draws from ``random.Random(f"{seed}:{r}")``.
        seed: the run's random seed.
        num_prompt_instructions, num_machine_instructions: prompt composition (paper: 8 and 2).
        classification: the classification-only header (released ``--use_clf_seed_tasks_only``).
        templates: the prompt set (default: the kit's).
    Returns:
        One (in-context instructions, prompt text) pair per request.
    Source: paper Sec. 2.2 and Table 6.
    """
    out = []
    for rid in request_ids:
        chosen = sample_prompt_instructions(
            seed_instructions, machine_instructions, random.Random(f"{seed}:{rid}"),
            num_prompt_instructions=num_prompt_instructions, num_machine_instructions=num_machine_instructions,
        )
        out.append((chosen, templates.instruction_prompt(chosen, classification=classification)))
    return out


def _bar(total: int, desc: str, progress: bool, initial: int = 0):
    return tqdm(total=total, desc=desc, initial=initial, disable=not progress, unit="it", dynamic_ncols=True)


class _Prefix(Sequence):
    """The first ``n`` items of a list, without a copy (the pool as a request saw it)."""

    __slots__ = ("items", "n")

    def __init__(self, items: list, n: int):
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.items[: self.n][i]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.items[i]


def _round_client(client) -> bool:
    """Does this client answer whole rounds at once (a batch API) rather than single requests?"""
    return bool(getattr(client, "batch_api", False))


#: A job: (request index, prompt, per-request seed or None).
_Job = tuple[int, str, int | None]


class _Side:
    """Work the driver waits on besides its requests (step 1's decisions in a worker process): the
    driver calls ``attach(loop, wake)`` once (``wake()`` then wakes it, e.g. from a reader on a pipe),
    ``pending()`` before it would stop (True: keep waiting), ``check()`` after each wake (raises what the
    side failed with), ``detach(loop)`` at the end."""

    def attach(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None: ...
    def detach(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def pending(self) -> bool: return False
    def check(self) -> None: ...


async def _drive(client: LMClient, step: str, params: SamplingParams, next_job: Callable[[], _Job | None],
                 deliver: Callable[[int, Completion], None], window: int,
                 on_usage: Callable[[Completion, int], None], side: _Side | None = None) -> None:
    """Keep up to ``window`` requests in flight: ask ``next_job`` for a request whenever a slot is free
    (None: nothing can be sent now), hand each answer to ``deliver`` as it arrives, until nothing is in
    flight, nothing can be sent and ``side`` has nothing pending. A wake from ``side`` asks ``next_job``
    again. One HTTP client (connection pool) serves every request. A failed request cancels the others
    and raises after the answers already received were delivered."""
    http = client.open_http()
    finished: asyncio.Queue = asyncio.Queue()
    inflight: dict[asyncio.Task, int] = {}
    loop = asyncio.get_running_loop()
    if side is not None:
        side.attach(loop, lambda: finished.put_nowait(None))
    try:
        while True:
            while len(inflight) < window:
                job = next_job()
                if job is None:
                    break
                rid, prompt, seed = job
                p = params if seed is None else params.replace(seed=seed)
                task = asyncio.ensure_future(client.arequest(http, prompt, p, step=step, request_id=rid, on_usage=on_usage))
                inflight[task] = rid
                task.add_done_callback(finished.put_nowait)
            if not inflight and (side is None or not side.pending()):
                return
            task = await finished.get()
            if task is None:  # the side woke us: a decision arrived
                side.check()
                continue
            rid = inflight.pop(task)
            err = task.exception()
            if err is not None:
                while not finished.empty():  # answers that arrived meanwhile still reach their records
                    other = finished.get_nowait()
                    if other is None:
                        continue
                    other_rid = inflight.pop(other)
                    if not other.cancelled() and other.exception() is None:
                        deliver(other_rid, other.result())
                raise err
            deliver(rid, task.result())
    finally:
        if side is not None:
            side.detach(loop)
        for task in inflight:
            task.cancel()
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        await http.close()


def _run_jobs(client: LMClient, run: RunDir, step: str, params: SamplingParams,
              next_job: Callable[[], _Job | None], deliver: Callable[[int, Completion], None], window: int,
              side: _Side | None = None) -> None:
    """Send a step's requests: a continuous window for a live client (``side``: see :func:`_drive`), rounds
    for a batch-API client (each round: every request ``next_job`` allows now, in one ``complete`` call)."""
    price = getattr(client, "price_per_million", (0.0, 0.0))
    log = run.log_request_usage

    def on_usage(comp: Completion, rid: int) -> None:
        log(step, comp, price, rid)

    try:
        if not _round_client(client):
            run_sync(_drive(client, step, params, next_job, deliver, max(1, window), on_usage, side))
            return
        while True:
            jobs = []
            while (job := next_job()) is not None:
                jobs.append(job)
            if not jobs:
                return
            seeds = [seed for _, _, seed in jobs]
            comps = client.complete([prompt for _, prompt, _ in jobs], params, step=step,
                                    request_ids=[rid for rid, _, _ in jobs],
                                    seeds=None if all(x is None for x in seeds) else seeds)
            run.log_usage(step, comps, price)
            for (rid, _, _), comp in zip(jobs, comps, strict=True):
                deliver(rid, comp)
    finally:
        run.close_usage()


def generate_instructions(
    client: LMClient,
    seed_tasks: Sequence[SeedTask],
    run: RunDir,
    *,
    num_instructions: int,
    num_prompt_instructions: int = 8,
    num_machine_instructions: int = 2,
    request_batch_size: int = 4,
    max_requests: int | None = None,
    rouge_threshold: float = 0.7,
    rouge_comparison: str = "gt",
    exact_num_instructions: bool = True,
    params: SamplingParams = TABLE4["instructions"],
    seed: int = 42,
    classification_only: bool = False,
    templates: TemplateSet = KIT_TEMPLATES,
    record_similar: int = 10,
    progress: bool = True,
    on_request: Callable[[dict], None] | None = None,
    scheduler: str = "lag",
    decisions: str = "auto",
) -> StepResult:
    """Step 1: bootstrap instructions until ``num_instructions`` are kept (paper Sec. 2.2).

    Files: ``instruction_requests.jsonl`` (one line per request, in request order: prompt, raw
    completion, every candidate and its decision: the source of truth, replayed on resume) and
    ``machine_generated_instructions.jsonl`` (kept instructions, rebuilt from the log on resume).

    Schedule (``scheduler``, W = ``request_batch_size``): with "lag", request r's in-context
    instructions come from the pool as decided after requests ``0 .. r - W`` (recorded as
    ``pool_upto_request``), so up to W requests are in flight at every moment with no barrier; with
    "batch" (runs started by earlier versions), from the pool as it was when r's batch of W started
    (recorded as ``batch_idx``), each batch waiting for the previous one. Either way candidates are
    decided in request order, so the files depend on the seed alone, never on the order in which
    answers arrive, and a resumed run equals an uninterrupted one. When the target is reached at
    request r, the log ends there with "lag" (requests still in flight are answered, cached and counted
    in the usage log, not decided); with "batch" the rest of r's batch is decided and logged too (its
    novel candidates as ``over_target``), as earlier versions did.

    Args:
        client: the LM (its ``max_concurrency`` caps the requests in flight).
        seed_tasks: the human-written seed tasks.
        run: the run directory (resumed if it has requests already).
        num_instructions: machine-generated instructions to keep.
        num_prompt_instructions, num_machine_instructions: prompt composition (paper: 8 and 2).
        request_batch_size: W, the lag (or batch size) of the schedule.
        max_requests: stop after this many requests even if the target is not reached
            (default ``20 + 4 * num_instructions``): a weak LM must not loop forever.
        rouge_threshold, rouge_comparison: the novelty filter (see :meth:`NoveltyPool.add_novel`).
        exact_num_instructions: keep exactly ``num_instructions``; novel candidates past the target
            stay in the request log as ``over_target``. False: keep every novel candidate of the
            request that reaches the target ("lag") or of its whole batch ("batch", the released
            code's behaviour); the run then holds more than asked for.
        params: sampling parameters (paper Table 4); each request gets its own ``seed``.
        seed: the run's random seed.
        classification_only: use only classification seed tasks and the classification header.
        templates: the prompt set (default: the kit's; ``released.template_set("released")``: the original's).
        record_similar: how many nearest pool instructions to record per kept instruction (0: none).
        progress: show a progress bar.
        on_request: called with each request's log record (for notebooks).
        scheduler: "lag" or "batch" (see :data:`SCHEDULERS`).
        decisions: where the pool lives and candidates are decided: "inline" (in this process, inside the
            driver's event loop), "worker" (a :class:`~selfinstruct_utils.deciding.DecisionWorker` process that
            decides the answers in request order while this process sends requests and writes records), or
            "auto": for a live client with W >= :data:`WORKER_MIN_W` on a machine with a core to spare (cores
            minus the load average >= 1), decided here until the worker is ready (its start takes about a
            second), then by the worker; otherwise inline. A batch-API client always
            decides inline. The environment variable ``SELFINSTRUCT_STEP1_DECISIONS`` overrides "auto". The
            files are the same either way.
    Returns:
        A :class:`StepResult` with counts ``requests``, ``candidates``, ``kept`` and rejections by reason.
    Raises:
        ValueError: no seed instructions, W < 1, an unknown scheduler or ``decisions``.
        LMRequestError: a request failed after its retries (every record written before stays).
        DecisionWorkerError: the decision worker failed or died (every record written before stays).
    """
    start = time.perf_counter()
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, not {scheduler!r}")
    if request_batch_size < 1:
        raise ValueError(f"request_batch_size must be at least 1, not {request_batch_size}")
    if max_requests is None:
        max_requests = 20 + 4 * num_instructions
    W = request_batch_size
    tasks = [t for t in seed_tasks if t.is_classification] if classification_only else list(seed_tasks)
    seed_instructions = [t.instruction for t in tasks]
    if not seed_instructions:
        raise ValueError("no seed instructions to prompt with")

    def pool_cut(r: int) -> int:
        """The last request whose decisions request r's prompt sees (-1: none)."""
        return r - W if scheduler == "lag" else (r // W) * W - 1

    mode = _decisions_mode(decisions, client, W)
    rules = DecisionRules(num_instructions, rouge_threshold, rouge_comparison, exact_num_instructions,
                          record_similar, scheduler, W)
    run.truncate_to_complete_lines("requests")
    log = run.read("requests")
    rejections: Counter = Counter()
    machine: list[str] = []
    machine_after: list[int] = []  # len(machine) after each decided request
    kept_records: list[dict] = []
    n_candidates = 0
    stop_at = max_requests - 1  # the last request to send

    def absorb(rec: dict) -> None:
        """Count one logged request's candidates and take its kept instructions into the run (the same
        stopping rule as :meth:`Decisions.decide`, which decides them)."""
        nonlocal n_candidates, stop_at
        n_candidates += len(rec["candidates"])
        rejections.update(c["decision"] for c in rec["candidates"] if c["decision"] != "kept")
        reached = len(machine) >= num_instructions
        machine.extend(k["instruction"] for k in rec["kept_records"])
        kept_records.extend(rec["kept_records"])
        machine_after.append(len(machine))
        if not reached and len(machine) >= num_instructions:
            stop_at = min(stop_at, last_decided(scheduler, W, rec["request_idx"]))

    # Replay the log: the recorded decisions are the truth; the pool is rebuilt from them.
    replay = []
    for rec in log:
        replay.append([k["instruction"] for k in rec["kept_records"]])
        absorb(rec)
    # Rewrite the kept file from the log, so a kill between the two writes loses or repeats nothing.
    write_jsonl(run.file("instructions"), kept_records)

    next_send = len(log)
    use_worker = mode != "inline" and next_send <= stop_at
    answers: dict[int, Completion] = {}
    prompts: dict[int, tuple[list[str], str, int]] = {}
    bar = _bar(num_instructions, "step 1: instructions", progress, initial=min(len(machine), num_instructions))
    with run.writer("requests") as req_out, run.writer("instructions") as inst_out, contextlib.ExitStack() as stack:
        # The pool and the decisions: here, or in a worker process that decides while this one sends. A worker
        # starts at once; until it is ready (its imports take about a second) this process decides ("auto"), or
        # waits for it ("worker": every decision in the worker).
        worker = stack.enter_context(DecisionWorker()) if use_worker else None
        if worker is not None and mode == "worker":
            worker.wait_ready()
        inline: Decisions | None = None

        def next_job() -> _Job | None:
            nonlocal next_send
            r = next_send
            if r > stop_at or len(machine_after) < pool_cut(r) + 1:
                return None
            cut = pool_cut(r)
            plist, prompt = build_prompts(
                seed_instructions, _Prefix(machine, machine_after[cut] if cut >= 0 else 0), [r], seed=seed,
                num_prompt_instructions=num_prompt_instructions, num_machine_instructions=num_machine_instructions,
                classification=classification_only, templates=templates,
            )[0]
            prompts[r] = (plist, prompt, cut)
            next_send = r + 1
            return r, prompt, request_seed(seed, r)

        def write_decision(rid: int, candidates: list[dict], kept: list[dict]) -> None:
            """Write request ``rid``'s record (the next in order) and take its decisions into the run."""
            plist, prompt, cut = prompts.pop(rid)
            comp = answers.pop(rid)
            kept = [{"instruction": k.pop("instruction"), "request_idx": rid, **k} for k in kept]
            record = {"request_idx": rid}
            if scheduler == "batch":
                record["batch_idx"] = rid // W
            else:
                record["pool_upto_request"] = cut
            record.update({
                "prompt_instructions": plist,
                "prompt": prompt,
                "completion": comp.text,
                "finish_reason": comp.finish_reason,
                "usage": {"prompt_tokens": comp.prompt_tokens, "completion_tokens": comp.completion_tokens},
                "candidates": candidates,
                "kept_records": kept,
            })
            req_out.write(record)
            for k in kept:
                inst_out.write(k)
            replay.append([k["instruction"] for k in kept])
            absorb(record)
            if on_request is not None:
                on_request(record)
            bar.update(min(len(kept), max(0, num_instructions - bar.n)))

        forwarded = -1  # the next request whose answer goes to the worker (in order); -1: the worker has no pool yet

        def hand_over() -> None:
            """Give the worker the pool as decided so far; from now on it decides."""
            nonlocal forwarded, inline
            worker.start(seed_instructions, rules, replay, stop_at)
            forwarded, inline = len(machine_after), None
            forward()

        def in_order(first: int, most: int | None = None) -> list[tuple[int, str | None, str | None]]:
            """The answers from request ``first`` on that have arrived with none missing between, up to the
            last one to decide (at most ``most``; None: all), as ``(rid, text, finish_reason)``."""
            out = []
            while first + len(out) in answers and first + len(out) <= stop_at and len(out) != most:
                comp = answers[first + len(out)]
                out.append((first + len(out), comp.text, comp.finish_reason))
            return out

        def forward() -> None:
            nonlocal forwarded
            batch = in_order(forwarded)
            if batch:
                worker.send(batch)  # counted as sent only once it is (the flush after an error waits for those)
                forwarded += len(batch)

        def deliver(rid: int, comp: Completion) -> None:
            nonlocal inline
            answers[rid] = comp
            if forwarded >= 0:
                forward()
                return
            # decide here in request order, whatever order answers come in; none past the last one to decide
            # (the answers ready in order are decided together: Decisions.decide_many)
            while len(machine_after) in answers and len(machine_after) <= stop_at:
                if inline is None:
                    inline = Decisions(seed_instructions, rules, replay, stop_at)
                ready = in_order(len(machine_after), 64)
                for (rid, _, _), out in zip(ready, inline.decide_many(ready), strict=True):
                    if out is not None:
                        write_decision(rid, *out)

        def on_reply(msg: tuple) -> None:
            if msg[0] == "decided":  # ("skipped", rid): past the stop, which this process knows by now
                write_decision(*msg[1:])
            elif msg[0] == "ready" and forwarded < 0:
                hand_over()

        side = None
        if worker is not None:
            if worker.ready:
                hand_over()
            side = _WorkerSide(worker, on_reply, lambda: len(machine_after) < min(forwarded, stop_at + 1))
        try:
            _run_jobs(client, run, "instructions", params, next_job, deliver,
                      min(W, getattr(client, "max_concurrency", W)), side)
        except Exception:
            if side is not None and side.error is None:
                # A request failed: the answers received before it are still decided and written, as inline.
                with contextlib.suppress(Exception):
                    while side.pending():
                        on_reply(worker.recv())
            raise
    bar.close()
    return StepResult(
        counts={"requests": len(machine_after), "candidates": n_candidates, "kept": len(machine)},
        rejections=rejections,
        seconds=time.perf_counter() - start,
    )


#: Step 1 decides in a worker process (``decisions="auto"``) for a live client with W at least this.
#: Measured on 2 cores (``benchmarks/results/bench_throughput.md``): at W = C = 64 deciding inline reached
#: 84-85% of C/L and the worker 78%; at W = C = 256 the worker 77-81% and inline 68-73%.
WORKER_MIN_W = 128
#: Overrides ``decisions="auto"`` of :func:`generate_instructions` ("worker", "inline" or "auto").
DECISIONS_ENV = "SELFINSTRUCT_STEP1_DECISIONS"


def _decisions_mode(decisions: str, client, W: int) -> str:
    """Where step 1 decides (see :func:`generate_instructions`'s ``decisions``): "inline", "worker" (all in
    the worker, waiting for its start) or "handover" (here until the worker is ready, then there)."""
    choices = ("auto", "worker", "inline")
    if decisions not in choices:
        raise ValueError(f"decisions must be one of {choices}, not {decisions!r}")
    if decisions == "auto":
        decisions = os.environ.get(DECISIONS_ENV) or "auto"
        if decisions not in choices:
            raise ValueError(f"the environment variable {DECISIONS_ENV} must be one of {choices}, not {decisions!r}")
    if _round_client(client):
        return "inline"  # a batch API's rounds wait for all their answers: nothing to overlap
    if os.name != "posix":  # the worker's pipe is watched by the event loop (add_reader)
        if decisions == "worker":
            raise ValueError("step 1's decision worker needs a POSIX system; use decisions='inline'")
        return "inline"
    if decisions == "auto":
        return "handover" if W >= WORKER_MIN_W and _spare_core() else "inline"
    return decisions


def _spare_core() -> bool:
    """Is a core idle for step 1's decision worker (the usable cores minus the 1-minute load average, at
    least one)? On a machine already saturated the worker only competes with the driver for the same CPU
    (measured: fewer requests/s than deciding inline, ``benchmarks/bench_throughput.py``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores >= 2
    return cores - load >= 1.0


class _WorkerSide(_Side):
    """Step 1's decision worker as seen by :func:`_drive`: its replies are read (and their records
    written) as soon as the pipe is readable, then the driver wakes to send what they allow."""

    def __init__(self, worker: DecisionWorker, on_reply: Callable[[tuple], None], pending: Callable[[], bool]):
        self.worker, self.on_reply, self._pending = worker, on_reply, pending
        self.error: BaseException | None = None
        self.fd = worker.fileno()

    def attach(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
        def readable() -> None:
            try:
                while self.worker.poll():
                    self.on_reply(self.worker.recv())
            except BaseException as err:  # noqa: BLE001 -- raised by check() in the driver
                self.error = err
                loop.remove_reader(self.fd)
            wake()

        loop.add_reader(self.fd, readable)

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self.fd)

    def pending(self) -> bool:
        return self._pending()

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def step_seed(seed: int, step: str, idx: int) -> int:
    """A 31-bit sampling seed for request ``idx`` of step 2 or 3 (a sampling server draws the same
    answer when the request is sent again, e.g. after a kill)."""
    return request_seed(seed, f"{step}:{idx}")  # type: ignore[arg-type]


def _resume_map(run: RunDir, output: str, instructions: Sequence[str], echo: str = "instruction") -> list[dict]:
    """Records already in a step file, checked to be a prefix of the work list (each record's ``echo``
    field holds its input's instruction)."""
    run.truncate_to_complete_lines(output)
    done = run.read(output)
    for k, rec in enumerate(done):
        if k >= len(instructions) or rec.get(echo) != instructions[k]:
            raise RuntimeError(
                f"{run.file(output)}:{k + 1}: holds {rec.get(echo)!r}, but the step's input has "
                f"{instructions[k] if k < len(instructions) else 'no more instructions'!r} there; "
                "the input changed since the last run: use a new run directory"
            )
    return done


def _map_step(
    client: LMClient,
    run: RunDir,
    key: str,
    instructions: list[str],
    prompt_of: Callable[[int], str],
    record_of: Callable[[int, object], dict],
    params: SamplingParams,
    *,
    desc: str,
    concurrency: int | None,
    progress: bool,
    seed: int | None = None,
    output: str | None = None,
    echo: str = "instruction",
) -> list[dict]:
    """One LM request per instruction, resumed after the records the step file already holds, with up
    to ``concurrency`` (default: the client's ``max_concurrency``) in flight continuously. Answers are
    buffered and the longest ready prefix is written, so records reach the file in input order; answers
    that arrive ahead of a slow one wait (at most ``8 x concurrency`` ahead). ``key`` names the step (usage
    log, per-request seeds); ``output`` is its file (default: ``key``). Returns all records."""
    output = output or key
    done = _resume_map(run, output, instructions, echo)
    window = concurrency or getattr(client, "max_concurrency", 1)
    n = len(instructions)
    state = {"send": len(done)}
    ready: dict[int, Completion] = {}
    bar = _bar(n, desc, progress, initial=len(done))
    round_client = _round_client(client)
    with run.writer(output) as out:

        def next_job() -> _Job | None:
            k = state["send"]
            if k >= n or (not round_client and k >= len(done) + 8 * window):
                return None
            state["send"] = k + 1
            return k, prompt_of(k), None if seed is None else step_seed(seed, key, k)

        def deliver(k: int, comp: Completion) -> None:
            ready[k] = comp
            while len(done) in ready:
                rec = record_of(len(done), ready.pop(len(done)))
                out.write(rec)
                done.append(rec)
                bar.update(1)

        _run_jobs(client, run, key, params, next_job, deliver, window)
    bar.close()
    return done


# --- The step protocol ---------------------------------------------------------------------------------------
@dataclass
class StepContext:
    """What every step of a run sees (built once per invocation by
    :func:`~selfinstruct_utils.pipeline.run_pipeline`).

    Attributes:
        client: the LM (None when no step of this invocation needs one).
        run: the run directory.
        config: the run's :class:`~selfinstruct_utils.pipeline.PipelineConfig`.
        templates: the run's prompt set.
        seed_tasks: the human-written seed tasks.
        request_seed: the run seed when requests carry their own sampling seed (:func:`step_seed`), else None.
        progress: progress bars.
    """

    client: LMClient | None
    run: RunDir
    config: Any
    templates: TemplateSet = KIT_TEMPLATES
    seed_tasks: Sequence[SeedTask] = ()
    request_seed: int | None = None
    progress: bool = True

    def params(self, step: Step) -> SamplingParams:
        """The step's sampling parameters: the configuration's (``config.params[step.name]``), else the step's own."""
        params = getattr(self.config, "params", None) or {}
        return params.get(step.name, step.params)


class Step:
    """One step of the pipeline: the protocol every step follows.

    Attributes:
        name: the step's name (``run_pipeline(steps=...)``, the manifest's ``steps``, the usage log,
            ``config.params``, per-request seeds).
        output: the file its records go to: a :data:`~selfinstruct_utils.runs.FILES` key or a file name in
            the run directory. The next step in the pipeline reads it.
        params: default sampling parameters (None: the step sends no LM request).
        template: the step's prompt: a role of the run's template set (str), a template of its own (an
            object with ``render(instruction)``; its hash goes into the manifest under the step's name), or
            a function ``(TemplateSet, record) -> str``; None for a step without prompts of this kind.
        takes_input: the pipeline passes the previous step's records to :meth:`run`.

    A step is resumable: :meth:`run` continues from what ``output`` already holds, so a killed run and
    its resume write the same files as one uninterrupted run.
    """

    name: str = ""
    output: str = ""
    params: SamplingParams | None = None
    template: Any = None
    takes_input: bool = True

    @property
    def uses_lm(self) -> bool:
        return self.params is not None

    def run(self, ctx: StepContext, inputs: list[dict]) -> StepResult:
        """Do (or continue) the step.

        Args:
            ctx: the run's context.
            inputs: the previous step's records (empty when ``takes_input`` is False or it is the first step).
        Returns:
            Counts and rejections over the whole run directory.
        """
        raise NotImplementedError

    def record(self, ctx: StepContext, result: StepResult) -> None:
        """Record the step's result in the manifest (:meth:`RunDir.record_step`)."""
        ctx.run.record_step(self.name, result, lm=self.uses_lm)


def render_prompt(template: Any, templates: TemplateSet, record: dict) -> str:
    """A map step's prompt for one input record (see :attr:`Step.template`)."""
    if isinstance(template, str):
        return templates.prompt(template).render(record["instruction"])
    if hasattr(template, "render"):
        return template.render(record["instruction"])
    return template(templates, record)


@dataclass(frozen=True)
class MapStep(Step):
    """A step that sends one LM request per input record and writes one record per answer, in input
    order (steps 2 and 3; any step of that shape, e.g. one that rewrites each instruction).

    Attributes:
        name, output, params, template: as :class:`Step`.
        parse: ``(input record, Completion) -> output record``; must never raise on LM text
            (:mod:`selfinstruct_utils.parse`). By convention the output carries the input's fields on, so
            later steps find theirs (step 3 reads ``instruction`` and ``is_classification``).
        summarize: ``records -> StepResult`` (counts and rejections over all records; default: ``records``).
        echo: the output record's field holding the input's instruction (checked on resume: a changed
            input is refused); a step that changes ``instruction`` keeps the original under another name.
        desc: the progress bar's label (default: "step <name>").
    """

    name: str = ""
    output: str = ""
    params: SamplingParams | None = None
    template: Any = None
    parse: Callable[[dict, Completion], dict] | None = None
    summarize: Callable[[list[dict]], StepResult] | None = None
    echo: str = "instruction"
    desc: str | None = None

    def map(self, client: LMClient, run: RunDir, inputs: Sequence[dict], *, params: SamplingParams | None = None,
            templates: TemplateSet = KIT_TEMPLATES, concurrency: int | None = None, progress: bool = True,
            seed: int | None = None) -> StepResult:
        """Send (or resume) the step's requests for ``inputs`` and write its records.

        Args:
            params: sampling parameters (default: the step's).
            templates: the prompt set (a role of :attr:`template` is looked up in it).
            concurrency: requests in flight (default: the client's ``max_concurrency``).
            seed: the run seed; given, each request carries its own sampling seed (:func:`step_seed`).
        Returns:
            :attr:`summarize` of all the step's records, with this call's wall time.
        Raises:
            RuntimeError: the file holds records of other inputs. LMRequestError: a request failed after its
                retries (every record written before stays).
        """
        start = time.perf_counter()
        inputs = list(inputs)
        done = _map_step(client, run, self.name, [r["instruction"] for r in inputs],
                         lambda k: render_prompt(self.template, templates, inputs[k]),
                         lambda k, comp: self.parse(inputs[k], comp), params or self.params,
                         desc=self.desc or f"step {self.name}", concurrency=concurrency, progress=progress,
                         seed=seed, output=self.output, echo=self.echo)
        result = self.summarize(done) if self.summarize else StepResult(counts={"records": len(done)})
        result.seconds = time.perf_counter() - start
        return result

    def run(self, ctx: StepContext, inputs: list[dict]) -> StepResult:
        return self.map(ctx.client, ctx.run, inputs, params=ctx.params(self), templates=ctx.templates,
                        progress=ctx.progress, seed=ctx.request_seed)


# --- Step 2 --------------------------------------------------------------------------------------------------
def _classification_record(task: dict, comp: Completion) -> dict:
    answer = parse_is_classification(comp.text)
    return {"instruction": task["instruction"], "is_classification": bool(answer), "raw": comp.text,
            "parsed": answer is not None}


def _classification_summary(done: list[dict]) -> StepResult:
    rejections = Counter(unparseable_answer=sum(1 for r in done if not r["parsed"]))
    n_clf = sum(1 for r in done if r["is_classification"])
    return StepResult(counts={"classified": len(done), "classification": n_clf, "generation": len(done) - n_clf},
                      rejections=+rejections)


#: Step 2 (paper Table 7): is each instruction a classification task?
CLASSIFICATION = MapStep("classification", "classification", TABLE4["classification"],
                         template="classification", parse=_classification_record,
                         summarize=_classification_summary, desc="step 2: classification")


def classify_instructions(
    client: LMClient,
    instructions: Sequence[str],
    run: RunDir,
    *,
    params: SamplingParams = TABLE4["classification"],
    batch_size: int | None = None,
    progress: bool = True,
    templates: TemplateSet = KIT_TEMPLATES,
    concurrency: int | None = None,
    seed: int | None = None,
) -> StepResult:
    """Step 2: ask the LM whether each instruction is a classification task (paper Table 7).

    Writes ``is_clf_or_not.jsonl``: ``instruction``, ``is_classification`` (bool), ``raw`` (the LM's
    text), ``parsed`` (False when the answer was neither yes nor no; then the task is treated as a
    generation task and counted under ``unparseable_answer``).

    Args:
        concurrency: requests in flight (default: the client's ``max_concurrency``); ``batch_size`` is
            its old name.
        seed: the run seed; given, each request carries its own sampling seed (:func:`step_seed`).
    Returns:
        counts ``classified``, ``classification``, ``generation``; rejections ``unparseable_answer``.
    """
    return CLASSIFICATION.map(client, run, [{"instruction": i} for i in instructions], params=params,
                              templates=templates, concurrency=concurrency or batch_size, progress=progress, seed=seed)


# --- Step 3 --------------------------------------------------------------------------------------------------
def _instance_record(task: dict, comp: Completion) -> dict:
    return {"instruction": task["instruction"], "is_classification": task["is_classification"],
            "raw_instances": comp.text, "finish_reason": comp.finish_reason}


def _instance_summary(done: list[dict]) -> StepResult:
    return StepResult(counts={
        "tasks": len(done),
        "truncated": sum(1 for r in done if r["finish_reason"] == "length"),
        "empty": sum(1 for r in done if not r["raw_instances"].strip()),
    })


#: Step 3 (paper Table 8): output-first for classification tasks, input-first otherwise.
INSTANCES = MapStep("instances", "instances", TABLE4["instances"],
                    template=lambda t, task: t.instance_prompt(task["instruction"], task["is_classification"]),
                    parse=_instance_record, summarize=_instance_summary, desc="step 3: instances")


def generate_instances(
    client: LMClient,
    tasks: Sequence[tuple[str, bool]],
    run: RunDir,
    *,
    params: SamplingParams = TABLE4["instances"],
    batch_size: int | None = None,
    progress: bool = True,
    templates: TemplateSet = KIT_TEMPLATES,
    concurrency: int | None = None,
    seed: int | None = None,
) -> StepResult:
    """Step 3: generate instances, input-first for generation tasks and output-first (class label
    first) for classification tasks (paper Sec. 2.2, Table 8).

    Writes ``machine_generated_instances.jsonl``: ``instruction``, ``is_classification``,
    ``raw_instances`` (the LM's text), ``finish_reason``. Parsing and filtering happen in step 4
    (:func:`selfinstruct_utils.finetune.build_finetuning_data`), as in the released code.

    Args:
        tasks: (instruction, is_classification) pairs.
        concurrency: requests in flight (default: the client's ``max_concurrency``); ``batch_size`` is
            its old name.
        seed: the run seed; given, each request carries its own sampling seed (:func:`step_seed`).
    Returns:
        counts ``tasks``, ``truncated`` (finish_reason "length"), ``empty`` (no text).
    """
    return INSTANCES.map(client, run, [{"instruction": i, "is_classification": c} for i, c in tasks], params=params,
                         templates=templates, concurrency=concurrency or batch_size, progress=progress, seed=seed)
