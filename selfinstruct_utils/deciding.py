"""Step 1's decisions (paper Sec. 2.2), in the driver's process or in a worker process of their own.

A completion becomes candidate instructions, the rule filters run, then the ROUGE-L novelty filter
against the task pool (:func:`decide_candidates`). :class:`Decisions` holds the pool and applies that to
the completions of step 1 in request order, with the run's stopping rule (:func:`last_decided`), so the
same answers give the same decisions wherever they run. :class:`DecisionWorker` runs a
:class:`Decisions` in a separate process: a live run keeping hundreds of requests in flight spends
2-4 ms of CPU per request on these decisions, more than one event loop can spare beside its HTTP work
(rapidfuzz's LCS kernel holds the GIL on one thread, so a thread would not help; see
``benchmarks/results/bench_throughput.md``).

The worker is a fresh interpreter (``python -m selfinstruct_utils.deciding``), never a fork of a process
that may hold threads and never a re-run of the caller's script (as multiprocessing's spawn would do to
a script without a ``__main__`` guard). It ignores Ctrl-C (the driver ends it), ends when the driver's
end of its pipe closes (the driver was killed), and reports its own failure as a traceback.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from .filters import instruction_rejection_reason
from .novelty import NoveltyPool
from .parse import parse_instructions

__all__ = ["decide_candidates", "last_decided", "DecisionRules", "Decisions", "DecisionWorker", "DecisionWorkerError"]


def decide_candidates(
    text: str | None,
    finish_reason: str | None,
    pool: NoveltyPool,
    *,
    threshold: float = 0.7,
    comparison: str = "gt",
    still_needed: int | None = None,
    record_similar: int = 10,
) -> tuple[list[dict], list[dict]]:
    """Decide one completion's candidate instructions against the task pool (accepted ones join it).

    The continuation is parsed (:func:`~selfinstruct_utils.parse.parse_instructions`), the rule filters
    run (:func:`~selfinstruct_utils.filters.instruction_rejection_reason`), then the ROUGE-L novelty
    filter (:meth:`~selfinstruct_utils.novelty.NoveltyPool.add_novel`).

    Args:
        text, finish_reason: the completion.
        pool: the task pool (seeds + kept machine instructions); modified.
        threshold, comparison: the novelty filter (paper: 0.7).
        still_needed: keep at most this many (later novel ones are decided ``over_target``); None: no limit.
        record_similar: neighbours recorded per kept instruction (0: none).
    Returns:
        ``(candidates, kept)``: every candidate as {"instruction", "decision"} (a rejection reason,
        "too_similar" with "rougeL" and "most_similar", "over_target", or "kept"), and one record per
        kept instruction with its ``most_similar`` pool instructions (pool as it was before it joined)
        and ``avg_similarity_score``, as the released code records them.
    """
    candidates, passing = _screen(text, finish_reason)
    return _judge(candidates, passing, pool, threshold=threshold, comparison=comparison, still_needed=still_needed,
                  record_similar=record_similar)


def _screen(text: str | None, finish_reason: str | None) -> tuple[list[dict], list[str]]:
    """The pool-free half of :func:`decide_candidates`: (the parser's and the rule filters' rejections as
    candidate records, the instructions that pass them)."""
    parsed = parse_instructions(text, finish_reason)
    candidates = [{"instruction": r.text, "decision": r.reason} for r in parsed.rejections]
    passing = []
    for inst in parsed.instructions:
        reason = instruction_rejection_reason(inst)
        if reason is None:
            passing.append(inst)
        else:
            candidates.append({"instruction": inst, "decision": reason})
    return candidates, passing


def _judge(candidates: list[dict], passing: list[str], pool: NoveltyPool, *, threshold: float, comparison: str,
           still_needed: int | None, record_similar: int) -> tuple[list[dict], list[dict]]:
    """The novelty half of :func:`decide_candidates` (``candidates`` is extended)."""
    n_before = len(pool)
    decisions = pool.add_novel(passing, threshold=threshold, comparison=comparison, max_accept=still_needed)
    kept = []
    for inst, dec in zip(passing, decisions, strict=True):
        if dec.accepted:
            record = {"instruction": inst}
            if record_similar:
                (neighbours, mean), = pool.index.top_k([inst], record_similar, upto=n_before + len(kept))
                record["most_similar"] = dict(neighbours)
                record["avg_similarity_score"] = mean
            kept.append(record)
            candidates.append({"instruction": inst, "decision": "kept"})
        elif dec.over_limit:
            candidates.append({"instruction": inst, "decision": "over_target"})
        else:
            candidates.append({"instruction": inst, "decision": "too_similar", "rougeL": dec.score,
                               "most_similar": dec.blocker})
    return candidates, kept


def last_decided(scheduler: str, W: int, reached_at: int) -> int:
    """The last request step 1 decides when request ``reached_at`` reaches the target: itself ("lag";
    requests still in flight are answered, cached and counted, but not decided) or the last of its batch
    of ``W`` ("batch", as earlier versions did)."""
    return reached_at if scheduler == "lag" else (reached_at // W + 1) * W - 1


@dataclass(frozen=True)
class DecisionRules:
    """What step 1's decisions depend on besides the pool (see
    :func:`~selfinstruct_utils.generate.generate_instructions` for each)."""

    num_instructions: int
    threshold: float = 0.7
    comparison: str = "gt"
    exact_num_instructions: bool = True
    record_similar: int = 10
    scheduler: str = "lag"
    W: int = 1


class Decisions:
    """Step 1's decisions in request order: the task pool, the number kept so far, and the last request
    to decide.

    Args:
        seed_instructions: the pool's seeds (never filtered).
        rules: the decision parameters.
        replay: the kept instructions of each request already decided (the run's log), in request order;
            they join the pool unfiltered.
        stop_at: the last request to decide, as known after ``replay`` (``max_requests - 1`` or the stop
            the log already reached); lowered when a decision reaches the target.
    """

    def __init__(self, seed_instructions: Sequence[str], rules: DecisionRules, replay: Sequence[Sequence[str]] = (),
                 stop_at: int = sys.maxsize):
        self.rules = rules
        self.pool = NoveltyPool(seed_instructions)
        self.n_kept = 0
        for kept in replay:
            self.pool.add(list(kept))
            self.n_kept += len(kept)
        self.next_request = len(replay)
        self.stop_at = stop_at

    #: Candidates scored against the pool together (:meth:`iter_decide`): rapidfuzz's kernel scores this
    #: many short texts in one call for about the price of four (``RougeIndex.prescore``).
    prescore_group = 32

    def decide(self, rid: int, text: str | None, finish_reason: str | None) -> tuple[list[dict], list[dict]] | None:
        """Decide request ``rid``'s completion (requests must come in order).

        Returns:
            ``(candidates, kept)`` as :func:`decide_candidates`, or None when ``rid`` is past the last
            request to decide (the target was reached before it).
        Raises:
            ValueError: ``rid`` is not the next request.
        """
        return self.decide_many([(rid, text, finish_reason)])[0]

    def decide_many(self, answers: Sequence[tuple[int, str | None, str | None]]) -> list[tuple[list[dict], list[dict]] | None]:
        """:meth:`iter_decide`, as a list."""
        return [out for _, out in self.iter_decide(answers)]

    def iter_decide(self, answers: Sequence[tuple[int, str | None, str | None]]):
        """Decide several consecutive requests' completions ``(rid, text, finish_reason)`` in order, and
        yield ``(rid, decided)`` as soon as each is decided (``decided`` as :meth:`decide` returns): the same
        decisions and records as :meth:`decide` one by one, computed faster.

        When neighbours are recorded (``record_similar``), the candidates that pass the rule filters are
        scored against the pool :attr:`prescore_group` or a few more at a time, just before the requests
        holding them are decided (:meth:`RougeIndex.prescore <selfinstruct_utils.rouge.RougeIndex.prescore>`);
        each decision reads its candidates' rows, extended with the instructions kept since, and a kept
        instruction's neighbours and mean come from its own row. Every pair is scored, none pruned: a kept
        instruction's mean similarity needs its whole row anyway.

        Measured (``benchmarks/bench_decisions.py``, real instructions, 3 candidates a request): at a pool
        of 42,000, 15.7 ms of CPU a request one by one and 8.9 ms in runs of 64 (the engine before: 35 ms);
        at 10,000, 3.6 ms either way; at 1,000, 1.4 ms.

        Raises:
            ValueError: the answers do not start at the next request or skip one (before any is decided).
        """
        answers = list(answers)
        for k, (rid, _, _) in enumerate(answers):
            if rid != self.next_request + k:
                raise ValueError(f"step 1 decides request {self.next_request + k} next, not {rid}")
        r = self.rules
        screened: dict[int, tuple[list[dict], list[str]]] = {}
        ahead = 0  # answers screened (and their candidates prescored) so far
        try:
            for k, (rid, _, _) in enumerate(answers):
                self.next_request += 1
                if rid > self.stop_at:
                    screened.pop(k, None)
                    yield rid, None
                    continue
                if k >= ahead:  # screen the next answers; score their passing candidates together
                    group: list[str] = []
                    while ahead < len(answers) and len(group) < self.prescore_group:
                        screened[ahead] = _screen(*answers[ahead][1:])
                        group += screened[ahead][1]
                        ahead += 1
                    self.pool.index.forget_scores()
                    if r.record_similar:
                        self.pool.index.prescore(self.pool.index.encode(group))
                candidates, kept = _judge(
                    *screened.pop(k), self.pool, threshold=r.threshold, comparison=r.comparison,
                    still_needed=max(0, r.num_instructions - self.n_kept) if r.exact_num_instructions else None,
                    record_similar=r.record_similar,
                )
                reached = self.n_kept >= r.num_instructions
                self.n_kept += len(kept)
                if not reached and self.n_kept >= r.num_instructions:
                    self.stop_at = min(self.stop_at, last_decided(r.scheduler, r.W, rid))
                yield rid, (candidates, kept)
        finally:
            self.pool.index.forget_scores()


class DecisionWorkerError(RuntimeError):
    """The decision worker failed (its traceback is in the message) or ended without being asked to."""


#: The most answers the worker takes into one :meth:`Decisions.iter_decide`.
_MOST = 256


def _serve(inbox_conn: Connection, outbox_conn: Connection) -> None:
    """The worker's main: say ``("ready",)`` (its imports are done), read ``(seed_instructions, rules,
    replay, stop_at)``, then decide the ``(rid, text, finish_reason)`` of the lists received, in order, and
    send back ``("decided", rid, candidates, kept)`` as each is decided (``("skipped", rid)`` past the stop);
    None ends it with ``("bye",)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the driver ends us
    # The inbox thread needs the GIL for each message while the decisions hold it: with the default 5 ms
    # switch interval it took in about 200 messages a second, fewer than a run at C = 256 sends (measured).
    sys.setswitchinterval(0.0005)
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        # Always drain the driver's pipe, so it never blocks on a send while we block on ours.
        try:
            while True:
                inbox.put(inbox_conn.recv())
        except (EOFError, OSError):
            inbox.put(None)

    threading.Thread(target=read, daemon=True, name="decisions-inbox").start()
    try:
        outbox_conn.send(("ready",))
        first = inbox.get()
        if first is None:
            return
        seed_instructions, rules, replay, stop_at = first
        decisions = Decisions(seed_instructions, DecisionRules(**rules), replay, stop_at)
        del first, replay
        ending = False
        while not ending:
            # Everything that arrived while the last answers were decided is decided in one call (the
            # candidates of many requests share the LCS kernel's calls: Decisions.iter_decide), up to _MOST.
            batch = inbox.get()
            if batch is None:
                break
            while len(batch) < _MOST:
                try:
                    more = inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    ending = True
                    break
                batch += more
            for rid, out in decisions.iter_decide(batch):  # each reply goes as soon as it is decided
                outbox_conn.send(("skipped", rid) if out is None else ("decided", rid, *out))
        outbox_conn.send(("bye",))
    except (BrokenPipeError, ConnectionResetError):  # the driver is gone
        os._exit(1)
    except BaseException:
        try:
            outbox_conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
        os._exit(1)


