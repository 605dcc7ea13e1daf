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
  base URL plus the model id the server reports (``/v1/models``) for any other server, and
  ``openai:<model>`` for OpenAI.
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
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "SamplingParams",
    "TABLE4",
    "Completion",
    "Usage",
    "LMRequestError",
    "ResponseCache",
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
        """The request fields (None values left out)."""
        body = asdict(self)
        body["stop"] = list(self.stop) or None
        return {k: v for k, v in body.items() if v is not None}


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

    @property
    def text(self) -> str:
        return self.choices[0][0] if self.choices else ""

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0][1] if self.choices else None


@dataclass
class Usage:
    """Counters of one step: requests, cache hits, tokens, LM seconds (wall), estimated cost (USD)."""

    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cost_usd: float = 0.0

    def add(self, other: Usage) -> None:
        for key in ("requests", "cache_hits", "prompt_tokens", "completion_tokens", "seconds", "cost_usd"):
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(out["seconds"], 3)
        out["cost_usd"] = round(out["cost_usd"], 6)
        return out


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

    @staticmethod
    def key(api: str, model: str, prompt: str, params: SamplingParams, identity: str = "") -> str:
        payload = json.dumps(
            {"api": api, "model": model, "identity": identity, "prompt": prompt, "params": params.to_request()},
            sort_keys=True, ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Completion(
                choices=[(c[0], c[1]) for c in data["choices"]],
                prompt_tokens=int(data.get("prompt_tokens", 0)),
                completion_tokens=int(data.get("completion_tokens", 0)),
                cached=True,
            )
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, IndexError):
            return None

    def put(self, key: str, completion: Completion) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({
            "choices": completion.choices,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
        }, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)


