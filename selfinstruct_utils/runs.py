"""A run is a directory: one JSONL file per step, written as records arrive, and ``manifest.json``.

The manifest records the configuration, the model, the random seed, package versions, and per step
the counts, the rejections by reason, the timings and the token usage. It is rewritten atomically
after every step, so it always describes what the files hold.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from .records import JsonlWriter, read_jsonl

__all__ = ["FILES", "RunDir", "package_versions"]

#: File names of a run directory, per step.
FILES = {
    "requests": "instruction_requests.jsonl",
    "instructions": "machine_generated_instructions.jsonl",
    "classification": "is_clf_or_not.jsonl",
    "instances": "machine_generated_instances.jsonl",
    "finetuning_dir": "finetuning",
    "manifest": "manifest.json",
}

_PACKAGES = ("selfinstruct-kit", "openai", "rapidfuzz", "rouge-score", "numpy", "pandas", "llama_cpp_python", "spacy")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape a run's results (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


class RunDir:
    """A run directory (created if missing) and its manifest.

    Args:
        path: the folder.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest: dict[str, Any] = self._load_manifest()

    def _load_manifest(self) -> dict[str, Any]:
        p = self.path / FILES["manifest"]
        if p.is_file():
            try:
                return json.loads(p.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                pass
        return {"created_at": _now(), "steps": {}}

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

    def update(self, **fields: Any) -> None:
        """Set top-level manifest fields and save."""
        self.manifest.update(fields)
        self.save()

    def record_step(
        self,
        step: str,
        *,
        counts: dict[str, int],
        rejections: Counter | dict[str, int],
        seconds: float,
        usage: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        """Save one step's counts, rejections by reason, wall seconds and LM usage in the manifest."""
        entry = {
            "counts": dict(counts),
            "rejections": dict(sorted(Counter(rejections).items(), key=lambda kv: (-kv[1], kv[0]))),
            "seconds": round(seconds, 3),
            "finished_at": _now(),
        }
        if usage is not None:
            entry["usage"] = usage
        entry.update(extra)
        self.manifest.setdefault("steps", {})[step] = entry
        self.save()

    def save(self) -> None:
        self.manifest["versions"] = package_versions()
        p = self.path / FILES["manifest"]
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, p)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
