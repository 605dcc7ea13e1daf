"""Send a step's requests through the OpenAI Batch API, or export them for an offline batch run.

:class:`BatchLMClient` has :class:`~selfinstruct_utils.llm.LMClient`'s ``complete`` interface: one
call sends all of its uncached prompts as one batch (several, past ``max_batch_requests``) and blocks
until every answer is back:

1. write a JSONL of requests (``custom_id``, ``method``, ``url``, ``body``: the body that
   ``/v1/completions`` or ``/v1/chat/completions`` takes), upload it (``/v1/files``, purpose "batch");
2. create the batch (``/v1/batches``, completion window "24h") with a metadata tag naming the round;
3. poll it with a progress bar (``request_counts``), then download its output and error files and map
   the answers back by ``custom_id``.

Resumable: each round's state lives in ``<state_dir>/<step>-<first request>-<tag>.json`` (the tag is a
hash of the round's requests), written atomically *before* a batch is created (uploaded file id and
metadata tag) and again after (batch id). A process killed at any point resumes the same round: it
polls the recorded batch, or, when it died between creating a batch and recording its id, finds the
batch by its metadata tag (``GET /v1/batches``) instead of creating another. Answers go to the response
cache keyed exactly as :class:`LMClient` keys them, so a rerun sends nothing.

Faults: lines in the error file (or missing from the output) are resubmitted in a follow-up batch, at
most ``max_retries`` times, then reported by ``custom_id`` with their errors; an expired batch's
unfinished lines are resubmitted the same way; a failed or cancelled batch raises
:class:`~selfinstruct_utils.llm.LMRequestError` naming the batch id and its errors.

Cost is recorded at batch prices: ``price_per_million`` is the list price times ``batch_discount``
(OpenAI: 0.5).

Offline runs (``selfinstruct batch export`` / ``import``): :class:`ExportingClient` answers from the
cache and, for a round that is not cached, writes the same JSONL that vLLM's
``python -m vllm.entrypoints.openai.run_batch -i in.jsonl -o out.jsonl --model M`` reads and raises
:class:`BatchExported`; :func:`import_results` puts that run's output JSONL into the cache, where the
next ``selfinstruct batch export`` (or run) finds it. Its ``custom_id`` holds the cache key.

Source: the OpenAI Batch API reference (files, batches, request/response line formats).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from .llm import Completion, LMClient, LMRequestError, ResponseCache, SamplingParams, Usage
from .records import write_atomic, write_json_atomic

__all__ = ["BatchLMClient", "ExportingClient", "BatchExported", "export_pending", "import_results", "request_line",
           "parse_result_line"]

#: Batch states after which nothing changes.
TERMINAL = ("completed", "failed", "expired", "cancelled")
_TAG_KEY = "selfinstruct_round"


class BatchExported(RuntimeError):
    """A step needs answers that are not in the cache; its requests were written for an offline run.

    Attributes:
        path: the JSONL of requests.
        step: the step name.
        count: requests in it.
    """

    def __init__(self, message: str, path: Path, step: str, count: int):
        super().__init__(message)
        self.path, self.step, self.count = path, step, count


def request_line(custom_id: str, model: str, api: str, prompt: str, params: SamplingParams) -> dict[str, Any]:
    """One Batch API input line: ``{"custom_id", "method": "POST", "url", "body"}``, the body as
    ``/v1/completions`` (``api="completions"``) or ``/v1/chat/completions`` (``"chat"``: the prompt
    becomes one user message; ``logprobs`` is left out) takes it."""
    body: dict[str, Any] = {"model": model, **params.to_request()}
    if api == "completions":
        body["prompt"] = prompt
        url = "/v1/completions"
    else:
        body.pop("logprobs", None)
        body["messages"] = [{"role": "user", "content": prompt}]
        url = "/v1/chat/completions"
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def parse_result_line(obj: Any) -> tuple[str, Completion | None, str | None]:
    """Read one output/error line (OpenAI's or vLLM ``run_batch``'s format).

    Returns:
        ``(custom_id, completion or None, error or None)``: a completion for a response with status 200
        and no error, else a one-line description of the error.
    Raises:
        ValueError: the line has no ``custom_id``.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("custom_id"), str):
        raise ValueError("no custom_id")
    cid = obj["custom_id"]
    err = obj.get("error")
    resp = obj.get("response") if isinstance(obj.get("response"), dict) else None
    status = resp.get("status_code") if resp else None
    body = resp.get("body") if resp else None
    if err or status != 200 or not isinstance(body, dict):
        if isinstance(err, dict):
            desc = f"{err.get('code') or 'error'}: {err.get('message') or ''}".strip()
        elif err:
            desc = str(err)
        else:
            inner = body.get("error") if isinstance(body, dict) else None
            msg = inner.get("message") if isinstance(inner, dict) else (inner or body)
            desc = f"HTTP {status}: {msg}"
        return cid, None, desc[:300]
    choices = []
    for c in body.get("choices") or []:
        if not isinstance(c, dict):
            continue
        if "message" in c:
            text = (c.get("message") or {}).get("content") or ""
        else:
            text = c.get("text") or ""
        choices.append((text, c.get("finish_reason")))
    usage = body.get("usage") or {}
    return cid, Completion(choices=choices, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                           completion_tokens=int(usage.get("completion_tokens") or 0)), None


