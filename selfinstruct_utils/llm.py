"""One client for every language model that speaks the OpenAI API: OpenAI, vLLM, Ollama, llama.cpp.

- Both endpoints: ``completions`` (a vanilla LM with plain prompts, as the paper used GPT-3) and
  ``chat`` (the prompt becomes one user message).
- Per-step sampling parameters (:class:`SamplingParams`; the paper's Table 4 in :data:`TABLE4`).
- Bounded concurrency (asyncio, at most ``max_concurrency`` requests in flight); retries with
  exponential backoff on rate limits (honouring Retry-After), timeouts, connection errors and 5xx are
  the ``openai`` client's own (``max_retries``); after the last one, :class:`LMRequestError` names the
  step, the request and the cause.
- An on-disk response cache keyed by (endpoint, model name, model *identity*, prompt, parameters), never
  the API key, so re-running a notebook costs nothing and gives the same text, and one model's answers
  are never served for another's: the identity is the GGUF's content hash for the embedded server, the
  base URL (also ``$OPENAI_BASE_URL``) plus the model id the server reports (``/v1/models``) and a
  fingerprint of the weights (a short greedy probe completion, llama.cpp's ``/props``) for any other
  server, and ``openai:<model>`` for OpenAI. Texts are stored ASCII-escaped: an unpaired surrogate in an
  answer is replaced by U+FFFD (:func:`clean_text`), never a crash or a stray temporary file.
- A per-request timeout: fixed, or derived from ``max_tokens`` and a worst-case generation speed
  (the embedded server measures its own). A timed-out request can be left unretried
  (``retry_timeouts=False``), so a retry never queues behind the generation the client gave up on.
- Token usage, LM seconds and estimated cost per step (:class:`Usage`).

The API key comes from the ``api_key`` argument or ``OPENAI_API_KEY``; it is never written anywhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from .records import write_json_atomic

__all__ = [
    "SamplingParams",
    "TABLE4",
    "Completion",
    "Usage",
    "LMRequestError",
    "ResponseCache",
    "clean_text",
    "run_sync",
    "LMClient",
]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters of one request (OpenAI API names).

    Attributes:
        max_tokens: most tokens to generate.
        temperature, top_p: sampling (temperature 0: greedy).
        frequency_penalty, presence_penalty: repetition penalties.
        stop: up to 4 stop sequences.
        n: completions per prompt.
        logprobs: log-probabilities of the top tokens (completions endpoint), or None.
        seed: sampling seed, sent to servers that honour it (llama.cpp, OpenAI); part of the cache key.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: int | None = None
    seed: int | None = None

    def replace(self, **changes: Any) -> SamplingParams:
        if "stop" in changes and changes["stop"] is not None:
            changes["stop"] = tuple(changes["stop"])
        return replace(self, **changes)

    def to_request(self) -> dict[str, Any]:
        """The request fields (None values left out): a new dict at every call (callers add to it)."""
        body = {name: getattr(self, name) for name in _PARAM_FIELDS}  # asdict's deep copy costs 10x more
        body["stop"] = list(self.stop) or None
        return {k: v for k, v in body.items() if v is not None}


_PARAM_FIELDS = tuple(f.name for f in fields(SamplingParams))

#: The paper's decoding parameters per step (Table 4). ``instances`` uses the paper's stop
#: "Example 16"; the released code stops at "Example 6" (5 instances at most).
TABLE4: dict[str, SamplingParams] = {
    "instructions": SamplingParams(
        max_tokens=1024, temperature=0.7, top_p=0.5, frequency_penalty=0.0, presence_penalty=2.0,
        stop=("\n\n", "\n16", "16.", "16 ."),
    ),
    "classification": SamplingParams(max_tokens=3, temperature=0.0, top_p=0.0, stop=("\n", "Task:")),
    "instances": SamplingParams(
        max_tokens=300, temperature=0.0, top_p=0.0, frequency_penalty=0.0, presence_penalty=1.5,
        stop=("Example 16", "Task:"),
    ),
}


@dataclass
class Completion:
    """One LM answer.

    Attributes:
        choices: ``n`` pairs (text, finish_reason) -- finish_reason "stop", "length", or None.
        prompt_tokens, completion_tokens: usage reported by the server (0 when it reports none).
        cached: served from the on-disk cache (no request was made).
        seconds: wall time of the request (0 for cache hits).
    """

    choices: list[tuple[str, str | None]]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    seconds: float = 0.0
    #: characters replaced or removed from the texts by :func:`clean_text` (0 for clean text).
    cleaned: int = 0

    def __post_init__(self) -> None:
        # Unpaired surrogates (unwritable as UTF-8) and control characters never reach a record.
        fixed = []
        for text, finish in self.choices:
            text, n = clean_text(text) if isinstance(text, str) else (text, 0)
            self.cleaned += n
            fixed.append((text, finish))
        self.choices = fixed
        if self.cleaned:
            warnings.warn("an LM answer held unpaired surrogates or control characters: surrogates were replaced "
                          "by U+FFFD, control characters removed (Completion.cleaned counts them)", stacklevel=2)

    @property
    def text(self) -> str:
        return self.choices[0][0] if self.choices else ""

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0][1] if self.choices else None


@dataclass
class Usage:
    """Counters of one step: requests, cache hits, tokens, LM seconds (wall), estimated cost (USD).

    One ledger: the in-memory totals (:attr:`LMClient.usage`) and the run's ``usage.jsonl``
    (:meth:`~selfinstruct_utils.runs.RunDir.log_request_usage`) both add up :meth:`of_answer`, the usage
    of one answer, in the order the answers arrive; so for the answers of one run they are equal.
    """

    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cost_usd: float = 0.0

    @classmethod
    def of_answer(cls, completion: Completion, price_per_million: tuple[float, float] = (0.0, 0.0)) -> Usage:
        """The usage of one answer: a cache hit counts as one hit and nothing else; a live answer as one
        request with its tokens, its wall seconds (unrounded) and its cost
        (``(prompt_tokens * input + completion_tokens * output) / 1e6`` USD at ``price_per_million``)."""
        if completion.cached:
            return cls(cache_hits=1)
        pin, pout = price_per_million
        return cls(requests=1, prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                   seconds=completion.seconds,
                   cost_usd=(completion.prompt_tokens * pin + completion.completion_tokens * pout) / 1e6)

    def add(self, other: Usage) -> None:
        """Add ``other``'s counters to these."""
        for key in ("requests", "cache_hits", "prompt_tokens", "completion_tokens", "seconds", "cost_usd"):
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def to_dict(self) -> dict[str, Any]:
        """The counters as a dict, seconds rounded to 3 decimals and cost to 6 (as the run manifest shows them)."""
        out = asdict(self)
        out["seconds"] = round(out["seconds"], 3)
        out["cost_usd"] = round(out["cost_usd"], 6)
        return out


