import json

import pytest

from selfinstruct_utils.records import (
    DataFormatError,
    Instance,
    JsonlWriter,
    load_seed_tasks,
    read_jsonl,
)


def test_paper_seed_tasks_load(data):
    tasks = load_seed_tasks(data / "self_instruct" / "seed_tasks.jsonl")
    assert len(tasks) == 175
    # The published file flags 26 as classification (the paper's appendix says 25).
    assert sum(t.is_classification for t in tasks) == 26
    assert tasks[0].id == "seed_task_0"
    assert all(t.instances and t.instruction.strip() for t in tasks)
    assert len({t.id for t in tasks}) == 175


def test_example_seed_tasks_have_both_kinds():
    from conftest import PROJECT

    tasks = load_seed_tasks(PROJECT / "seeds" / "example_seed_tasks.jsonl")
    assert {t.is_classification for t in tasks} == {True, False}
    assert all(isinstance(i, Instance) for t in tasks for i in t.instances)


def _write(tmp_path, text: str | bytes, name="seeds.jsonl"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


GOOD = {"id": "a", "name": "a", "instruction": "Do it.", "instances": [{"input": "", "output": "ok"}], "is_classification": False}


@pytest.mark.parametrize(
    "lines, line, field, words",
    [
        ([GOOD, {**GOOD, "id": "b", "instruction": ""}], 2, "instruction", "empty"),
        ([{k: v for k, v in GOOD.items() if k != "instruction"}], 1, "instruction", "missing"),
        ([{**GOOD, "instruction": 3}], 1, "instruction", "expected str"),
        ([{**GOOD, "instances": []}], 1, "instances", "empty"),
        ([{**GOOD, "instances": [{"input": ""}]}], 1, "instances[0].output", "missing"),
        ([{**GOOD, "is_classification": "yes"}], 1, "is_classification", "true or false"),
        ([GOOD, GOOD], 2, "id", "duplicate"),
    ],
)
def test_bad_seed_fields_name_file_line_field(tmp_path, lines, line, field, words):
    p = _write(tmp_path, "\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        load_seed_tasks(p)
    assert err.value.line == line and err.value.field == field
    assert str(p) in str(err.value) and words in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(DataFormatError, match="invalid JSON"):
        load_seed_tasks(_write(tmp_path, json.dumps(GOOD) + "\n{oops\n"))
    with pytest.raises(DataFormatError, match="JSON list"):
        load_seed_tasks(_write(tmp_path, json.dumps([GOOD, GOOD])))
    with pytest.raises(DataFormatError, match="UTF-8"):
        load_seed_tasks(_write(tmp_path, b'{"instruction": "\xff\xfe"}\n'))
    with pytest.raises(DataFormatError, match="no seed tasks"):
        load_seed_tasks(_write(tmp_path, ""))
    with pytest.raises(DataFormatError, match="JSON object"):
        load_seed_tasks(_write(tmp_path, json.dumps(GOOD) + "\n3\n"))


def test_half_written_last_line_is_dropped_with_warning(tmp_path):
    p = tmp_path / "x.jsonl"
    with JsonlWriter(p) as w:
        w.write({"a": 1})
        w.write({"a": 2})
    with open(p, "a") as fh:
        fh.write('{"a": 3, "b"')  # a kill during a write
    with pytest.warns(UserWarning, match="half-written"):
        rows = [o for _, o in read_jsonl(p, tolerate_partial_last_line=True)]
    assert rows == [{"a": 1}, {"a": 2}]
    with pytest.raises(DataFormatError):
        list(read_jsonl(p))


# --- issue "Records that stay true", items 5 and 9: hostile seed files are refused with file, line, field ---
@pytest.mark.parametrize(
    "raw, line, field, words",
    [
        (b'{"id": "a", "instruction": "x", "n": ' + b"9" * 5000 + b"}\n", 1, None, "a value Python cannot read"),
        (json.dumps(GOOD).encode() + b"\n" + b"[" * 100_000 + b"]" * 100_000 + b"\n", 2, None, "nested too deeply"),
        (json.dumps({**GOOD, "instruction": "Say hi \ud83d"}).encode() + b"\n", 1, "instruction", "unpaired surrogate (U+D83D)"),
        (json.dumps({**GOOD, "instances": [{"input": "", "output": "ok\ud83d"}]}).encode() + b"\n", 1,
         "instances[0].output", "unpaired surrogate"),
        (json.dumps({**GOOD, "instruction": "Ring \u0007 the bell"}).encode() + b"\n", 1, "instruction",
         "control character (U+0007) at character 5"),
        (json.dumps({**GOOD, "instances": [{"input": "a\x1b[31m", "output": "ok"}]}).encode() + b"\n", 1,
         "instances[0].input", "control character (U+001B)"),
        (json.dumps({**GOOD, "name": "n\x00"}).encode() + b"\n", 1, "name", "control character"),
    ],
)
def test_hostile_seed_files_are_refused_with_file_line_field(tmp_path, raw, line, field, words):
    p = _write(tmp_path, raw)
    with pytest.raises(DataFormatError) as err:
        load_seed_tasks(p)
    assert (err.value.line, err.value.field) == (line, field)
    assert str(err.value).startswith(f"{p}:{line}") and words in str(err.value) and len(str(err.value)) < 400


def test_a_byte_order_mark_is_accepted_and_tabs_and_newlines_are_text(tmp_path):
    good = {**GOOD, "instances": [{"input": "a\tb\r\nc", "output": "ok"}]}
    p = _write(tmp_path, b"\xef\xbb\xbf" + json.dumps(good).encode() + b"\n")
    (task,) = load_seed_tasks(p)
    assert task.id == "a" and task.instances[0].input == "a\tb\r\nc"


def test_records_with_an_unpaired_surrogate_are_written_not_crashed(tmp_path):
    from selfinstruct_utils.records import write_jsonl

    with JsonlWriter(tmp_path / "a.jsonl") as w:
        w.write({"text": "smile \ud83d!"})
    write_jsonl(tmp_path / "b.jsonl", [{"text": "smile \ud83d!"}])
    for name in ("a.jsonl", "b.jsonl"):
        assert [o for _, o in read_jsonl(tmp_path / name)] == [{"text": "smile \ufffd!"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl"]
