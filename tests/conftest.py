"""Shared fixtures: the real data folder and one embedded LM server for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from selfinstruct_utils.data import data_dir

PROJECT = Path(__file__).resolve().parent.parent


def _per_test_timeout() -> float:
    """pytest-timeout's limit for one test (``timeout`` in pyproject.toml's [tool.pytest.ini_options])."""
    import tomllib

    try:
        return float(tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["timeout"])
    except (OSError, KeyError, ValueError):
        return 900.0


#: How long a test waits for something that must happen (a subprocess reaching a state, a server thread's
#: condition): as long as the test may run at all. A wait never gives up earlier, so a slow or loaded
#: machine makes a test slower, never red; a real hang still ends at pytest-timeout's limit.
HANG_GUARD_S = _per_test_timeout()


@pytest.fixture(scope="session")
def data() -> Path:
    """The real data folder ($SELFINSTRUCT_DATA, default ../shared/data)."""
    return data_dir(must_contain="self_instruct/seed_tasks.jsonl")


@pytest.fixture(scope="session")
def gen2(data) -> Path:
    """A complete real run of the original four steps (maulikmadhavi/self-instruct, gpt3_generations2)."""
    return data / "generated" / "maulikmadhavi__self-instruct" / "gpt3_generations2"


def kit_run_from_original(gen2: Path, folder: Path) -> Path:
    """A run directory of the kit holding the original GPT-3 run's steps 1-3 (then step 4 by the kit)."""
    from selfinstruct_utils.analysis.datasets import original_step3_records
    from selfinstruct_utils.finetune import build_finetuning_data
    from selfinstruct_utils.records import write_jsonl
    from selfinstruct_utils.runs import RunDir

    run = RunDir(folder)
    recs = original_step3_records(gen2)
    write_jsonl(run.file("instructions"), ({"instruction": r["instruction"]} for r in recs))
    write_jsonl(run.file("classification"), ({"instruction": r["instruction"], "is_classification": r["is_classification"]}
                                             for r in recs))
    write_jsonl(run.file("instances"), recs)
    build_finetuning_data(run)
    return folder


@pytest.fixture(scope="session")
def real_instructions(data) -> list[str]:
    """Every real instruction in the shared data: seeds, user-oriented, and the generated runs."""
    import json

    texts = []
    for path in [data / "self_instruct" / "seed_tasks.jsonl", data / "self_instruct" / "human_eval" / "user_oriented_instructions.jsonl"]:
        texts += [json.loads(line)["instruction"] for line in open(path, encoding="utf-8")]
    gen = data / "generated"
    for path in (gen / "maulikmadhavi__self-instruct").rglob("machine_generated_instructions.jsonl"):
        texts += [json.loads(line)["instruction"] for line in open(path, encoding="utf-8")]
    for path in gen.rglob("*.json"):
        texts += [r["instruction"] for r in json.load(open(path, encoding="utf-8"))]
    return texts


@pytest.fixture(scope="session")
def embedded_lm(tmp_path_factory):
    """The real embedded llama.cpp server (SmolLM2-135M-Instruct), started once per test session."""
    from selfinstruct_utils.local_lm import EmbeddedLM

    log = tmp_path_factory.mktemp("llama") / "server.log"
    with EmbeddedLM(log_path=log) as lm:
        yield lm


@pytest.fixture()
def lm_cache(tmp_path) -> Path:
    return tmp_path / "lm-cache"


os.environ.setdefault("MPLBACKEND", "Agg")


def _tracked_state() -> str | None:
    """`git status` of tracked files plus a hash of their diff (None outside a git checkout)."""
    import hashlib
    import subprocess

    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT,
                                capture_output=True, text=True, timeout=60, check=True).stdout
        diff = subprocess.run(["git", "diff"], cwd=PROJECT, capture_output=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return status + hashlib.sha256(diff).hexdigest()


_STATE_AT_START = None


def pytest_sessionstart(session):
    global _STATE_AT_START
    if not hasattr(session.config, "workerinput"):
        _STATE_AT_START = _tracked_state()


def pytest_sessionfinish(session, exitstatus):
    """The test suite never rewrites a tracked file (figures included): fail the session if it did (checked
    once, by the main process, under pytest-xdist)."""
    if hasattr(session.config, "workerinput"):
        return
    end = _tracked_state()
    if _STATE_AT_START is not None and end is not None and end != _STATE_AT_START:
        import subprocess

        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT,
                                 capture_output=True, text=True).stdout
        print(f"\nERROR: the test suite changed tracked files:\n{changed}")
        session.exitstatus = 1


@pytest.fixture()
def small_registry(monkeypatch, tmp_path, data):
    """Small files in the published formats for download tests; the registry expects their counts."""
    from http_mirror import set_small_registry

    return set_small_registry(monkeypatch, tmp_path, data)
