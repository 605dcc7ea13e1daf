"""Records of the method and their files: seed tasks, instances, JSONL reading and writing.

Inside the package records are dataclasses; dicts exist only at the file boundary. Every reading
error names the file, the line and the field (``DataFormatError``), and every writer appends and
flushes one line per record so that nothing already produced is lost when a run dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DataFormatError",
    "Instance",
    "SeedTask",
    "JsonlWriter",
    "read_jsonl",
    "write_jsonl",
    "atomic_open",
    "write_atomic",
    "write_json_atomic",
    "load_seed_tasks",
    "seed_task_from_dict",
    "check_text",
]


class DataFormatError(ValueError):
    """A file does not hold what the kit expects.

    Attributes:
        path: the file.
        line: 1-based line number (JSONL) or record number (JSON list), or None for the whole file.
        field: the offending field, or None.
    """

    def __init__(self, path: str | os.PathLike, line: int | None, field: str | None, message: str):
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Instance:
    """One input/output pair of a task (paper Sec. 2.1). ``input`` may be empty."""

    input: str
    output: str


@dataclass
class SeedTask:
    """A human-written seed task in the paper's schema (``seed_tasks.jsonl``).

    Attributes:
        id: unique id, e.g. ``seed_task_0``.
        name: short snake_case name.
        instruction: the task instruction.
        instances: at least one input/output pair.
        is_classification: whether the task has a small, finite label space.
    """

    id: str
    name: str
    instruction: str
    instances: list[Instance]
    is_classification: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_jsonl(path: str | os.PathLike, *, tolerate_partial_last_line: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    Args:
        path: the file.
        tolerate_partial_last_line: when the last line is not valid JSON and the file does not end
            with a newline (a write cut short by a kill), warn and skip it instead of raising.
    Returns:
        An iterator of (1-based line number, dict).
    Raises:
        DataFormatError: unreadable bytes, invalid JSON, a JSON list where JSONL was expected, or a
            line that is not a JSON object; the message names file and line.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read()
    if data.startswith(_BOM):  # a UTF-8 byte-order mark (some editors write one) is not part of the data
        data = data[len(_BOM):]
    ends_with_newline = data.endswith(b"\n")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataFormatError(path, number, None, f"not valid UTF-8 ({err.reason} at byte {err.start})") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            is_last = number == len(lines)
            if is_last and not ends_with_newline and tolerate_partial_last_line:
                warnings.warn(f"{path}:{number}: dropping a half-written last line ({len(raw)} bytes)", stacklevel=2)
                return
            if number == 1 and text.lstrip().startswith("["):
                raise DataFormatError(
                    path, None, None, "this is a JSON list, not JSON Lines (one object per line); "
                    "load it with load_dataset() or convert it"
                ) from None
            raise DataFormatError(path, number, None, f"invalid JSON ({err.msg} at column {err.colno})") from None
        except ValueError as err:  # e.g. an integer of more than 4,300 digits
            raise DataFormatError(path, number, None, f"a value Python cannot read ({str(err)[:120]})") from None
        except RecursionError:
            raise DataFormatError(path, number, None, "JSON nested too deeply to read") from None
        if not isinstance(obj, dict):
            if isinstance(obj, list) and number == 1:
                raise DataFormatError(
                    path, None, None, "this is a JSON list, not JSON Lines (one object per line); "
                    "load it with load_dataset() or convert it"
                )
            raise DataFormatError(path, number, None, f"expected a JSON object, found {type(obj).__name__}")
        yield number, obj


_BOM = b"\xef\xbb\xbf"
#: Unpaired surrogates (cannot be written as UTF-8) and control characters other than tab, newline, CR.
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def check_text(value: str, path: str | os.PathLike, line: int, field: str) -> str:
    """``value`` if it holds no unpaired surrogate and no control character (tab, newline and carriage
    return are allowed).

    Raises:
        DataFormatError: naming file, line, field and the character's position.
    """
    for pattern, what in ((_SURROGATE, "an unpaired surrogate"), (_CONTROL, "a control character")):
        m = pattern.search(value)
        if m:
            raise DataFormatError(path, line, field, f"holds {what} (U+{ord(m.group()):04X}) at character {m.start()}; "
                                  "remove it (it cannot become clean UTF-8 training data)")
    return value


def write_jsonl(path: str | os.PathLike, records: Iterable[dict | Any]) -> int:
    """Write records (dicts or dataclasses) to a JSONL file, replacing it atomically.

    Returns:
        The number of lines written.
    """
    count = 0
    with atomic_open(path) as fh:
        for rec in records:
            fh.write(_dumps(rec) + "\n")
            count += 1
    return count


# --- the kit's one atomic file writer -------------------------------------------------------------------


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside ``path`` for writing; on a clean exit, flush it, ``fsync`` it and
    rename it onto ``path`` (``os.replace``, atomic on POSIX and Windows on one file system).

    Every file the kit replaces (run manifests, JSONL step files, the response cache, the tuning
    manifest, predictions and their meta files, review and rating sheets, finetuning exports) goes
    through here, so a kill or an exception mid-write leaves the previous file whole: if the block
    raises (or the rename fails), the temporary file is removed and ``path`` is untouched. The
    temporary file is ``.<name>.<pid>-<random>.tmp`` in the same folder (hidden, unique per writer; a
    SIGKILL can leave one behind, never a half-written ``path``). Parent folders are created.

    Args:
        path: the file to (re)place.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        encoding: the text encoding (ignored for ``"wb"``).
    Yields:
        The open file object.
    Raises:
        ValueError: a mode other than ``"w"`` or ``"wb"``; OSError: from the file system.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``data`` (text or bytes) atomically, through :func:`atomic_open`.

    Returns:
        ``path`` as a Path.
    """
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", encoding=encoding) as fh:
        fh.write(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 1, ensure_ascii: bool = False,
                      default: Any = None) -> Path:
    """Replace ``path`` with ``obj`` as JSON atomically, through :func:`atomic_open` (UTF-8; with
    ``ensure_ascii`` the file is pure ASCII whatever the text, unpaired surrogates included).

    Args:
        path: the JSON file.
        obj: anything ``json.dumps`` takes.
        indent, ensure_ascii, default: passed to ``json.dumps``.
    Returns:
        ``path`` as a Path.
    Raises:
        TypeError, ValueError: ``obj`` is not JSON-serializable (``path`` is then untouched).
    """
    return write_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii, default=default))


