"""A run is a directory: one JSONL file per step, written as records arrive, a usage log, and
``manifest.json``.

What makes a run's records trustworthy:

- **The configuration is stored at the first start** (``manifest["config"]``, with the model's
  identity, the templates' and the seed file's hashes). A later invocation that would change a result
  (seed, model, templates, thresholds, sampling parameters...) is refused with
  :class:`ConfigChangedError`, unless it asks for it (``force_new_config``), which is recorded.
- **Usage adds up over the whole run**: every LM call's requests, cache hits, tokens, seconds and cost
  are appended to ``usage.jsonl`` before the records they produced, so the totals survive kills and
  resumes; the manifest keeps them per step, in total and per invocation.
- **Every invocation is listed** (``manifest["invocations"]``): when, from where, which steps, how it
  ended.

The manifest is rewritten atomically after every step, so it always describes what the files hold.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .llm import Usage
from .records import JsonlWriter, read_jsonl, write_json_atomic

__all__ = ["FILES", "StepResult", "ConfigChangedError", "RunLockedError", "RunDir", "check_config", "check_unlocked",
           "config_changes", "package_versions", "read_manifest", "stored_config"]

#: File names of a run directory, per step.
FILES = {
    "requests": "instruction_requests.jsonl",
    "instructions": "machine_generated_instructions.jsonl",
    "classification": "is_clf_or_not.jsonl",
    "instances": "machine_generated_instances.jsonl",
    "finetuning_dir": "finetuning",
    "usage": "usage.jsonl",
    "manifest": "manifest.json",
}

_PACKAGES = ("selfinstruct-kit", "openai", "rapidfuzz", "numpy", "scipy", "llama_cpp_python")
_USAGE_KEYS = ("requests", "cache_hits", "prompt_tokens", "completion_tokens", "seconds", "cost_usd")


@dataclass
class StepResult:
    """What a step did.

    Attributes:
        counts: named counts (e.g. ``requests``, ``kept``), over the whole run directory.
        rejections: rejected items by reason, over the whole run directory.
        seconds: wall time of this call.
    """

    counts: dict[str, int] = field(default_factory=dict)
    rejections: Counter = field(default_factory=Counter)
    seconds: float = 0.0


class ConfigChangedError(ValueError):
    """An invocation would continue a run under a configuration that changes its results."""


class RunLockedError(RuntimeError):
    """Another invocation is working on the run directory right now; the message names it (pid, host,
    start time)."""


def _lock_paths(path: Path) -> tuple[Path, Path]:
    return path / ".lock", path / ".lock.holder.json"


def _holder(path: Path) -> str:
    try:
        h = json.loads(_lock_paths(path)[1].read_text(encoding="utf-8"))
        return (f"process {h.get('pid')} on {h.get('host')} (started {h.get('started_at')}, "
                f"invocation {h.get('invocation')})")
    except (OSError, ValueError, AttributeError):
        return "another process (its details are not written yet)"


def _locked_message(path: Path) -> str:
    return (f"{path} is in use by {_holder(path)}: two invocations on one run directory would duplicate its "
            "records. Wait until it ends (or stop it), or use another --run-dir")


def check_unlocked(path: str | os.PathLike) -> None:
    """Raise :class:`RunLockedError` when another invocation holds the run directory's lock (creates nothing).

    Raises:
        RunLockedError: the message names the holder (pid, host, start time).
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    lock_file = _lock_paths(path)[0]
    if not lock_file.exists():
        return
    lock = FileLock(lock_file, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLockedError(_locked_message(path)) from None
    lock.release()


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape a run's results (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def now_utc() -> str:
    """The current time for manifests: ISO 8601 in UTC to the second, e.g. ``"2026-11-29T19:30:00+00:00"``."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def read_manifest(path: str | os.PathLike) -> dict[str, Any] | None:
    """A run directory's manifest, or None when it has none (creates nothing)."""
    p = Path(path) / FILES["manifest"]
    if not p.is_file():
        return None
    try:
        manifest = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):  # invalid JSON or UTF-8, huge numbers, deep nesting
        return None
    return manifest if isinstance(manifest, dict) else None


