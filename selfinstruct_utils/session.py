"""Open an LM client from a few settings (what a notebook's parameters cell holds)."""

from __future__ import annotations

import os
from pathlib import Path

from .llm import LMClient
from .local_lm import EmbeddedLM

__all__ = ["open_client"]


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
        max_concurrency: requests in flight (default 1 for llama.cpp, 8 otherwise).
        timeout: seconds per request (default: derived from max_tokens for the embedded server, else 120).
    Returns:
        (client, server or None).
    Raises:
        ValueError: unknown backend or missing settings.
    """
    cache = Path(cache_dir) if cache_dir else None
    if backend == "embedded":
        server = EmbeddedLM(gguf).start()
        extra = {"timeout": timeout} if timeout else {}
        return server.client(api=api, cache_dir=cache, max_concurrency=max_concurrency or 1, **extra), server
    if backend == "server":
        if not base_url:
            raise ValueError("backend 'server' needs base_url (e.g. http://localhost:8000/v1)")
        return LMClient(model or "smollm2-135m-instruct", base_url=base_url, api=api, cache_dir=cache,
                        max_concurrency=max_concurrency or 1, timeout=timeout or 120.0), None
    if backend == "openai":
        if not model:
            raise ValueError("backend 'openai' needs a model name, e.g. gpt-3.5-turbo-instruct")
        return LMClient(model, api=api, cache_dir=cache, max_concurrency=max_concurrency or 8,
                        timeout=timeout or 120.0), None
    raise ValueError(f"unknown backend {backend!r}: choose embedded, server or openai")
