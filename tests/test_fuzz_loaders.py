"""Every loader of records and data files, fed arbitrary bytes and arbitrary JSON records (hypothesis),
raises only its documented exceptions: ``DataFormatError`` (the download check: ``DownloadError``),
never a ``KeyError``, ``TypeError``, ``AttributeError``, ``RecursionError`` or ``UnicodeError`` from deep
inside (issue "Records that stay true", last paragraph)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfinstruct_utils.records import DataFormatError, load_seed_tasks, read_jsonl

FIELDS = ["id", "name", "instruction", "instances", "input", "output", "is_classification", "prompt", "completion",
          "raw_instances", "instance_metadata", "response", "finish_reason", "choices", "target", "motivation_app"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
    | st.sampled_from(["", " Yes", "No", "Example 1\nInput: a\nOutput: b", "Instruction: x\nOutput: y", "\ud83d", "\x07"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), inner, max_size=5),
    max_leaves=12,
)
records = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=7)
jsonl = st.lists(records, max_size=5).map(lambda rs: "".join(json.dumps(r) + "\n" for r in rs).encode())
json_list = st.lists(records | json_values, max_size=5).map(lambda rs: json.dumps(rs).encode())
noise = st.sampled_from([b"", b"\xef\xbb\xbf", b"\n", b"\x00", b"[" * 3000, b"1" * 5000, b"\xff\xfe", b'{"a": 1'])
contents = st.one_of(
    st.binary(max_size=300),
    jsonl,
    json_list,
    st.tuples(noise, jsonl | json_list | st.binary(max_size=50), noise).map(lambda t: b"".join(t)),
)
#: Examples per loader: a few dozen in the fast suite; SELFINSTRUCT_FUZZ_EXAMPLES=1000 for a long run.
EXAMPLES = int(os.environ.get("SELFINSTRUCT_FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                database=None)


def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="fuzz-"))


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@FUZZ
@given(raw=contents)
def test_seed_files_and_jsonl(raw):
    d = _workdir()
    try:
        p = d / "seeds.jsonl"
        p.write_bytes(raw)
        for call in (lambda: _quiet(load_seed_tasks, p), lambda: list(_quiet(read_jsonl, p, tolerate_partial_last_line=True))):
            try:
                call()
            except DataFormatError:
                pass
    finally:
        shutil.rmtree(d)


@FUZZ
@given(raw=contents, suffix=st.sampled_from([".jsonl", ".json"]))
def test_dataset_files(raw, suffix):
    from selfinstruct_utils.analysis import load_dataset

    d = _workdir()
    try:
        p = d / f"data{suffix}"
        p.write_bytes(raw)
        for errors in ("raise", "skip"):
            try:
                _quiet(load_dataset, p, errors=errors)
            except DataFormatError:
                pass
    finally:
        shutil.rmtree(d)


RUN_FILES = ["manifest.json", "is_clf_or_not.jsonl", "machine_generated_instructions.jsonl",
             "finetuning/all_generated_instances.jsonl", "machine_generated_instances.jsonl", "instruction_requests.jsonl"]


@FUZZ
@given(files=st.dictionaries(st.sampled_from(RUN_FILES), contents, min_size=1, max_size=4))
def test_run_folders(files):
    """A kit's run folder or the original code's, with any of its files fuzzed."""
    from selfinstruct_utils.analysis import load_dataset
    from selfinstruct_utils.runs import RunDir, read_manifest

    d = _workdir()
    try:
        for name, raw in files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(raw)
        try:
            _quiet(load_dataset, d)
        except DataFormatError:
            pass
        manifest = read_manifest(d)  # never raises: a manifest that cannot be read is no manifest
        assert manifest is None or isinstance(manifest, dict)
        for key in ("requests", "instructions", "classification", "instances"):
            try:
                _quiet(RunDir(d).read, key)
            except DataFormatError:
                pass
    finally:
        shutil.rmtree(d)


@FUZZ
@given(a=contents, b=contents, tasks=contents)
def test_prediction_folders(a, b, tasks):
    from selfinstruct_utils.analysis.human_eval import load_predictions

    d = _workdir()
    try:
        (d / "m1_predictions.jsonl").write_bytes(a)
        (d / "m2_predictions.jsonl").write_bytes(b)
        (d / "tasks.jsonl").write_bytes(tasks)
        for tasks_path in (None, d / "tasks.jsonl"):
            try:
                _quiet(load_predictions, d, tasks_path)
            except DataFormatError:
                pass
    finally:
        shutil.rmtree(d)


@FUZZ
@given(raw=contents, name=st.sampled_from(["x.jsonl.part", "x.json.part", "x.json"]))
def test_the_download_record_check(raw, name):
    from selfinstruct_utils.download import DownloadError, count_records

    d = _workdir()
    try:
        (d / name).write_bytes(raw)
        try:
            assert count_records(d / name) >= 0
        except DownloadError:
            pass
    finally:
        shutil.rmtree(d)


python_text = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                        st.sampled_from([b"x = 'a'\n", b"def encode_prompt():\n    if c:\n        prompt = 'a'\n",
                                         b"(" * 200, b"\x00", b"\xff"]))


@FUZZ
@given(clf=python_text, inst=python_text, boot=python_text)
def test_the_released_template_files(clf, inst, boot):
    from selfinstruct_utils.released import RELEASED_FILES, parse_released_templates

    d = _workdir()
    try:
        for rel, raw in zip(RELEASED_FILES.values(), (clf, inst, boot), strict=True):
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(raw)
        try:
            _quiet(parse_released_templates, d)
        except DataFormatError:
            pass
    finally:
        shutil.rmtree(d)
