"""Open an LM client from a few settings (what a notebook's parameters cell holds)."""

from __future__ import annotations

import os
from pathlib import Path

from .llm import LMClient
from .local_lm import EmbeddedLM

__all__ = ["open_client", "SERVER_TOKENS_PER_SECOND"]

#: The slowest per-request speed (tokens/s, queueing at the server included) that derived timeouts allow
#: for on servers the kit did not start: a request may take 60 s + max_tokens / 2 (step 1 with Table 4's
#: 1024 tokens: 9.5 min) before it is given up, and it is then not retried, since the server may still
#: be generating it.
SERVER_TOKENS_PER_SECOND = 2.0


def open_client(
    backend: str = "embedded",
    *,
    base_url: str | None = None,
    model: str | None = None,
    api: str = "completions",
    cache_dir: str | os.PathLike | None = None,
    gguf: str | os.PathLike | None = None,
    max_concurrency: int | None = None,
    timeout: float | None = None,
    tokens_per_second: float | None = None,
    batch_dir: str | os.PathLike | None = None,
) -> tuple[LMClient, EmbeddedLM | None]:
    """A client for ``backend`` and, for "embedded", the started server (call ``server.stop()`` when done;
    it also stops when the Python process ends).

    Args:
        backend: "embedded" (start llama.cpp with ``gguf``, default SmolLM2-135M), "server" (any
            OpenAI-compatible ``base_url``: vLLM, Ollama, llama.cpp), or "openai" (key from OPENAI_API_KEY).
        base_url, model: for "server" and "openai" (a running embedded server is reused as "server"
            with model "smollm2-135m-instruct" when ``model`` is None).
        api: "completions" or "chat".
        cache_dir: response cache folder (None: no cache).
        max_concurrency: requests in flight in every step (default 1 for "embedded" and "server": a
            llama.cpp server answers one request at a time unless started with parallel slots, so pass
            the number of slots or, for vLLM, a larger number; 8 for "openai").
        timeout: seconds per request (default: derived from max_tokens: ``60 + max_tokens / tokens_per_second``).
        tokens_per_second: the slowest per-request speed to allow for (default: the embedded server's
            measured speed / 15; :data:`SERVER_TOKENS_PER_SECOND` for other servers). A timed-out
            request is never retried (the server may still be generating it).
        batch_dir: send each step's requests through the OpenAI Batch API ("server" and "openai"), the
            batches' state kept in this folder (a run's ``batches/``): a
            :class:`~selfinstruct_utils.batch.BatchLMClient`.
    Returns:
        (client, server or None).
    Raises:
        ValueError: unknown backend or missing settings.
    """
    cache = Path(cache_dir) if cache_dir else None
    if batch_dir is not None:
        if backend not in ("server", "openai") or (backend == "server" and not base_url) or not model:
            raise ValueError("a Batch API client needs backend 'openai' or 'server' (with base_url) and a model name")
        from .batch import BatchLMClient

        return BatchLMClient(model, base_url=base_url if backend == "server" else None, api=api, cache_dir=cache,
                             state_dir=batch_dir), None
    if backend == "embedded":
        server = EmbeddedLM(gguf).start()
        extra = {"timeout": timeout} if timeout else {}
        if tokens_per_second:
            extra["tokens_per_second"] = tokens_per_second
        return server.client(api=api, cache_dir=cache, max_concurrency=max_concurrency or 1, **extra), server
    if backend == "server":
        if not base_url:
            raise ValueError("backend 'server' needs base_url (e.g. http://localhost:8000/v1)")
        return LMClient(model or "smollm2-135m-instruct", base_url=base_url, api=api, cache_dir=cache,
                        max_concurrency=max_concurrency or 1, timeout=timeout,
                        tokens_per_second=tokens_per_second or SERVER_TOKENS_PER_SECOND, retry_timeouts=False), None
    if backend == "openai":
        if not model:
            raise ValueError("backend 'openai' needs a model name, e.g. gpt-3.5-turbo-instruct")
        return LMClient(model, api=api, cache_dir=cache, max_concurrency=max_concurrency or 8, timeout=timeout,
                        tokens_per_second=tokens_per_second or SERVER_TOKENS_PER_SECOND, retry_timeouts=False), None
    raise ValueError(f"unknown backend {backend!r}: choose embedded, server or openai")