#: Unpaired UTF-16 surrogates (a Python ``str`` holds one only when it could not be paired; such text
#: cannot be written as UTF-8) and control characters other than tab, newline and carriage return.
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_text(text: str) -> tuple[str, int]:
    """LM text made safe for records: unpaired surrogates -> U+FFFD, control characters (C0 but tab,
    newline and carriage return; DEL; C1) removed.

    Returns:
        (the text, how many characters were replaced or removed).
    """
    text, n_sur = _SURROGATE.subn("\ufffd", text)
    text, n_ctl = _CONTROL.subn("", text)
    return text, n_sur + n_ctl


class LMRequestError(RuntimeError):
    """A request failed after the last retry, or a response could not be read. The message names
    the step, the request index, the model and the cause (never the API key)."""


class ResponseCache:
    """Responses on disk, one JSON file per request key (``<dir>/<k[:2]>/<k>.json``), written atomically.

    The key is the SHA-256 of the endpoint, the model name, the model identity (see :class:`LMClient`),
    the prompt and the sampling parameters.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._root = os.fspath(self.directory)

    @staticmethod
    def key(api: str, model: str, prompt: str, params: SamplingParams, identity: str = "") -> str:
        payload = json.dumps(
            {"api": api, "model": model, "identity": identity, "prompt": prompt, "params": params.to_request()},
            sort_keys=True, ensure_ascii=False,
        )
        # surrogatepass: the same keys as plain UTF-8 for any valid text, and no crash for an unpaired surrogate
        return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        path = f"{self._root}/{key[:2]}/{key}.json"  # a str, not a Path: this runs once per request
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.loads(fh.read())
            return Completion(
                choices=[(c[0], c[1]) for c in data["choices"]],
                prompt_tokens=int(data.get("prompt_tokens", 0)),
                completion_tokens=int(data.get("completion_tokens", 0)),
                cached=True,
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):  # missing or unreadable: a miss
            return None

    def put(self, key: str, completion: Completion) -> None:
        # ASCII-only JSON: any text (even an unpaired surrogate) is written as a valid file.
        write_json_atomic(self._path(key), {
            "choices": completion.choices,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
        }, indent=None, ensure_ascii=True)


def _retry_note(err: Exception, max_retries: int) -> str:
    """"after N retries" for the faults that are retried (connection, 408, 409, 429, 5xx), else "(not retried)"."""
    import openai

    status = getattr(err, "status_code", None)
    retried = isinstance(err, openai.APIConnectionError) or status in (408, 409, 429) or (status or 0) >= 500
    return f"after {max_retries} retries" if retried and max_retries else "(not retried: a retry would get the same answer)"


def _drop_created(obj: Any) -> Any:
    """A JSON value without its ``created`` fields (times that change with every server start)."""
    if isinstance(obj, dict):
        return {k: _drop_created(v) for k, v in obj.items() if k != "created"}
    if isinstance(obj, list):
        return [_drop_created(v) for v in obj]
    return obj


#: The ``openai`` package's names for HTTP error statuses (so messages read the same on both paths).
_STATUS_NAMES = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError",
                 404: "NotFoundError", 409: "ConflictError", 422: "UnprocessableEntityError", 429: "RateLimitError"}


class _HTTPFault(Exception):
    """A failed request on the direct (aiohttp) path: ``kind`` is "timeout", "connection" or "status"."""

    def __init__(self, kind: str, message: str, status: int | None = None, retry_after: str | None = None):
        super().__init__(message)
        self.kind, self.status, self.retry_after = kind, status, retry_after

    @property
    def retryable(self) -> bool:
        """Connection failures, 408, 409, 429 and 5xx are transient (the ``openai`` package's rule)."""
        return self.kind == "connection" or (self.kind == "status" and (self.status in (408, 409, 429) or self.status >= 500))

    def name(self) -> str:
        if self.kind == "connection":
            return "APIConnectionError"
        if self.kind == "timeout":
            return "APITimeoutError"
        return _STATUS_NAMES.get(self.status, "InternalServerError" if self.status >= 500 else "APIStatusError")


class _DirectHTTP:
    """The request path to a server other than OpenAI: one ``aiohttp`` session (a connection kept alive
    per request in flight), JSON in and out, nothing else per request. About 0.5 ms of CPU a request
    where the ``openai`` package's client takes 2-6 ms (``benchmarks/bench_throughput.py``)."""

    def __init__(self, base_url: str, api_key: str, concurrency: int):
        import aiohttp

        self.aiohttp = aiohttp
        self.base = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        # The proxy from the environment (HTTP(S)_PROXY, NO_PROXY), looked up once for the one server: a
        # session with trust_env looks it up and reads ~/.netrc in worker threads at every request (two
        # thread hops a request), and netrc credentials would clash with the Authorization header anyway.
        self.proxy: dict[str, Any] = {}  # the post's proxy arguments (none: straight to the server)
        try:
            from aiohttp.helpers import get_env_proxy_for_url
            from yarl import URL

            proxy, auth = get_env_proxy_for_url(URL(self.base))
            self.proxy["proxy"] = proxy
            if auth is not None:
                self.proxy["proxy_headers"] = {"Proxy-Authorization": auth.encode()}
        except (ImportError, LookupError, ValueError):
            pass
        self.timeouts: dict[float, Any] = {}
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(100, concurrency + 16)))

    async def post(self, path: str, body: dict, timeout: float) -> Any:
        aiohttp = self.aiohttp
        try:
            limit = self.timeouts.get(timeout)
            if limit is None:
                limit = self.timeouts[timeout] = aiohttp.ClientTimeout(total=timeout)
            async with self.session.post(self.base + path, data=json.dumps(body).encode(), headers=self.headers,
                                         timeout=limit, **self.proxy) as resp:
                raw = await resp.read()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise _HTTPFault("timeout", f"no answer within {timeout:.0f} s") from None
        except (aiohttp.ClientError, OSError) as err:
            raise _HTTPFault("connection", f"Connection error: {type(err).__name__}: {err}") from None
        if status >= 400:
            text = raw[:300].decode("utf-8", "replace")
            raise _HTTPFault("status", f"Error code: {status} - {text}", status, retry_after)
        return json.loads(raw)

    async def close(self) -> None:
        await self.session.close()