class DecisionWorker:
    """A :class:`Decisions` in a worker process (``python -m selfinstruct_utils.deciding``, a fresh
    interpreter: never a fork of a process that may hold threads, never a second run of the caller's
    script), fed through one pipe and read through another.

    Use as a context manager: leaving it normally lets the worker finish and reaps it; leaving it by an
    exception or Ctrl-C kills it. The process starts at once (one interpreter start: about 0.3 s of CPU
    and 1 s of wall time for the numpy and rapidfuzz imports) and says ``("ready",)`` (:meth:`recv`; then
    :attr:`ready` is True); :meth:`start` gives it the pool, which it builds while the driver goes on.
    Send completions with :meth:`send` in request order from the first request :meth:`start` did not
    replay; read ``("decided", rid, candidates, kept)`` or ``("skipped", rid)`` with :meth:`recv`
    (:meth:`poll` says whether one is waiting; :meth:`fileno` can be watched by an event loop). The
    worker's CPU time counts in the driver's ``os.times()`` children once it is reaped (:meth:`close`,
    :meth:`kill`).

    Raises:
        DecisionWorkerError: from :meth:`send` / :meth:`recv` when the worker failed or died.
    """

    def command(self, to_worker: int, from_worker: int) -> list[str]:
        """The worker's command line, given the pipe ends it reads and writes (``-P``: the working
        directory does not come first on the worker's path, so a ``selfinstruct_utils`` folder there, e.g.
        another checkout of the kit, cannot stand in for this one)."""
        return [sys.executable, "-P", "-m", __name__, str(to_worker), str(from_worker)]

    def __init__(self) -> None:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        package_parent = str(Path(__file__).resolve().parent.parent)  # this very package, whatever sys.path says
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
        try:
            self.process = subprocess.Popen(self.command(to_worker_r, from_worker_w), env=env,
                                            pass_fds=(to_worker_r, from_worker_w), stdin=subprocess.DEVNULL)
        except BaseException:
            for fd in (to_worker_r, to_worker_w, from_worker_r, from_worker_w):
                os.close(fd)
            raise
        os.close(to_worker_r)
        os.close(from_worker_w)
        self._out = Connection(to_worker_w, readable=False)
        self._in = Connection(from_worker_r, writable=False)
        self._closed = False
        self.ready = False

    def start(self, seed_instructions: Sequence[str], rules: DecisionRules, replay: Sequence[Sequence[str]] = (),
              stop_at: int = sys.maxsize) -> None:
        """Give the worker its :class:`Decisions` (arguments as there); it decides request ``len(replay)`` next."""
        try:
            self._out.send((list(seed_instructions), asdict(rules), [list(k) for k in replay], stop_at))
        except OSError as err:
            raise self._died(err) from err

    def wait_ready(self) -> None:
        """Wait for the worker's ``("ready",)``."""
        while not self.ready:
            self.recv()

    def fileno(self) -> int:
        """The pipe the replies come on (readable when one, or the worker's end, is waiting)."""
        return self._in.fileno()

    def _died(self, cause: BaseException | None = None) -> DecisionWorkerError:
        try:
            code = self.process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        return DecisionWorkerError(
            f"step 1's decision worker (pid {self.process.pid}) ended unexpectedly (exit code {code}); "
            "the records written so far stay, and running the same command again resumes after them"
            + (f" ({cause})" if cause else ""))

    def send(self, answers: Sequence[tuple[int, str | None, str | None]]) -> None:
        """Hand completions ``(rid, text, finish_reason)`` to the worker (every request in order, from the
        first not yet decided), in one message."""
        try:
            self._out.send(list(answers))
        except OSError as err:
            raise self._died(err) from err

    def poll(self) -> bool:
        """Is a reply (or the end of the pipe) waiting?"""
        return self._in.poll()

    def recv(self) -> tuple:
        """The next reply, waiting for it."""
        try:
            msg = self._in.recv()
        except (EOFError, OSError) as err:
            raise self._died() from err
        if msg[0] == "error":
            self.process.wait()
            raise DecisionWorkerError(f"step 1's decision worker (pid {self.process.pid}) failed:\n{msg[1]}")
        if msg[0] == "bye":
            raise DecisionWorkerError("step 1's decision worker ended before every reply was read")
        if msg[0] == "ready":
            self.ready = True
        return msg

    def close(self, timeout: float = 60.0) -> None:
        """Ask the worker to end (after the completions sent are decided), wait for it and reap it."""
        if self._closed:
            return
        try:
            self._out.send(None)
            while self._in.poll(timeout):  # replies still queued, then "bye" or the pipe's end
                if self._in.recv()[0] in ("bye", "error"):
                    break
            self.process.wait(timeout)
        except (EOFError, OSError, subprocess.TimeoutExpired):
            pass
        finally:
            self.kill()

    def kill(self) -> None:
        """End the worker now (no reply is read) and reap it."""
        self._closed = True
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._out.close()
        self._in.close()

    def __enter__(self) -> DecisionWorker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.kill()


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