def _per_params(params: SamplingParams, seeds: Sequence[int | None] | None, n: int) -> list[SamplingParams]:
    return [params if seeds is None else params.replace(seed=s) for s in (seeds if seeds is not None else [None] * n)]


class BatchLMClient:
    """An LM client that sends each ``complete`` call through the OpenAI Batch API.

    Args:
        model, base_url, api_key, api, identity: as :class:`~selfinstruct_utils.llm.LMClient` (the
            identity, for the cache key and the manifest, is the same as a live client's).
        state_dir: folder of the per-round state files (a run's ``batches/``).
        cache_dir: response cache folder (None: ``<state_dir>/responses``: answers are always kept, so a
            process killed after a round came back never submits its requests again).
        price_per_million: (input, output) list prices in USD per million tokens.
        batch_discount: the batch price as a fraction of the list price (OpenAI: 0.5).
        poll_seconds: seconds between two polls of a running batch.
        max_retries: follow-up batches for lines that failed or were left unfinished (expired).
        max_batch_requests: most lines per batch (OpenAI: 50,000); a larger round is split.
        completion_window: the batch's window ("24h").
        progress: show a progress bar while polling.
    """

    batch_api = True

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        api: Literal["completions", "chat"] = "completions",
        state_dir: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        price_per_million: tuple[float, float] = (0.0, 0.0),
        batch_discount: float = 0.5,
        poll_seconds: float = 30.0,
        max_retries: int = 2,
        max_batch_requests: int = 50_000,
        completion_window: str = "24h",
        identity: str | None = None,
        progress: bool = True,
    ):
        self._live = LMClient(model, base_url=base_url, api_key=api_key, api=api, identity=identity)
        self.model, self.api = model, api
        self.base_url = self._live.base_url  # the argument, or $OPENAI_BASE_URL
        self.state_dir = Path(state_dir)
        self.cache = ResponseCache(cache_dir if cache_dir is not None else self.state_dir / "responses")
        self.list_price_per_million = tuple(price_per_million)
        self.batch_discount = batch_discount
        self.poll_seconds = poll_seconds
        self.max_retries = max_retries
        self.max_batch_requests = max_batch_requests
        self.completion_window = completion_window
        self.progress = progress
        self.max_concurrency = 1
        self.usage: dict[str, Usage] = {}
        self._sdk = None

    def __repr__(self) -> str:
        return f"BatchLMClient(model={self.model!r}, base_url={self.base_url!r}, api={self.api!r})"

    @property
    def price_per_million(self) -> tuple[float, float]:
        """(input, output) USD per million tokens at batch prices (what the usage log records)."""
        pin, pout = self.list_price_per_million
        return (pin * self.batch_discount, pout * self.batch_discount)

    @property
    def identity(self) -> str:
        """The model's identity, as :attr:`LMClient.identity` (same cache keys as a live client)."""
        return self._live.identity

    def describe(self) -> dict[str, Any]:
        """What a run manifest records about the client (no key)."""
        return {
            "model": self.model, "identity": self.identity, "base_url": self.base_url,
            "fingerprint": self._live.fingerprint, "api": self.api, "batch_api": True, "completion_window": self.completion_window, "max_retries": self.max_retries,
            "price_per_million": list(self.price_per_million),
            "list_price_per_million": list(self.list_price_per_million), "batch_discount": self.batch_discount,
        }

    def _openai(self):
        """The ``openai`` client (made once: building one costs about 0.1-0.8 s of CPU for its TLS context)."""
        if self._sdk is None:
            import openai

            self._sdk = openai.OpenAI(api_key=self._live._api_key, base_url=self.base_url, max_retries=5, timeout=600.0)
        return self._sdk

    def _error(self, text: str) -> LMRequestError:
        return LMRequestError(self._live._sanitize(text))

    # --- the round -------------------------------------------------------------------------------------
    def complete(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        step: str = "lm",
        request_ids: Sequence[int] | None = None,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Completion]:
        """Complete each prompt through the Batch API, blocking until the whole round is back.

        Args:
            prompts: k prompts.
            params: sampling parameters for all of them.
            step: step name (state file, usage counters, error messages).
            request_ids: k request indices (default 0..k-1): ``custom_id`` is ``<step>-<id>``.
            seeds: k per-request sampling seeds overriding ``params.seed``.
        Returns:
            k completions in the order of ``prompts``; each live one carries its tokens and an equal
            share of the round's wall time.
        Raises:
            LMRequestError: a batch failed or was cancelled (its id and errors named), or lines still
                failed after ``max_retries`` follow-up batches (their ``custom_id`` and errors named).
        """
        ids = list(request_ids) if request_ids is not None else list(range(len(prompts)))
        per = _per_params(params, seeds, len(prompts))
        if not (len(ids) == len(per) == len(prompts)):
            raise ValueError("prompts, request_ids and seeds must have the same length")
        usage = self.usage.setdefault(step, Usage())
        keys = [ResponseCache.key(self.api, self.model, pr, p, self.identity) for pr, p in zip(prompts, per, strict=True)]
        out: list[Completion | None] = [None] * len(prompts)
        for i, key in enumerate(keys):
            hit = self.cache.get(key)
            if hit is not None:
                out[i] = hit
                usage.add(Usage.of_answer(hit))
        todo = [i for i in range(len(prompts)) if out[i] is None]
        if todo:
            unique = len(set(ids)) == len(ids)
            cids = [f"{step}-{ids[i] if unique else i}" for i in range(len(prompts))]
            # The round's tag covers every request of the call, cached or not: a process killed while it
            # cached a returned round's answers finds the same round (and its batches) again.
            tag = hashlib.sha256(json.dumps([step, cids, keys]).encode()).hexdigest()[:20]
            lines = {cids[i]: request_line(cids[i], self.model, self.api, prompts[i], per[i]) for i in todo}
            start = time.perf_counter()
            results = self._run_round(step, ids[0], tag, lines)
            share = (time.perf_counter() - start) / len(todo)
            for i in todo:
                comp = results[cids[i]]
                comp.seconds = share
                out[i] = comp
                usage.add(Usage.of_answer(comp, self.price_per_million))
                self.cache.put(keys[i], comp)
        return out  # type: ignore[return-value]

    def _run_round(self, step: str, first_id: int, tag: str, lines: dict[str, dict]) -> dict[str, Completion]:
        """Send ``lines`` (custom_id -> input line) as batches until each has an answer (or fails); the
        round's state file is named by ``tag``."""
        path = self.state_dir / f"{step}-{first_id}-{tag[:12]}.json"
        state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {
            "step": step, "tag": tag, "model": self.model, "requests": len(lines), "batches": [],
        }
        client = self._openai()
        results: dict[str, Completion] = {}
        errors: dict[str, str] = {}
        try:
            # Answers of batches that an earlier (killed) process had read already.
            for b in state["batches"]:
                if b.get("read"):
                    self._collect(client, b, results, errors)
            while True:
                attempt = max((b["attempt"] for b in state["batches"]), default=-1)
                current = [b for b in state["batches"] if b["attempt"] == attempt and not b.get("read")]
                if current:
                    for b in current:
                        if not b.get("batch_id"):
                            self._create(client, b, state, path, look_first=True)
                    self._poll(client, current, state, path, step)
                    for b in current:
                        self._collect(client, b, results, errors)
                        b["read"] = True
                    write_json_atomic(path, state, indent=None)
                pending = [cid for cid in lines if cid not in results]
                if not pending:
                    state["done"] = True
                    write_json_atomic(path, state, indent=None)
                    return results
                if attempt + 1 > self.max_retries:
                    detail = "; ".join(f"{cid}: {errors.get(cid, 'no answer')}" for cid in pending[:10])
                    raise self._error(
                        f"step '{step}': {len(pending)} of {len(lines)} requests have no answer after "
                        f"{attempt + 1} batches ({', '.join(str(b['batch_id']) for b in state['batches'])}): {detail}"
                        + (" ..." if len(pending) > 10 else "")
                        + f". Delete {path} to submit them again."
                    )
                self._submit(client, attempt + 1, [lines[c] for c in pending], state, path, step)
        except BaseException:
            self._sdk = None  # a fresh connection pool for the next call
            client.close()
            raise

    def _submit(self, client, attempt: int, lines: list[dict], state: dict, path: Path, step: str) -> None:
        """Upload the lines (in parts of ``max_batch_requests``) and create one batch per part; each
        part is recorded (file id, metadata tag) before its batch is created."""
        for part, lo in enumerate(range(0, len(lines), self.max_batch_requests)):
            chunk = lines[lo: lo + self.max_batch_requests]
            data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in chunk).encode("utf-8")
            name = f"{step}-{state['tag'][:12]}-{attempt}-{part}.jsonl"
            uploaded = client.files.create(file=(name, io.BytesIO(data), "application/jsonl"), purpose="batch")
            entry = {"attempt": attempt, "part": part, "metadata_tag": f"{state['tag']}:{attempt}:{part}",
                     "input_file_id": uploaded.id, "custom_ids": [line["custom_id"] for line in chunk],
                     "endpoint": chunk[0]["url"], "recorded_at": time.time(), "batch_id": None}
            state["batches"].append(entry)
            write_json_atomic(path, state, indent=None)  # before the batch exists: a resumed process looks for it first
            self._create(client, entry, state, path, look_first=False)

    def _create(self, client, entry: dict, state: dict, path: Path, *, look_first: bool) -> None:
        """Create the entry's batch and record its id. ``look_first``: a process was killed after
        recording the entry; a batch with its metadata tag may exist already (listed newest first):
        take that one instead of creating a second."""
        found = None
        if look_first:
            for batch in client.batches.list(limit=100):
                if (getattr(batch, "metadata", None) or {}).get(_TAG_KEY) == entry["metadata_tag"]:
                    found = batch
                    break
                if (getattr(batch, "created_at", None) or 0) < entry.get("recorded_at", 0) - 3600:
                    break  # older than the entry: ours is not further down
        if found is None:
            found = client.batches.create(
                input_file_id=entry["input_file_id"], endpoint=entry["endpoint"],
                completion_window=self.completion_window, metadata={_TAG_KEY: entry["metadata_tag"]},
            )
        entry["batch_id"] = found.id
        write_json_atomic(path, state, indent=None)

    def _poll(self, client, entries: list[dict], state: dict, path: Path, step: str) -> None:
        """Poll the entries' batches until each is in a terminal state; failed/cancelled ones raise."""
        total = sum(len(e["custom_ids"]) for e in entries)
        bar = tqdm(total=total, desc=f"{step}: batch", unit="req", disable=not self.progress, dynamic_ncols=True)
        try:
            while True:
                done = 0
                running = False
                for e in entries:
                    if e.get("status") in TERMINAL:
                        done += e.get("finished", 0)
                        continue
                    batch = client.batches.retrieve(e["batch_id"])
                    counts = batch.request_counts
                    e["finished"] = (counts.completed + counts.failed) if counts else 0
                    done += e["finished"]
                    if batch.status in ("failed", "cancelled", "cancelling"):
                        errs = getattr(getattr(batch, "errors", None), "data", None) or []
                        detail = "; ".join(
                            f"line {getattr(x, 'line', None)}: {getattr(x, 'code', '')}: {getattr(x, 'message', '')}"
                            for x in errs[:10]) or "no errors listed"
                        raise self._error(
                            f"step '{step}': batch {batch.id} {batch.status} ({detail}). "
                            f"Fix the cause and delete {path} to submit the round again."
                        )
                    if batch.status in TERMINAL:
                        e.update(status=batch.status, output_file_id=batch.output_file_id,
                                 error_file_id=batch.error_file_id)
                        write_json_atomic(path, state, indent=None)
                    else:
                        running = True
                bar.n = done
                bar.refresh()
                if not running:
                    return
                time.sleep(self.poll_seconds)
        finally:
            bar.close()

    def _collect(self, client, entry: dict, results: dict[str, Completion], errors: dict[str, str]) -> None:
        """Read a finished batch's output and error files into ``results`` and ``errors``."""
        mine = set(entry["custom_ids"])
        for key in ("output_file_id", "error_file_id"):
            file_id = entry.get(key)
            if not file_id:
                continue
            text = client.files.content(file_id).text
            for n, raw in enumerate(text.splitlines(), 1):
                if not raw.strip():
                    continue
                try:
                    cid, comp, err = parse_result_line(json.loads(raw))
                except ValueError as exc:
                    raise self._error(f"batch {entry['batch_id']}: {key} {file_id} line {n} is unreadable: {exc}") from None
                if cid not in mine:
                    continue
                if comp is not None:
                    results[cid] = comp
                    errors.pop(cid, None)
                elif cid not in results:
                    errors[cid] = err or "error"
        for cid in mine - set(results):
            errors.setdefault(cid, f"not finished in batch {entry['batch_id']} ({entry.get('status')})")