def _never_reached_the_server(err: BaseException) -> bool:
    """Is this "timeout" a failure to connect (refused, unreachable, dropped connection)? The aiohttp
    transport reports those as connect timeouts; unlike a read timeout, the server is not generating the
    request, so a retry is safe and the message should say so."""
    seen = 0
    while err is not None and seen < 10:
        name = type(err).__name__
        if isinstance(err, ConnectionError) or name in ("ConnectError", "ConnectTimeout", "ClientConnectorError",
                                                         "ClientConnectionError", "ServerDisconnectedError"):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


def run_sync(coro):
    """Run a coroutine to completion and return its result, also from inside a running event loop
    (Jupyter) by running it on a fresh loop in a worker thread.

    Raises:
        whatever the coroutine raises.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()




class LMClient:
    """A client for any OpenAI-compatible server.

    Args:
        model: model name as the server knows it (e.g. ``gpt-3.5-turbo-instruct``, or the alias the
            embedded server was started with).
        base_url: server URL ending in ``/v1`` (None: OpenAI itself).
        api_key: the key (default: ``OPENAI_API_KEY``; local servers take any string).
        api: "completions" (plain prompt continuation, as the paper) or "chat".
        max_concurrency: most requests in flight at once.
        max_retries: retries per request for transient faults (rate limit, timeout, 5xx, connection).
        timeout: seconds per request attempt; None derives it per request from ``max_tokens``:
            ``60 + max_tokens / tokens_per_second`` (120 s when ``tokens_per_second`` is None too).
        tokens_per_second: the slowest generation speed to allow for (tokens/s), for derived timeouts.
        retry_timeouts: False: a request that timed out is not retried (a single-slot server such as
            llama.cpp keeps generating the abandoned answer, and a retry would queue behind it); other
            transient faults are still retried ``max_retries`` times with exponential backoff.
        cache_dir: folder of the response cache, or None for no cache.
        price_per_million: (input, output) USD per million tokens, for the cost estimate.
        identity: what identifies the model's weights in the cache key (default: see :attr:`identity`).
        extra_body: fields added to every request body, for a server's own options (e.g.
            ``{"cache_prompt": False}``: a llama.cpp server then evaluates every prompt from scratch, so a
            request asked again gets the same answer; see README, "Scaling up"). Not part of the cache key.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        api: Literal["completions", "chat"] = "completions",
        max_concurrency: int = 4,
        max_retries: int = 5,
        timeout: float | None = 120.0,
        tokens_per_second: float | None = None,
        retry_timeouts: bool = True,
        cache_dir: str | os.PathLike | None = None,
        price_per_million: tuple[float, float] = (0.0, 0.0),
        identity: str | None = None,
        extra_body: dict[str, Any] | None = None,
    ):
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', not {api!r}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.model = model
        # The openai package sends requests to $OPENAI_BASE_URL when no base_url is given: so does the
        # identity, and so do the error messages.
        self.base_url_from = "argument" if base_url is not None else None
        if base_url is None and os.environ.get("OPENAI_BASE_URL"):
            base_url, self.base_url_from = os.environ["OPENAI_BASE_URL"], "OPENAI_BASE_URL"
        self.base_url = base_url
        self.fingerprint: dict[str, Any] | None = None
        self.api = api
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.tokens_per_second = tokens_per_second
        self.retry_timeouts = retry_timeouts
        self.extra_body = dict(extra_body or {})
        self._identity = identity
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.price_per_million = price_per_million
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if self._api_key is None:
            if self._is_openai():
                raise ValueError("no API key: set OPENAI_API_KEY (or pass api_key) to use OpenAI")
            self._api_key = "no-key"  # local servers (llama.cpp, vLLM, Ollama) accept any key
        self.usage: dict[str, Usage] = {}

    def __repr__(self) -> str:  # never shows the key
        return f"LMClient(model={self.model!r}, base_url={self.base_url!r}, api={self.api!r})"

    @property
    def endpoint(self) -> str:
        """Where requests go: the base URL (given, or ``$OPENAI_BASE_URL``), or "OpenAI"."""
        return self.base_url.rstrip("/") if self.base_url else "OpenAI"

    def _is_openai(self) -> bool:
        from urllib.parse import urlsplit

        return self.base_url is None or urlsplit(self.base_url).hostname == "api.openai.com"

    @property
    def identity(self) -> str:
        """What the model is, for the cache key and the run manifest.

        Given at construction (the embedded server passes its GGUF's content hash); else
        ``openai:<model>`` for OpenAI itself, and for any other server (also one named by
        ``$OPENAI_BASE_URL``) ``server:<base URL>#<model id>#fp:<fingerprint>``: the model id that its
        ``/v1/models`` reports for this model name, and a fingerprint that changes when the weights do
        (:meth:`server_fingerprint`). Asked once per client.

        Raises:
            LMRequestError: the server's ``/v1/models`` cannot be read, or the probe completion fails.
        """
        if self._identity is None:
            if self._is_openai():
                self._identity = f"openai:{self.model}"
            else:
                model_id, digest = self.server_fingerprint()
                self._identity = f"server:{self.endpoint}#{model_id}#fp:{digest}"
        return self._identity

    #: The fingerprint's probe: a fixed prompt completed greedily (temperature 0, seed 0, 8 tokens).
    PROBE_PROMPT = "Name three colours of the rainbow:\n1."
    PROBE_MAX_TOKENS = 8

    def _http_json(self, url: str, body: dict | None = None, *, timeout: float = 30.0) -> Any:
        """GET (or POST ``body`` to) a URL of the server; the parsed JSON answer. Raises urllib's errors
        and ValueError for a body that is not JSON."""
        import urllib.request

        headers = {"Authorization": f"Bearer {self._api_key}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers.update({"Content-Type": "application/json", "X-Selfinstruct-Probe": "identity"})
        request = urllib.request.Request(url, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())

    def server_fingerprint(self) -> tuple[str, str]:
        """(model id, fingerprint) of the model behind a server's URL and model name.

        The fingerprint is the first 16 hex digits of the SHA-256 of: the ``/v1/models`` entry of the
        model (its ``created`` times left out; llama.cpp's server lists the parameter count and file size
        there), the ``model_path`` that llama.cpp's ``/props`` reports where it exists, and the text of
        one short greedy probe completion (:data:`PROBE_PROMPT`, temperature 0, seed 0, 8 tokens) --
        another GGUF behind the same alias answers differently. What went in is kept in
        :attr:`fingerprint` (the run manifest records it). The probe's tokens are not counted as usage.

        Raises:
            LMRequestError: ``/v1/models`` cannot be read, or the probe fails (after ``max_retries``
                retries of connection errors, 429 and 5xx).
        """
        import urllib.error

        base = self.endpoint
        url = base + "/models"
        try:
            data = self._http_json(url)
            entries = [m for m in data.get("data", []) if isinstance(m, dict) and "id" in m]
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
            raise LMRequestError(self._sanitize(
                f"cannot ask {url} which model it serves ({type(err).__name__}: {err}); "
                "the kit needs it to key its response cache by model"
            )) from None
        ids = sorted(str(m["id"]) for m in entries)
        model_id = self.model if self.model in ids else (",".join(ids) or self.model)
        mine = [m for m in entries if str(m["id"]) == self.model] or entries
        facts: dict[str, Any] = {"models": sorted((_drop_created(m) for m in mine), key=lambda m: str(m.get("id")))}
        props_url = (base[: -len("/v1")] if base.endswith("/v1") else base) + "/props"
        try:
            props = self._http_json(props_url, timeout=10.0)
            if isinstance(props, dict) and props.get("model_path"):
                facts["model_path"] = str(props["model_path"])
        except (urllib.error.URLError, OSError, ValueError, RecursionError):
            pass  # only llama.cpp's own server has /props
        facts["probe"] = self._probe()
        digest = hashlib.sha256(json.dumps(facts, sort_keys=True, ensure_ascii=True).encode()).hexdigest()[:16]
        self.fingerprint = {**facts, "sha256_16": digest}
        return model_id, digest

    def _probe(self) -> str:
        """The text of the fingerprint's probe completion (see :meth:`server_fingerprint`)."""
        import urllib.error

        body: dict[str, Any] = {"model": self.model, "max_tokens": self.PROBE_MAX_TOKENS, "temperature": 0.0,
                                "top_p": 1.0, "seed": 0}
        if self.api == "completions":
            url = self.endpoint + "/completions"
            body["prompt"] = self.PROBE_PROMPT
        else:
            url = self.endpoint + "/chat/completions"
            body["messages"] = [{"role": "user", "content": self.PROBE_PROMPT}]
        timeout = self.timeout_for(SamplingParams(max_tokens=self.PROBE_MAX_TOKENS))
        for attempt in range(self.max_retries + 1):
            try:
                answer = self._http_json(url, body, timeout=timeout)
                choice = answer["choices"][0]
                text = choice.get("text") if self.api == "completions" else (choice.get("message") or {}).get("content")
                return clean_text(str(text or ""))[0]
            except urllib.error.HTTPError as err:
                retry = err.code == 429 or err.code >= 500
                cause: Exception = err
            except (urllib.error.URLError, OSError) as err:
                retry, cause = True, err
            except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as err:
                retry, cause = False, err
            if not retry or attempt == self.max_retries:
                break
            time.sleep(min(8.0, 0.5 * 2**attempt))
        raise LMRequestError(self._sanitize(
            f"cannot fingerprint model {self.model!r} at {self.endpoint}: its probe completion ({url}) failed "
            f"({type(cause).__name__}: {cause}); the kit needs it to tell one model's answers from another's. "
            "Pass LMClient(identity=...) to name the model yourself"
        ))

    def timeout_for(self, params: SamplingParams) -> float:
        """Seconds allowed for one request with these parameters (see the ``timeout`` argument)."""
        if self.timeout is not None:
            return self.timeout
        if self.tokens_per_second:
            return 60.0 + params.max_tokens * params.n / self.tokens_per_second
        return 120.0

    def describe(self) -> dict[str, Any]:
        """What a run manifest records about the client (no key)."""
        return {
            "model": self.model, "identity": self.identity, "base_url": self.base_url,
            "base_url_from": self.base_url_from, "fingerprint": self.fingerprint, "api": self.api,
            "max_concurrency": self.max_concurrency, "max_retries": self.max_retries, "timeout": self.timeout,
            "tokens_per_second": self.tokens_per_second, "retry_timeouts": self.retry_timeouts,
            "price_per_million": list(self.price_per_million),
        }

    def _sanitize(self, text: str) -> str:
        if self._api_key and len(self._api_key) > 3:
            text = text.replace(self._api_key, "***")
        return text

    def complete(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        step: str = "lm",
        request_ids: Sequence[int] | None = None,
        seeds: Sequence[int | None] | None = None,
        on_usage: Callable[[Completion, int], None] | None = None,
    ) -> list[Completion]:
        """Complete each prompt (blocking; safe to call from a notebook).

        Args:
            prompts: k prompts.
            params: sampling parameters for all of them.
            step: step name for usage counters and error messages.
            request_ids: k request indices for error messages (default 0..k-1).
            seeds: k per-request sampling seeds overriding ``params.seed`` (part of the cache key).
            on_usage: called with (completion, request id) for each answer, where it is cached (see
                :meth:`arequest`).
        Returns:
            k completions, in the order of ``prompts``.
        Raises:
            LMRequestError: a request failed after its retries.
        """
        return run_sync(self.acomplete(prompts, params, step=step, request_ids=request_ids, seeds=seeds,
                                        on_usage=on_usage))

    async def acomplete(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        step: str = "lm",
        request_ids: Sequence[int] | None = None,
        seeds: Sequence[int | None] | None = None,
        on_usage: Callable[[Completion, int], None] | None = None,
    ) -> list[Completion]:
        """Async version of :meth:`complete` (at most ``max_concurrency`` requests in flight)."""
        ids = list(request_ids) if request_ids is not None else list(range(len(prompts)))
        per_params = [params if seeds is None else params.replace(seed=s) for s in (seeds or [None] * len(prompts))]
        semaphore = asyncio.Semaphore(self.max_concurrency)
        http = self.open_http()

        async def one(prompt: str, p: SamplingParams, rid: int) -> Completion:
            async with semaphore:
                return await self.arequest(http, prompt, p, step=step, request_id=rid, on_usage=on_usage)

        try:
            return list(await asyncio.gather(*(one(pr, p, rid) for pr, p, rid in zip(prompts, per_params, ids, strict=True))))
        finally:
            await http.close()

    def open_http(self):
        """One ``openai.AsyncOpenAI`` client (and its connection pool) to reuse for every request of a
        step; close it with ``await http.close()``. Must be used inside the event loop that opened it."""
        import openai

        if not self._is_openai():
            try:
                return _DirectHTTP(self.base_url, self._api_key, self.max_concurrency)
            except ImportError:  # no aiohttp: the openai package's client below
                pass
        extra: dict[str, Any] = {}
        try:  # a connection kept alive per request in flight, in the SDK's own httpx flavour
            from openai._constants import DEFAULT_CONNECTION_LIMITS as default

            limits = type(default)(max_connections=max(100, self.max_concurrency + 16),
                                   max_keepalive_connections=max(20, self.max_concurrency))
        except (ImportError, AttributeError, TypeError):
            limits = None
        if limits is not None:
            try:  # aiohttp's connection pool: about a third of the CPU per request of httpx's (measured)
                extra["http_client"] = openai.DefaultAioHttpClient(limits=limits)
            except (AttributeError, RuntimeError, TypeError):  # the openai[aiohttp] extra is not installed
                try:
                    extra["http_client"] = openai.DefaultAsyncHttpxClient(limits=limits)
                except (AttributeError, TypeError):
                    pass
        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url,
                                  max_retries=self.max_retries if self.retry_timeouts else 0, **extra)

    async def arequest(
        self,
        http,
        prompt: str,
        params: SamplingParams,
        *,
        step: str = "lm",
        request_id: int = 0,
        on_usage: Callable[[Completion, int], None] | None = None,
    ) -> Completion:
        """One request: served from the cache, or sent through ``http`` (from :meth:`open_http`).

        Usage is counted where the answer is cached, once per answer: ``on_usage(completion, request_id)``
        (e.g. :meth:`~selfinstruct_utils.runs.RunDir.log_request_usage`) is called for every live answer
        *before* it is written to the cache, and for every cache hit (0 tokens). So a kill can never turn
        an answer the server produced into a 0-token cache hit: a kill between the two lines repeats
        the request, which the server then really answers (and is counted) again.

        Raises:
            LMRequestError: the request failed after its retries (timeouts are retried only with
                ``retry_timeouts``).
        """
        import openai

        usage = self.usage.get(step)
        if usage is None:
            usage = self.usage[step] = Usage()
        key = ResponseCache.key(self.api, self.model, prompt, params, self.identity) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                usage.add(Usage.of_answer(hit))
                if on_usage is not None:
                    on_usage(hit, request_id)
                return hit
        start = time.perf_counter()
        try:
            result = await self._send(http, prompt, params)
        except _HTTPFault as err:
            where = f"step '{step}': request {request_id} to model {self.model!r} at {self.endpoint}"
            if err.kind == "timeout":
                retried = f"after {self.max_retries} retries" if self.retry_timeouts else "(not retried: the server may still be generating it)"
                raise LMRequestError(self._sanitize(
                    f"{where} got no answer within {self.timeout_for(params):.0f} s (max_tokens={params.max_tokens}) "
                    f"{retried}: APITimeoutError. The server is slower than expected (CPU load? too many requests in "
                    "flight?): give more time with --timeout SECONDS or a lower --tokens-per-second (LMClient(timeout=..., "
                    "tokens_per_second=...)), or send fewer at once with --concurrency"
                )) from None
            retried = f"after {self.max_retries} retries" if err.retryable and self.max_retries else \
                "(not retried: a retry would get the same answer)"
            raise LMRequestError(self._sanitize(f"{where} failed {retried}: {err.name()}: {err}")) from None
        except openai.APITimeoutError as err:
            if _never_reached_the_server(err):
                raise LMRequestError(self._sanitize(
                    f"step '{step}': request {request_id} to model {self.model!r} at {self.endpoint} "
                    f"failed after {self.max_retries} retries: APIConnectionError: cannot connect ({err})"
                )) from None
            retried = f"after {self.max_retries} retries" if self.retry_timeouts else "(not retried: the server may still be generating it)"
            raise LMRequestError(self._sanitize(
                f"step '{step}': request {request_id} to model {self.model!r} at {self.endpoint} "
                f"got no answer within {self.timeout_for(params):.0f} s (max_tokens={params.max_tokens}) {retried}: "
                f"{type(err).__name__}. The server is slower than expected (CPU load? too many requests in flight?): "
                "give more time with --timeout SECONDS or a lower --tokens-per-second (LMClient(timeout=..., "
                "tokens_per_second=...)), or send fewer at once with --concurrency"
            )) from None
        except openai.OpenAIError as err:
            raise LMRequestError(self._sanitize(
                f"step '{step}': request {request_id} to model {self.model!r} at {self.endpoint} "
                f"failed {_retry_note(err, self.max_retries)}: {type(err).__name__}: {err}"
            )) from None
        except Exception as err:  # malformed responses the SDK cannot read
            raise LMRequestError(self._sanitize(
                f"step '{step}': request {request_id} to model {self.model!r}: unreadable response: "
                f"{type(err).__name__}: {err}"
            )) from None
        result.seconds = time.perf_counter() - start
        usage.add(Usage.of_answer(result, self.price_per_million))
        if on_usage is not None:
            on_usage(result, request_id)  # before the cache: see above
        if key is not None:
            # in a worker thread: the atomic write's fsync takes milliseconds, during which the event loop
            # keeps the other requests moving (measured: 5.7 ms of wall time a write, 0.9 ms of CPU)
            await asyncio.to_thread(self.cache.put, key, result)
        return result

    async def _send(self, client, prompt: str, p: SamplingParams) -> Completion:
        """One request; with ``retry_timeouts`` the SDK retries every transient fault, else this retries
        all of them but timeouts (the SDK cannot tell them apart)."""
        import openai

        if isinstance(client, _DirectHTTP):
            for attempt in range(self.max_retries + 1):
                try:
                    return await self._request(client, prompt, p)
                except _HTTPFault as err:
                    retry = err.retryable or (err.kind == "timeout" and self.retry_timeouts)
                    if not retry or attempt == self.max_retries:
                        raise
                    delay = min(8.0, 0.5 * 2**attempt)
                    try:
                        delay = min(60.0, max(0.0, float(err.retry_after))) if err.retry_after is not None else delay
                    except ValueError:
                        pass
                    await asyncio.sleep(delay)
        if self.retry_timeouts:
            return await self._request(client, prompt, p)
        for attempt in range(self.max_retries + 1):
            try:
                return await self._request(client, prompt, p)
            except openai.APITimeoutError as err:
                if not _never_reached_the_server(err) or attempt == self.max_retries:
                    raise
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError):
                if attempt == self.max_retries:
                    raise
            await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    async def _request(self, client, prompt: str, p: SamplingParams) -> Completion:
        """One POST through the SDK's transport (its retries, errors and auth), with the JSON body built
        and read here: the SDK's typed ``create`` costs several ms of CPU per request (measured in
        ``benchmarks/bench_throughput.py``)."""
        body = p.to_request()
        if self.extra_body:
            body.update(self.extra_body)
        body["model"] = self.model
        if self.api == "completions":
            body["prompt"] = prompt
            path = "/completions"
        else:
            body.pop("logprobs", None)
            body["messages"] = [{"role": "user", "content": prompt}]
            path = "/chat/completions"
        if isinstance(client, _DirectHTTP):
            data = await client.post(path, body, self.timeout_for(p))
        else:
            data = await client.post(path, cast_to=object, body=body, options={"timeout": self.timeout_for(p)})
        if not isinstance(data, dict):
            raise ValueError(f"the server's answer is not a JSON object: {str(data)[:200]!r}")
        choices = []
        for c in data.get("choices") or []:
            if self.api == "completions":
                text = c.get("text")
            else:
                text = (c.get("message") or {}).get("content")
            choices.append((text if isinstance(text, str) else "", c.get("finish_reason")))
        u = data.get("usage") or {}
        return Completion(
            choices=choices,
            prompt_tokens=int(u.get("prompt_tokens") or 0),
            completion_tokens=int(u.get("completion_tokens") or 0),
        )
