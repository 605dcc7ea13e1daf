"""The released code's prompts, on demand, read as data and never copied into the kit.

``--templates released`` (``templates="released"`` in Python) makes the kit fetch three files of the
original repository (github.com/yizhongw/self-instruct) once into the data cache:

- ``self_instruct/templates/clf_task_template.py`` (step 2: ``template_1``),
- ``self_instruct/templates/instance_gen_template.py`` (step 3: ``output_first_template_for_clf`` and
  ``input_first_template_for_gen``),
- ``self_instruct/bootstrap_instructions.py`` (step 1: the two headers inside ``encode_prompt``),

and reads the strings out of them with Python's ``ast`` module, without executing any of their code.
The released code appends ``" " + instruction + "\\n"`` to each few-shot block (and ``"Is it
classification?"`` in step 2); :class:`~selfinstruct_utils.templates.TemplateSet` renders them that way.
Offline, with nothing cached, it fails with the URL and what to copy by hand.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from .data import CACHE_DIR, RAW
from .download import DownloadError, fetch
from .records import DataFormatError
from .templates import KIT_TEMPLATES, FewShotTemplate, InstructionTemplate, TemplateSet

__all__ = ["RELEASED_FILES", "RELEASED_REPO", "released_templates", "parse_released_templates", "template_set"]

RELEASED_REPO = "yizhongw/self-instruct/main"
#: Role -> path in the original repository.
RELEASED_FILES = {
    "classification": "self_instruct/templates/clf_task_template.py",
    "instances": "self_instruct/templates/instance_gen_template.py",
    "instructions": "self_instruct/bootstrap_instructions.py",
}


def _parse(path: Path) -> ast.Module:
    """The syntax tree of a Python file (never run).

    Raises:
        DataFormatError: not UTF-8, not valid Python, or nested too deeply to parse.
    """
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except UnicodeDecodeError as err:
        raise DataFormatError(path, None, None, f"not valid UTF-8 ({err.reason})") from None
    except SyntaxError as err:
        raise DataFormatError(path, err.lineno, None, f"not valid Python ({err.msg})") from None
    except (ValueError, RecursionError, MemoryError) as err:  # null bytes; too deeply nested
        raise DataFormatError(path, None, None, f"not readable as Python ({type(err).__name__})") from None


def _module_strings(path: Path) -> dict[str, str]:
    """Module-level ``NAME = "string"`` assignments of a Python file, read without running it."""
    tree = _parse(path)
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _encode_prompt_headers(path: Path) -> tuple[str, str]:
    """(general header, classification header): the strings assigned to ``prompt`` in the two branches of
    ``if classification:`` inside ``def encode_prompt``."""
    tree = _parse(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "encode_prompt":
            for stmt in node.body:
                if isinstance(stmt, ast.If):
                    branches = [_assigned_string(stmt.body), _assigned_string(stmt.orelse)]
                    if all(branches):
                        clf, general = branches
                        return general.rstrip("\n"), clf.rstrip("\n")
    raise DataFormatError(path, None, "encode_prompt", "no `if classification:` branches assigning `prompt` strings")


def _assigned_string(body: list[ast.stmt]) -> str | None:
    for stmt in body:
        if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "prompt" for t in stmt.targets)
                and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
            return stmt.value.value
    return None


def _need(strings: dict[str, str], name: str, path: Path) -> str:
    if name not in strings:
        raise DataFormatError(path, None, name, "missing: not the released template file?")
    return strings[name]


def parse_released_templates(folder: str | os.PathLike) -> TemplateSet:
    """The released prompts from a folder laid out like the original repository (see :data:`RELEASED_FILES`).

    Raises:
        FileNotFoundError: a file is missing; DataFormatError: a file lacks the expected strings.
    """
    folder = Path(folder)
    clf_path, inst_path, boot_path = (folder / RELEASED_FILES[k] for k in ("classification", "instances", "instructions"))
    for p in (clf_path, inst_path, boot_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing")
    clf = _module_strings(clf_path)
    inst = _module_strings(inst_path)
    general, clf_header = _encode_prompt_headers(boot_path)
    # The kit's set with the five prompts the released code has replaced (a role it lacks keeps the kit's).
    return KIT_TEMPLATES.with_prompts(
        name="released",
        instructions=InstructionTemplate(header=general),
        classification_instructions=InstructionTemplate(header=clf_header),
        classification=FewShotTemplate(header=_need(clf, "template_1", clf_path), examples=(),
                                       query=" {instruction}\nIs it classification?"),
        input_first=FewShotTemplate(header=_need(inst, "input_first_template_for_gen", inst_path), examples=(),
                                    query=" {instruction}\n"),
        output_first=FewShotTemplate(header=_need(inst, "output_first_template_for_clf", inst_path), examples=(),
                                     query=" {instruction}\n"),
        source=f"github.com/{RELEASED_REPO.rsplit('/', 1)[0]}",
    )


def released_templates(cache: str | os.PathLike | None = None, *, mirror: str | None = None, timeout: float = 30.0,
                       progress: bool = False) -> TemplateSet:
    """The released prompts, fetched once into ``cache`` (default ``~/.cache/selfinstruct-kit/released``).

    Args:
        mirror: a base URL standing in for ``https://raw.githubusercontent.com`` (or ``$SELFINSTRUCT_MIRROR``).
    Raises:
        DownloadError: a file is not cached and cannot be fetched (offline); the message names the URL and
            where to copy the file by hand.
    """
    folder = Path(cache) if cache is not None else CACHE_DIR / "released"
    for rel in RELEASED_FILES.values():
        target = folder / rel
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fetch(f"{RAW}/{RELEASED_REPO}/{rel}", target, mirror=mirror, timeout=timeout, progress=progress,
                  hint="set SELFINSTRUCT_MIRROR to a mirror of the raw files (these files are looked for only "
                       f"in {folder}, never in SELFINSTRUCT_DATA)")
        except DownloadError as err:
            raise DownloadError(f"--templates released needs the original repository's prompt files: {err}") from None
    return parse_released_templates(folder)


def template_set(name: str, **kwargs) -> TemplateSet:
    """A template set by name: "kit" (the kit's own few-shot examples) or "released" (fetched on demand)."""
    if name == "kit":
        return KIT_TEMPLATES
    if name == "released":
        return released_templates(**kwargs)
    raise ValueError(f"unknown template set {name!r}: 'kit' or 'released'")