class ExportingClient:
    """A client for offline batch runs: answers from the response cache; a round with uncached prompts
    is written as a Batch API JSONL (what vLLM's ``run_batch`` reads) and :class:`BatchExported` is raised.

    Args:
        model: the model name written into each request body.
        cache_dir: the response cache (required: imported answers go there).
        export_dir: where the JSONL goes (a run's ``batches/``).
        api: "completions" or "chat".
        identity: the model's identity in the cache key (default ``offline:<model>``).
        out: the JSONL path (default ``<export_dir>/export-<step>-<first request>.jsonl``).
    """

    batch_api = True

    def __init__(self, model: str, *, cache_dir: str | os.PathLike, export_dir: str | os.PathLike,
                 api: Literal["completions", "chat"] = "completions", identity: str | None = None,
                 out: str | os.PathLike | None = None):
        if not cache_dir:
            raise ValueError("an offline batch run needs a response cache (--cache-dir)")
        self.model, self.api = model, api
        self.identity = identity or f"offline:{model}"
        self.cache = ResponseCache(cache_dir)
        self.export_dir = Path(export_dir)
        self.out = Path(out) if out else None
        self.price_per_million = (0.0, 0.0)
        self.max_concurrency = 1
        self.usage: dict[str, Usage] = {}

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "identity": self.identity, "api": self.api, "batch_api": "offline"}

    def complete(self, prompts: Sequence[str], params: SamplingParams, *, step: str = "lm",
                 request_ids: Sequence[int] | None = None, seeds: Sequence[int | None] | None = None) -> list[Completion]:
        """The cached answers; if any prompt has none, write the round's uncached requests and raise.

        Raises:
            BatchExported: with the JSONL's path; ``custom_id`` is ``<step>-<request id>-<cache key>``.
        """
        ids = list(request_ids) if request_ids is not None else list(range(len(prompts)))
        per = _per_params(params, seeds, len(prompts))
        usage = self.usage.setdefault(step, Usage())
        out: list[Completion | None] = []
        missing = []
        for rid, pr, p in zip(ids, prompts, per, strict=True):
            key = ResponseCache.key(self.api, self.model, pr, p, self.identity)
            hit = self.cache.get(key)
            out.append(hit)
            if hit is None:
                missing.append(request_line(f"{step}-{rid}-{key}", self.model, self.api, pr, p))
        if not missing:
            for hit in out:
                usage.add(Usage.of_answer(hit))  # type: ignore[arg-type]
            return out  # type: ignore[return-value]
        path = self.out or self.export_dir / f"export-{step}-{ids[0]}.jsonl"
        write_atomic(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in missing))
        raise BatchExported(
            f"step '{step}': {len(missing)} requests written to {path}; run them, e.g. "
            f"python -m vllm.entrypoints.openai.run_batch -i {path} -o results.jsonl --model {self.model}, "
            f"then: selfinstruct batch import results.jsonl --run-dir <run> (and export again for the next round)",
            path, step, len(missing),
        )


