"""One atomic writer (records.atomic_open) behind every file the kit replaces.

Two checks: each writer whose rename is killed leaves the previous file byte for byte and no temporary
file (a plain write would already have overwritten it), and no module writes a file any other way (a
writer that went back to ``write_text`` or ``open(..., "w")`` fails the source scan).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pandas as pd
import pytest

from selfinstruct_utils.records import atomic_open, write_atomic, write_json_atomic, write_jsonl

PACKAGE = Path(__file__).resolve().parent.parent / "selfinstruct_utils"


class Killed(BaseException):
    """Stands for a kill: not an Exception, so no writer's error handling swallows it."""


def _jsonl(tmp_path):
    target = tmp_path / "records.jsonl"
    return target, lambda: write_jsonl(target, [{"a": 1}, {"a": 2}])


def _bytes(tmp_path):
    target = tmp_path / "blob.bin"
    return target, lambda: write_atomic(target, b"\x00new")


def _run_manifest(tmp_path):
    from selfinstruct_utils.runs import RunDir

    run = RunDir(tmp_path / "run")
    return run.path / "manifest.json", run.save


def _run_lock_holder(tmp_path):
    from selfinstruct_utils.runs import RunDir

    run = RunDir(tmp_path / "run")
    return run.path / ".lock.holder.json", run.lock


def _response_cache(tmp_path):
    from selfinstruct_utils.llm import Completion, ResponseCache

    cache = ResponseCache(tmp_path / "cache")
    key = "ab" + "0" * 62
    return cache.directory / "ab" / f"{key}.json", lambda: cache.put(key, Completion([("an answer", "stop")], 3, 2))


def _gguf_memo(tmp_path, monkeypatch):
    from selfinstruct_utils import local_lm

    memo = tmp_path / "gguf-sha256.json"
    monkeypatch.setattr(local_lm, "_hash_memo_path", lambda: memo)
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF weights")
    return memo, lambda: local_lm.gguf_identity(weights)


def _review_sheet(tmp_path):
    from selfinstruct_utils.analysis.quality import save_sheet

    target = tmp_path / "review_r1.csv"
    return target, lambda: save_sheet(pd.DataFrame({"item": [1], "instruction": ["Say hi."]}), target)


def _figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from selfinstruct_utils.plots import save

    fig, ax = plt.subplots()
    ax.plot([1, 2])
    return tmp_path / "fig.png", lambda: save(fig, "fig", tmp_path)


def _alpaca_json(tmp_path, gen2):
    from conftest import kit_run_from_original

    from selfinstruct_utils.finetune import build_finetuning_data
    from selfinstruct_utils.runs import RunDir

    run = RunDir(kit_run_from_original(gen2, tmp_path / "run"))
    return run.path / "finetuning" / "alpaca.json", lambda: build_finetuning_data(run)


def _export(name):
    def writer(tmp_path, gen2):
        from conftest import kit_run_from_original

        from selfinstruct_utils.finetune import export_dataset

        run = kit_run_from_original(gen2, tmp_path / "run")
        return tmp_path / "out" / name, lambda: export_dataset(run, tmp_path / "out", formats=["sharegpt"])
    return writer


def _predictions(name):
    def writer(tmp_path, monkeypatch, data):
        from selfinstruct_utils import evaluate

        monkeypatch.setattr(evaluate, "generate", lambda model, tok, prompts, **kw: (
            ["an answer"] * len(prompts), evaluate.GenerationStats(10, 2, 0.5)))
        return tmp_path / "preds" / name, lambda: evaluate.evaluate_user_oriented(
            None, None, name="m", out_dir=tmp_path / "preds", tasks=2, progress=False,
            tasks_path=data / "self_instruct" / "human_eval" / "user_oriented_instructions.jsonl")
    return writer


WRITERS = {
    "records.write_jsonl": _jsonl,
    "records.write_atomic": _bytes,
    "runs manifest": _run_manifest,
    "runs lock holder": _run_lock_holder,
    "llm response cache": _response_cache,
    "local_lm GGUF memo": _gguf_memo,
    "quality review sheet": _review_sheet,
    "plots.save": _figure,
    "finetune alpaca.json": _alpaca_json,
    "finetune export sharegpt.json": _export("sharegpt.json"),
    "finetune export provenance.json": _export("provenance.json"),
    "evaluate predictions": _predictions("m_predictions.jsonl"),
    "evaluate predictions meta": _predictions("m_predictions.meta.json"),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_writer_killed_before_its_rename_leaves_the_old_file_and_no_temporary(name, tmp_path, monkeypatch, request):
    make = WRITERS[name]
    kwargs = {k: request.getfixturevalue(k) for k in make.__code__.co_varnames[:make.__code__.co_argcount]
              if k != "tmp_path"}
    if "monkeypatch" in kwargs:
        kwargs["monkeypatch"] = monkeypatch
    target, write = make(tmp_path, **kwargs)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"OLD")
    real_replace = os.replace

    def dies_at_the_target(src, dst, *args, **kw):
        if Path(dst) == target:
            raise Killed
        return real_replace(src, dst, *args, **kw)

    monkeypatch.setattr(os, "replace", dies_at_the_target)
    with pytest.raises(Killed):  # a plain write never renames: it would overwrite OLD and not raise
        write()
    monkeypatch.undo()
    assert target.read_bytes() == b"OLD"
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []


def test_atomic_open_keeps_the_old_file_when_the_block_raises_half_way(tmp_path):
    target = tmp_path / "sheet.csv"
    write_atomic(target, "old,file\n")
    with pytest.raises(KeyboardInterrupt), atomic_open(target) as fh:
        fh.write("new,fi")
        raise KeyboardInterrupt
    assert target.read_text(encoding="utf-8") == "old,file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.csv"]
    with atomic_open(target, "wb") as fh:
        fh.write(b"new")
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["sheet.csv"]
    with pytest.raises(ValueError, match="mode"), atomic_open(target, "a"):
        pass


def test_write_json_atomic_that_cannot_serialize_leaves_the_file(tmp_path):
    target = write_json_atomic(tmp_path / "m.json", {"tasks": 4})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"tasks": object()})
    assert target.read_text(encoding="utf-8") == '{\n "tasks": 4\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


#: Calls that write a file outside a ``with atomic_open(...)`` block, and the places allowed to make them:
#: append-only logs (records.JsonlWriter, the server's log), the resumable download's ``.part`` file and
#: its rename, whole folders written by other libraries (a model, an adapter, a ``datasets`` folder) and a
#: figure drawn into memory.
_ALLOWED = {
    ("records.py", "JsonlWriter.__post_init__", "open"),
    ("records.py", "atomic_open", "open"),
    ("records.py", "atomic_open", "os.replace"),
    ("runs.py", "RunDir.truncate_to_complete_lines", "open"),  # cuts a half-written last line of a log
    ("local_lm.py", "EmbeddedLM.start", "open"),  # the server's log, appended
    ("download.py", "_download_part", "open"),  # <name>.part, appended to when resumed
    ("download.py", "fetch", "os.replace"),  # <name>.part -> <name> once whole and checked
    ("tune.py", "_convert_gguf", "write_text"),  # inside a temporary folder renamed whole below
    ("tune.py", "_convert_gguf", "save_pretrained"),
    ("tune.py", "_convert_gguf", "os.replace"),
    ("tune.py", "tune", "save_pretrained"),  # the adapter folder (peft)
    ("finetune.py", "export_dataset", "save_to_disk"),  # a datasets folder
    ("report.py", "figure_to_data_uri", "savefig"),  # into memory (BytesIO)
}

_WRITE_CALLS = {"os.replace", "os.rename", "shutil.move", "shutil.copy", "shutil.copyfile", "json.dump", "write_text",
                "write_bytes", "savefig", "write_table", "to_csv", "to_parquet", "to_json", "to_excel", "save_to_disk",
                "save_pretrained"}


def _call_name(call: ast.Call) -> str:
    f = call.func
    if isinstance(f, ast.Attribute):
        return f"{f.value.id}.{f.attr}" if isinstance(f.value, ast.Name) and f.value.id in ("os", "shutil", "json") else f.attr
    return getattr(f, "id", "")


def _writes(call: ast.Call, name: str) -> bool:
    if name == "open":
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        return mode is not None and not (isinstance(mode, ast.Constant) and set(str(mode.value)) <= set("rbt"))
    if name in ("to_csv", "to_json", "to_parquet", "to_excel"):
        return bool(call.args) or any(k.arg == "path_or_buf" for k in call.keywords)  # no target: returns text
    return name in _WRITE_CALLS


def _file_writes() -> set[tuple[str, str, str]]:
    """(module, function, call) for every call in the package that writes or renames a file outside a
    ``with atomic_open(...)`` block."""
    found = set()

    def visit(node, module, scope, atomic):
        for child in ast.iter_child_nodes(node):
            inner, inside = scope, atomic
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
            if isinstance(child, ast.With) and any(isinstance(i.context_expr, ast.Call)
                                                   and _call_name(i.context_expr) == "atomic_open" for i in child.items):
                inside = True
            if isinstance(child, ast.Call) and not atomic:
                name = _call_name(child)
                if _writes(child, name):
                    found.add((module, scope, name))
            visit(child, module, inner, inside)

    for path in sorted(PACKAGE.rglob("*.py")):
        visit(ast.parse(path.read_text(encoding="utf-8")), str(path.relative_to(PACKAGE)), "", False)
    return found


def test_every_file_the_package_replaces_goes_through_atomic_open():
    assert sorted(_file_writes() - _ALLOWED) == []