def stored_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The configuration a run directory was started with (None: no such run yet). Creates nothing."""
    manifest = read_manifest(Path(path))
    return None if manifest is None else manifest.get("config")


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], *, allowed: Sequence[str] = ()) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for every field of ``new`` that differs from ``old``.

    Nested dicts are compared field by field (``params.instructions.temperature``); fields whose new
    value is None (unknown in this invocation) and fields named in ``allowed`` are not compared.

    Args:
        old: the stored configuration (e.g. :func:`stored_config`).
        new: this invocation's configuration.
        allowed: fields (dotted, or a top-level name covering its sub-fields) that may change.
    Returns:
        The differing fields, sorted by dotted name; lists and tuples of equal items are equal. A field
        that ``old`` lacks altogether (stored by an earlier version) is not a change.
    """
    a, b = _flatten(old), _flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in allowed or key.split(".")[0] in allowed or b.get(key) is None:
            continue
        if key not in a and key.split(".")[0] not in old:  # a field earlier versions did not store
            continue
        old_v, new_v = a.get(key), b.get(key)
        if isinstance(old_v, list | tuple) and isinstance(new_v, list | tuple):
            old_v, new_v = list(old_v), list(new_v)
        if old_v != new_v:
            out.append((key, a.get(key), b.get(key)))
    return out


def check_config(path: str | os.PathLike, stored: Mapping[str, Any], config: Mapping[str, Any], *,
                 allowed: Sequence[str] = (), force: bool = False) -> list[tuple[str, Any, Any]]:
    """The changes ``config`` makes to a run's ``stored`` configuration (see :func:`config_changes`).

    Args:
        path: the run (or tuning) folder, named in the error message.
        stored: the configuration the run was started with.
        config: this invocation's configuration.
        allowed: fields that may change (see :func:`config_changes`).
        force: accept the changes instead of raising (the caller records them).
    Returns:
        The changes as (dotted field, old value, new value); empty when the configurations agree.
    Raises:
        ConfigChangedError: there are changes and ``force`` is False; the message names each field with
            its old and new value, and the ways out.
    """
    changes = config_changes(stored, config, allowed=allowed)
    if changes and not force:
        lines = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in changes)
        raise ConfigChangedError(
            f"{path} was started with another configuration, and continuing it would mix results: {lines}. "
            "Resume with the run's own settings (leave those options out), start a new run directory, or "
            "pass --force-new-config (force_new_config=True) to continue under the new configuration "
            "(the change is recorded in the manifest)"
        )
    return changes