def import_results(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    run_dir: str | os.PathLike | None = None,
    *,
    price_per_million: tuple[float, float] = (0.0, 0.0),
) -> dict[str, Any]:
    """Put a batch run's output JSONL (OpenAI's or vLLM ``run_batch``'s) into the response cache.

    Each line's ``custom_id`` is ``<step>-<request id>-<cache key>`` as :class:`ExportingClient` wrote
    it; the answer is stored under that key, so the next run that builds the same request is served
    from the cache. With ``run_dir``, the imported tokens go to its ``usage.jsonl`` (one line per step;
    the run then counts the same requests as cache hits).

    Returns:
        ``{"imported": n, "errors": {custom_id: error}, "steps": {step: n}}``.
    Raises:
        ValueError: a line is not JSON or its ``custom_id`` was not written by an export (file and line named).
    """
    path = Path(path)
    cache = ResponseCache(cache_dir)
    per_step: dict[str, list[Completion]] = {}
    errors: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                cid, comp, err = parse_result_line(json.loads(raw))
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: not a batch result line ({exc})") from None
            step, _, key = cid.rpartition("-")
            step = step.rpartition("-")[0]
            if len(key) != 64 or not step or any(ch not in "0123456789abcdef" for ch in key):
                raise ValueError(f"{path}:{n}: custom_id {cid!r} is not one written by `selfinstruct batch export`")
            if comp is None:
                errors[cid] = err or "error"
                continue
            cache.put(key, comp)
            per_step.setdefault(step, []).append(comp)
    if run_dir is not None:
        from .runs import RunDir

        run = RunDir(run_dir, source="cli")
        for step, comps in per_step.items():
            run.log_usage(step, comps, price_per_million)
    return {"imported": sum(map(len, per_step.values())), "errors": errors,
            "steps": {s: len(c) for s, c in per_step.items()}}