def _run_sync(coro):
    """Run a coroutine to completion, also from inside a running loop (Jupyter) via a worker thread."""
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
    ):
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', not {api!r}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.model = model
        self.base_url = base_url
        self.api = api
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.tokens_per_second = tokens_per_second
        self.retry_timeouts = retry_timeouts
        self._identity = identity
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.price_per_million = price_per_million
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if self._api_key is None:
            if base_url is None:
                raise ValueError("no API key: set OPENAI_API_KEY (or pass api_key) to use OpenAI")
            self._api_key = "no-key"  # local servers (llama.cpp, vLLM, Ollama) accept any key
        self.usage: dict[str, Usage] = {}

    def __repr__(self) -> str:  # never shows the key
        return f"LMClient(model={self.model!r}, base_url={self.base_url!r}, api={self.api!r})"

    @property
    def identity(self) -> str:
        """What the model is, for the cache key and the run manifest.

        Given at construction (the embedded server passes its GGUF's content hash); else
        ``openai:<model>`` for OpenAI, and for any other server its base URL plus the model id that
        its ``/v1/models`` reports for this model name (asked once).

        Raises:
            LMRequestError: the server's ``/v1/models`` cannot be read.
        """
        if self._identity is None:
            if self.base_url is None:
                self._identity = f"openai:{self.model}"
            else:
                self._identity = f"server:{self.base_url.rstrip('/')}#{self._reported_model_id()}"
        return self._identity

    def _reported_model_id(self) -> str:
        import urllib.error
        import urllib.request

        url = self.base_url.rstrip("/") + "/models"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self._api_key}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                data = json.loads(resp.read())
            ids = sorted(str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m)
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise LMRequestError(self._sanitize(
                f"cannot ask {url} which model it serves ({type(err).__name__}: {err}); "
                "the kit needs it to key its response cache by model"
            )) from None
        if self.model in ids:
            return self.model
        return ",".join(ids) or self.model

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
            "model": self.model, "identity": self.identity, "base_url": self.base_url, "api": self.api,
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
    ) -> list[Completion]:
        """Complete each prompt (blocking; safe to call from a notebook).

        Args:
            prompts: k prompts.
            params: sampling parameters for all of them.
            step: step name for usage counters and error messages.
            request_ids: k request indices for error messages (default 0..k-1).
            seeds: k per-request sampling seeds overriding ``params.seed`` (part of the cache key).
        Returns:
            k completions, in the order of ``prompts``.
        Raises:
            LMRequestError: a request failed after its retries.
        """
        return _run_sync(self.acomplete(prompts, params, step=step, request_ids=request_ids, seeds=seeds))

    async def acomplete(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        step: str = "lm",
        request_ids: Sequence[int] | None = None,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Completion]:
        """Async version of :meth:`complete`."""
        import openai

        ids = list(request_ids) if request_ids is not None else list(range(len(prompts)))
        per_params = [params if seeds is None else params.replace(seed=s) for s in (seeds or [None] * len(prompts))]
        usage = self.usage.setdefault(step, Usage())
        semaphore = asyncio.Semaphore(self.max_concurrency)
        client = openai.AsyncOpenAI(
            api_key=self._api_key, base_url=self.base_url,
            max_retries=self.max_retries if self.retry_timeouts else 0,
        )
        identity = self.identity if self.cache else ""

        async def one(prompt: str, p: SamplingParams, rid: int) -> Completion:
            key = ResponseCache.key(self.api, self.model, prompt, p, identity) if self.cache else None
            if key is not None:
                hit = self.cache.get(key)
                if hit is not None:
                    usage.cache_hits += 1
                    return hit
            async with semaphore:
                start = time.perf_counter()
                try:
                    result = await self._send(client, prompt, p)
                except openai.APITimeoutError as err:
                    retried = f"after {self.max_retries} retries" if self.retry_timeouts else "(not retried: the server is still busy with it)"
                    raise LMRequestError(self._sanitize(
                        f"step '{step}': request {rid} to model {self.model!r} at {self.base_url or 'OpenAI'} "
                        f"got no answer within {self.timeout_for(p):.0f} s (max_tokens={p.max_tokens}) {retried}: "
                        f"{type(err).__name__}. The server is slower than expected (CPU load?): "
                        "give more time with --timeout SECONDS (LMClient(timeout=...))"
                    )) from None
                except openai.OpenAIError as err:
                    raise LMRequestError(self._sanitize(
                        f"step '{step}': request {rid} to model {self.model!r} at {self.base_url or 'OpenAI'} "
                        f"failed after {self.max_retries} retries: {type(err).__name__}: {err}"
                    )) from None
                except Exception as err:  # malformed responses the SDK cannot read
                    raise LMRequestError(self._sanitize(
                        f"step '{step}': request {rid} to model {self.model!r}: unreadable response: "
                        f"{type(err).__name__}: {err}"
                    )) from None
                result.seconds = time.perf_counter() - start
            usage.requests += 1
            usage.prompt_tokens += result.prompt_tokens
            usage.completion_tokens += result.completion_tokens
            usage.seconds += result.seconds
            pin, pout = self.price_per_million
            usage.cost_usd += (result.prompt_tokens * pin + result.completion_tokens * pout) / 1e6
            if key is not None:
                self.cache.put(key, result)
            return result

        try:
            return list(await asyncio.gather(*(one(pr, p, rid) for pr, p, rid in zip(prompts, per_params, ids, strict=True))))
        finally:
            await client.close()

    async def _send(self, client, prompt: str, p: SamplingParams) -> Completion:
        """One request; with ``retry_timeouts`` the SDK retries every transient fault, else this retries
        all of them but timeouts (the SDK cannot tell them apart)."""
        import openai

        if self.retry_timeouts:
            return await self._request(client, prompt, p)
        for attempt in range(self.max_retries + 1):
            try:
                return await self._request(client, prompt, p)
            except openai.APITimeoutError:
                raise
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError):
                if attempt == self.max_retries:
                    raise
                await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    async def _request(self, client, prompt: str, p: SamplingParams) -> Completion:
        body = p.to_request()
        body["timeout"] = self.timeout_for(p)
        if self.api == "completions":
            resp = await client.completions.create(model=self.model, prompt=prompt, **body)
            choices = [(c.text or "", c.finish_reason) for c in (resp.choices or [])]
        else:
            body.pop("logprobs", None)
            resp = await client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": prompt}], **body
            )
            choices = [((c.message.content if c.message else "") or "", c.finish_reason) for c in (resp.choices or [])]
        u = getattr(resp, "usage", None)
        return Completion(
            choices=choices,
            prompt_tokens=int(getattr(u, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(u, "completion_tokens", 0) or 0),
        )