class RunDir:
    """A run directory (created if missing), its manifest, its usage log and this invocation.

    Args:
        path: the folder.
        source: who runs this invocation ("cli", "notebook", "python"), for the manifest.
    """

    def __init__(self, path: str | os.PathLike, *, source: str = "python"):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest: dict[str, Any] = read_manifest(self.path) or {"created_at": now_utc(), "steps": {}}
        self.invocation = f"{_dt.datetime.now(_dt.UTC).strftime('%Y%m%dT%H%M%S.%f')}-{os.getpid()}"
        self.source = source
        self._lock = None

    # --- files --------------------------------------------------------------------------------------
    def file(self, key: str) -> Path:
        """Path of a step's file by key of :data:`FILES` (or a plain file name)."""
        return self.path / FILES.get(key, key)

    def writer(self, key: str) -> JsonlWriter:
        """An appending, flushing writer for a step's JSONL file."""
        return JsonlWriter(self.file(key))

    def read(self, key: str) -> list[dict]:
        """All complete records of a step's JSONL file (a half-written last line is dropped with a warning)."""
        p = self.file(key)
        if not p.is_file():
            return []
        return [obj for _, obj in read_jsonl(p, tolerate_partial_last_line=True)]

    def truncate_to_complete_lines(self, key: str) -> None:
        """Cut a half-written last line (from a kill during a write) so appends start on a fresh line."""
        p = self.file(key)
        if not p.is_file():
            return
        data = p.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            warnings.warn(f"{p}: dropping a half-written last line ({len(data) - cut} bytes)", stacklevel=2)
            with open(p, "r+b") as fh:
                fh.truncate(cut)

    # --- configuration --------------------------------------------------------------------------------
    def begin(self, config: dict[str, Any], *, allowed_changes: Sequence[str] = (), force_new_config: bool = False,
              **facts: Any) -> None:
        """Start this invocation: store the configuration (first start) or check it against the stored one.

        Args:
            config: everything that shapes the run's results (nested dicts allowed).
            allowed_changes: top-level fields that may change on resume (e.g. a larger target).
            force_new_config: accept a changed configuration; the change is recorded in
                ``manifest["config_history"]``.
            facts: further top-level manifest fields to set (e.g. the LM's description).
        Raises:
            ConfigChangedError: the configuration differs from the stored one in a field that changes
                results; the message names each field with its old and new value, and the ways out.
            RunLockedError: another invocation is working on this run directory (see :meth:`lock`).

        Every change, allowed ones too (a larger ``num_instructions`` or ``max_requests``), is recorded
        in ``manifest["config_history"]`` (field, old, new, and ``allowed`` or ``forced``).
        """
        self.lock()
        self.manifest = read_manifest(self.path) or self.manifest  # as the last holder of the lock left it
        stored = self.manifest.get("config")
        if stored is not None:
            try:
                check_config(self.path, stored, config, allowed=allowed_changes, force=force_new_config)
            except BaseException:
                self.unlock()
                raise
            changes = config_changes(stored, config)  # allowed ones too (a larger N or budget): all recorded
            if changes:
                self.manifest.setdefault("config_history", []).append({
                    "at": now_utc(), "invocation": self.invocation,
                    "changes": [{"field": k, "old": old, "new": new, **({"allowed": True} if k.split(".")[0]
                                 in allowed_changes else {"forced": True})} for k, old, new in changes],
                })
            merged = dict(stored)
            merged.update(config)
            config = merged
        self.manifest["config"] = config
        self.manifest.update(facts)
        self.manifest.setdefault("invocations", []).append({
            "invocation": self.invocation, "source": self.source, "started_at": now_utc(), "status": "running",
            "steps": [], "versions": package_versions(),
        })
        self.save()

    def end(self, status: str) -> None:
        """Close this invocation's entry ("finished", "incomplete", "interrupted", "failed: <error>") and
        release the run directory's lock."""
        for inv in self.manifest.get("invocations", []):
            if inv["invocation"] == self.invocation:
                inv["finished_at"] = now_utc()
                inv["status"] = status
        try:
            self.save()
        finally:
            self.unlock()

    # --- one invocation at a time -------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the run directory's lock (``.lock``, via ``filelock``; the OS frees it when the process
        dies, so a killed run never leaves a stale lock) and write who holds it beside it
        (``.lock.holder.json``: pid, host, start time, invocation). :meth:`begin` calls it, :meth:`end`
        releases it.

        Raises:
            RunLockedError: another invocation holds it; the message names the holder.
        """
        from filelock import FileLock, Timeout

        if getattr(self, "_lock", None) is not None and self._lock.is_locked:
            return
        lock_file, holder = _lock_paths(self.path)
        self._lock = FileLock(lock_file, timeout=0)
        try:
            self._lock.acquire()
        except Timeout:
            self._lock = None
            raise RunLockedError(_locked_message(self.path)) from None
        write_json_atomic(holder, {"pid": os.getpid(), "host": platform.node(), "started_at": now_utc(),
                                   "invocation": self.invocation, "source": self.source}, indent=None)

    def unlock(self) -> None:
        """Release the lock taken by :meth:`lock` (safe to call twice)."""
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None and lock.is_locked:
            lock.release()

    # --- a step that fell short of its target ----------------------------------------------------------
    def set_shortfall(self, step: str, shortfall: dict[str, Any] | None) -> None:
        """Record (or clear, with None) that a step ended short of its target, e.g. step 1's request
        budget ran out: ``manifest["shortfall"][step]`` holds the facts and ``manifest["status"]`` is
        "incomplete" while any step falls short ("complete" otherwise)."""
        short = self.manifest.setdefault("shortfall", {})
        if shortfall is None:
            short.pop(step, None)
        else:
            short[step] = shortfall
        if not short:
            self.manifest.pop("shortfall")
        self.manifest["status"] = "incomplete" if short else "complete"
        self.save()

    # --- usage --------------------------------------------------------------------------------------------
    def log_usage(self, step: str, completions: Sequence[Any], price_per_million: tuple[float, float] = (0.0, 0.0)) -> None:
        """Append one line to ``usage.jsonl`` for a batch of completions (before their records are written).

        For clients that return a whole round at once (a batch API); a live client logs each answer where
        it caches it (:meth:`log_request_usage`).

        Args:
            step: the step's name.
            completions: the round's :class:`~selfinstruct_utils.llm.Completion` objects; cached ones count as
                cache hits, their tokens and cost are not counted again.
            price_per_million: (input, output) USD per million tokens.
        Returns:
            None. The line holds ``invocation``, ``step`` and the sum of
            :meth:`Usage.of_answer <selfinstruct_utils.llm.Usage.of_answer>` over ``completions``.
        """
        total = Usage()
        for c in completions:
            total.add(Usage.of_answer(c, price_per_million))
        with self.writer("usage") as out:
            out.write({"invocation": self.invocation, "step": step, **asdict(total)})

    def log_request_usage(self, step: str, completion: Any, price_per_million: tuple[float, float] = (0.0, 0.0),
                          request_idx: int | None = None) -> None:
        """Append one line to ``usage.jsonl`` for one answer, at the moment it is received.

        :meth:`LMClient.arequest <selfinstruct_utils.llm.LMClient.arequest>` calls this (as ``on_usage``)
        before it writes the answer to the response cache, so every answer the server sent is counted
        exactly once, whatever is killed when: a cache hit counts as a cache hit (0 tokens), never as
        tokens again. The file stays open between calls (one ``write`` + flush per line).

        Args:
            step: the step's name.
            completion: the answer (a :class:`~selfinstruct_utils.llm.Completion`).
            price_per_million: (input, output) USD per million tokens.
            request_idx: the request's index in its step, or None.
        Returns:
            None. The line holds ``invocation``, ``step``, ``request_idx`` and
            :meth:`Usage.of_answer <selfinstruct_utils.llm.Usage.of_answer>` of ``completion``: the same
            record :class:`~selfinstruct_utils.llm.LMClient` adds to its in-memory totals.
        """
        out = getattr(self, "_usage_out", None)
        if out is None or out._fh.closed:
            out = self._usage_out = self.writer("usage")
        out.write({"invocation": self.invocation, "step": step, "request_idx": request_idx,
                   **asdict(Usage.of_answer(completion, price_per_million))})

    def close_usage(self) -> None:
        """Close the usage log's writer (reopened by the next :meth:`log_request_usage`)."""
        out = getattr(self, "_usage_out", None)
        if out is not None:
            out.close()
            self._usage_out = None

    def usage(self, step: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """A step's LM usage over the whole run: (totals, per invocation), from ``usage.jsonl``."""
        self.truncate_to_complete_lines("usage")
        total = dict.fromkeys(_USAGE_KEYS, 0)
        per: dict[str, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(_USAGE_KEYS, 0))
        for rec in self.read("usage"):
            if rec.get("step") != step:
                continue
            for key in _USAGE_KEYS:
                total[key] += rec.get(key, 0)
                per[rec["invocation"]][key] += rec.get(key, 0)
        for d in [total, *per.values()]:
            d["seconds"] = round(d["seconds"], 3)
            d["cost_usd"] = round(d["cost_usd"], 6)
        return total, dict(per)

    # --- steps ------------------------------------------------------------------------------------------
    def record_step(self, step: str, result: StepResult, *, lm: bool = True) -> None:
        """Save one step's counts, rejections by reason and seconds, and its LM usage totals (when
        ``lm``) over every invocation, in the manifest."""
        entry = self.manifest.setdefault("steps", {}).get(step, {})
        invocations = [i for i in entry.get("invocations", []) if i["invocation"] != self.invocation]
        invocations.append({"invocation": self.invocation, "seconds": round(result.seconds, 3), "finished_at": now_utc()})
        entry = {
            "counts": dict(result.counts),
            "rejections": dict(sorted(Counter(result.rejections).items(), key=lambda kv: (-kv[1], kv[0]))),
            "seconds": round(sum(i["seconds"] for i in invocations), 3),
            "invocations": invocations,
        }
        if lm:
            entry["usage"], entry["usage_by_invocation"] = self.usage(step)
        self.manifest["steps"][step] = entry
        for inv in self.manifest.get("invocations", []):
            if inv["invocation"] == self.invocation and step not in inv["steps"]:
                inv["steps"].append(step)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path / FILES["manifest"], self.manifest, indent=2)