def _dumps(rec: dict | Any) -> str:
    if hasattr(rec, "to_dict"):
        rec = rec.to_dict()
    elif not isinstance(rec, dict):
        rec = asdict(rec)
    text = json.dumps(rec, ensure_ascii=False)
    # An unpaired surrogate cannot be written as UTF-8: it becomes U+FFFD rather than a crash mid-run.
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


@dataclass
class JsonlWriter:
    """Append records to a JSONL file one line at a time, flushed after every record.

    A line is written with a single ``write`` call and flushed, so a kill leaves at most one
    half-written last line, which ``read_jsonl(..., tolerate_partial_last_line=True)`` drops.
    Use as a context manager.
    """

    path: Path
    _fh: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, rec: dict | Any) -> None:
        self._fh.write(_dumps(rec) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _require(obj: dict, key: str, kind: type | tuple[type, ...], path: Path, line: int) -> Any:
    if key not in obj:
        raise DataFormatError(path, line, key, "missing")
    value = obj[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataFormatError(path, line, key, f"expected {names}, found {type(value).__name__}")
    return value


def seed_task_from_dict(obj: dict, path: str | os.PathLike = "<memory>", line: int = 0) -> SeedTask:
    """Validate one seed-task dict (paper schema) and build a ``SeedTask``.

    Raises:
        DataFormatError: a missing or mistyped field, an empty instruction, or no instances.
    """
    path = Path(path)
    instruction = check_text(_require(obj, "instruction", str, path, line), path, line, "instruction")
    if not instruction.strip():
        raise DataFormatError(path, line, "instruction", "is empty")
    raw_instances = _require(obj, "instances", list, path, line)
    if not raw_instances:
        raise DataFormatError(path, line, "instances", "is empty: a seed task needs at least one instance")
    instances = []
    for k, inst in enumerate(raw_instances):
        if not isinstance(inst, dict):
            raise DataFormatError(path, line, f"instances[{k}]", f"expected an object, found {type(inst).__name__}")
        for key in ("input", "output"):
            if key not in inst:
                raise DataFormatError(path, line, f"instances[{k}].{key}", "missing")
            if not isinstance(inst[key], str):
                raise DataFormatError(path, line, f"instances[{k}].{key}", f"expected str, found {type(inst[key]).__name__}")
            check_text(inst[key], path, line, f"instances[{k}].{key}")
        instances.append(Instance(inst["input"], inst["output"]))
    is_clf = obj.get("is_classification", False)
    if not isinstance(is_clf, bool):
        raise DataFormatError(path, line, "is_classification", f"expected true or false, found {is_clf!r}")
    task_id = obj.get("id", f"task_{line}")
    name = obj.get("name", task_id)
    for key, value in (("id", task_id), ("name", name)):
        if not isinstance(value, str):
            raise DataFormatError(path, line, key, f"expected str, found {type(value).__name__}")
        check_text(value, path, line, key)
    return SeedTask(id=task_id, name=name, instruction=instruction, instances=instances, is_classification=is_clf)


def load_seed_tasks(path: str | os.PathLike) -> list[SeedTask]:
    """Load seed tasks from a JSONL file in the paper's schema (see ``seeds/README.md``).

    Args:
        path: a ``seed_tasks.jsonl`` file: one object per line with ``id``, ``name``,
            ``instruction``, ``instances`` [{``input``, ``output``}], ``is_classification``.
    Returns:
        The tasks in file order. A task with an instance whose output is empty is kept (it still
        prompts step 1) with a warning naming file, line and id; such instances never become
        finetuning data (:func:`selfinstruct_utils.finetune.build_finetuning_data` counts them).
    Raises:
        DataFormatError: bad JSON, a bad field, duplicate ids or an empty file (file, line, field named).
    """
    path = Path(path)
    tasks: list[SeedTask] = []
    seen: dict[str, int] = {}
    empty: list[str] = []
    for line, obj in read_jsonl(path):
        task = seed_task_from_dict(obj, path, line)
        if task.id in seen:
            raise DataFormatError(path, line, "id", f"duplicate id {task.id!r} (first on line {seen[task.id]})")
        seen[task.id] = line
        tasks.append(task)
        if any(not inst.output.strip() for inst in task.instances):
            empty.append(f"{path}:{line} ({task.id})")
    if not tasks:
        raise DataFormatError(path, None, None, "holds no seed tasks")
    if empty:
        warnings.warn(
            f"{len(empty)} seed task(s) have an instance with an empty output, which never becomes finetuning "
            f"data: {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}", stacklevel=2,
        )
    return tasks