def export_pending(
    run_dir: str | os.PathLike,
    config=None,
    *,
    model: str,
    cache_dir: str | os.PathLike,
    api: Literal["completions", "chat"] = "completions",
    identity: str | None = None,
    out: str | os.PathLike | None = None,
    force_new_config: bool = False,
    progress: bool = True,
) -> BatchExported | None:
    """Run a run's steps as far as the cache answers them, and write the next pending requests.

    Steps 2-3 export every remaining request at once; step 1 exports its next round (with a batch
    client, a round of ``request_batch_size`` requests). Run the JSONL offline (vLLM's ``run_batch``),
    :func:`import_results` its output, and call this again for the next round; when every step is done
    it returns None (the run is complete, step 4 included).

    Args:
        run_dir: the run directory (created, or resumed and checked against its stored configuration).
        config: a :class:`~selfinstruct_utils.pipeline.PipelineConfig` (default: the stored one, else defaults).
        model, api, identity, cache_dir, out: as :class:`ExportingClient`.
        force_new_config, progress: as :func:`~selfinstruct_utils.pipeline.run_pipeline`.
    Returns:
        The :class:`BatchExported` that says what was written, or None when nothing was pending.
    Raises:
        ConfigChangedError, DataNotFoundError, DataFormatError: as :func:`run_pipeline`.
    """
    from .pipeline import PipelineConfig, run_pipeline
    from .runs import stored_config

    if config is None:
        stored = stored_config(run_dir)
        config = PipelineConfig.from_dict(stored) if stored else PipelineConfig()
    client = ExportingClient(model, cache_dir=cache_dir, export_dir=Path(run_dir) / "batches", api=api,
                             identity=identity, out=out)
    try:
        run_pipeline(client, run_dir, config, backend={"backend": "offline batch (selfinstruct batch export)"},
                     progress=progress, force_new_config=force_new_config, source="cli")
    except BatchExported as exported:
        return exported
    return None
