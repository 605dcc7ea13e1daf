"""Runs whose records can be trusted (issue: trustworthy runs). Each test names the defect it guards."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from conftest import HANG_GUARD_S
from fake_openai import FakeOpenAI

from selfinstruct_utils.cli import main
from selfinstruct_utils.llm import LMClient, LMRequestError, SamplingParams
from selfinstruct_utils.pipeline import PipelineConfig, format_summary, run_pipeline
from selfinstruct_utils.runs import ConfigChangedError, RunDir

_WORDS = [f"{a}{b}" for a in ("bra", "cle", "dro", "fi", "glo", "ho", "ja", "ku", "lu", "mo") for b in "aeiouyxzqv"]


def _numbered(body: dict) -> str:
    """Step 1: three novel instructions per request seed; steps 2-3: a label and an instance."""
    import random

    prompt = body.get("prompt", "")
    if prompt.endswith("Is it classification?"):
        return " No"
    if "Come up with examples" in prompt[:200]:
        return "Example 1\nInput: some input text\nOutput: some output text\nExample 2\nInput: other\nOutput: another"
    rng = random.Random(body.get("seed", 0))
    lines = ["Describe " + " ".join(rng.sample(_WORDS, 7)) + "." for _ in range(3)]
    return " " + lines[0] + "\n10. " + lines[1] + "\n11. " + lines[2]


def _cli(run_dir, base_url, cache, *extra):
    return ["run", "--run-dir", str(run_dir), "--backend", "server", "--base-url", base_url, "--model", "m",
            "--cache-dir", str(cache), "--no-progress", "--request-batch-size", "2", *extra]


# --- 1. the cache never serves one model's answers to another ------------------------------------------
def test_cache_key_holds_the_model_identity(tmp_path):
    with FakeOpenAI(text=" Yes", model_id="weights-A") as a, FakeOpenAI(text=" No", model_id="weights-B") as b:
        first = LMClient("same-alias", base_url=a.base_url, api_key="k", cache_dir=tmp_path)
        second = LMClient("same-alias", base_url=b.base_url, api_key="k", cache_dir=tmp_path)
        assert first.identity.startswith(f"server:{a.base_url}#weights-A#fp:") and second.identity != first.identity
        assert first.complete(["Is it?"], SamplingParams())[0].text == " Yes"
        out = second.complete(["Is it?"], SamplingParams())[0]
        assert out.text == " No" and not out.cached  # not the first model's answer
        again = LMClient("same-alias", base_url=a.base_url, api_key="k", cache_dir=tmp_path)
        assert again.complete(["Is it?"], SamplingParams())[0].cached
    assert LMClient("gpt-x", api_key="k").identity == "openai:gpt-x"
    with pytest.raises(LMRequestError, match="/models"):
        _ = LMClient("m", base_url="http://127.0.0.1:9/v1", api_key="k").identity


def test_gguf_identity_is_the_content_hash_remembered_by_path_size_mtime(tmp_path, monkeypatch):
    from selfinstruct_utils import local_lm

    monkeypatch.setattr(local_lm, "_hash_memo_path", lambda: tmp_path / "memo.json")
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"GGUF" + b"\x00" * 1000)
    b.write_bytes(b"GGUF" + b"\x01" * 1000)
    ida, idb = local_lm.gguf_identity(a), local_lm.gguf_identity(b)
    assert ida != idb and ida.startswith("gguf-sha256:")
    import hashlib

    assert ida == "gguf-sha256:" + hashlib.sha256(a.read_bytes()).hexdigest()
    memo = json.loads((tmp_path / "memo.json").read_text())
    assert memo[str(a.resolve())]["size"] == 1004
    # remembered: a changed memo entry is served while size and mtime are unchanged ...
    memo[str(a.resolve())]["sha256"] = "remembered"
    (tmp_path / "memo.json").write_text(json.dumps(memo))
    assert local_lm.gguf_identity(a) == "gguf-sha256:remembered"
    # ... and recomputed when the file changes
    a.write_bytes(b"GGUF" + b"\x02" * 1000)
    os.utime(a, ns=(1, 1))
    assert local_lm.gguf_identity(a) == "gguf-sha256:" + hashlib.sha256(a.read_bytes()).hexdigest()


# --- 2. usage adds up over invocations, across a kill --------------------------------------------------------
def test_usage_totals_add_up_across_a_kill_and_a_resume(tmp_path):
    run_dir = tmp_path / "run"
    with FakeOpenAI(text=_numbered, default=("slow", 0.4)) as fake:
        cmd = [sys.executable, "-m", "selfinstruct_utils.cli", *_cli(run_dir, fake.base_url, tmp_path / "c"),
               "--num-instructions", "12"]
        is_step = getattr(LMClient, "PROBE_PROMPT", None)
        fake.count_if = lambda body: body.get("prompt") != is_step  # a model probe is not a step's answer
        fake.hold_after(2)  # two answers, then the server holds the rest (so a loaded machine cannot race ahead)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        usage = run_dir / "usage.jsonl"
        deadline = time.monotonic() + HANG_GUARD_S
        # usage.jsonl gets one line per answer as it arrives: kill after two
        while time.monotonic() < deadline and (not usage.exists() or usage.read_bytes().count(b"\n") < 2):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        fake.drop_held()
        killed_after = sum(1 for body in fake.requests if fake.count_if(body))
        assert 2 <= killed_after < 6  # after step 1's first answers, before its target
        fake.default = "ok"
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c")) == 0  # resume, no options
        delivered = fake.delivered  # answers the server sent (held ones were dropped, never answered)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    lm_steps = ("instructions", "classification", "instances")
    assert sum(manifest["steps"][s]["usage"]["requests"] for s in lm_steps) == delivered  # each counted once
    step1 = manifest["steps"]["instructions"]
    assert len(step1["usage_by_invocation"]) == 2  # the killed invocation's requests are counted too
    first_inv = min(step1["usage_by_invocation"])
    assert step1["usage_by_invocation"][first_inv]["requests"] >= 2
    assert step1["usage"]["prompt_tokens"] == 11 * step1["usage"]["requests"]  # the fake server's 11 per request
    summary = format_summary(run_dir)
    assert f"{step1['usage']['requests']} requests" in summary and "over 2 invocation(s)" in summary
    assert [i["status"] for i in manifest["invocations"]] == ["running", "finished"]  # the killed one never ended


# --- 3. a resume never silently changes the configuration ------------------------------------------------------
def test_a_resume_keeps_the_stored_configuration_and_refuses_changes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with FakeOpenAI(text=_numbered) as fake:
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c", "--seed", "7", "--num-instructions", "2")) == 0
        seeds_of_first = [r["seed"] for r in fake.requests if "Come up with a series" in r["prompt"]]
        # continued with the default flags: the run's own seed 7, a larger target allowed
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c", "--num-instructions", "4")) == 0
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["config"]["seed"] == 7 and manifest["config"]["num_instructions"] == 4
        from selfinstruct_utils.generate import request_seed

        step1_seeds = [r["seed"] for r in fake.requests if "Come up with a series" in r["prompt"]]
        assert sorted(step1_seeds) == sorted(request_seed(7, k) for k in range(len(step1_seeds))) and seeds_of_first
        n = len(fake.requests)
        capsys.readouterr()
        # an explicit change that alters results is refused, before any request
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c", "--seed", "42")) == 2
        err = capsys.readouterr().err
        assert "seed: 7 -> 42" in err and "--force-new-config" in err and len(fake.requests) == n
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c", "--rouge-threshold", "0.5")) == 2
        assert "rouge_threshold: 0.7 -> 0.5" in capsys.readouterr().err
        # forced: accepted and recorded
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c", "--seed", "42", "--force-new-config")) == 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 42
    assert [h["changes"] for h in manifest["config_history"]] == [
        [{"field": "num_instructions", "old": 2, "new": 4, "allowed": True}],
        [{"field": "seed", "old": 7, "new": 42, "forced": True}],
    ]


def test_a_run_with_another_model_or_templates_is_refused(tmp_path):
    run = RunDir(tmp_path / "run")
    run.begin({"seed": 1, "model_identity": "gguf-sha256:aaa", "templates": {"input_first": "x1"}})
    run.end("finished")
    again = RunDir(tmp_path / "run")
    with pytest.raises(ConfigChangedError, match=r"model_identity: 'gguf-sha256:aaa' -> 'gguf-sha256:bbb'"):
        again.begin({"seed": 1, "model_identity": "gguf-sha256:bbb", "templates": {"input_first": "x1"}})
    with pytest.raises(ConfigChangedError, match=r"templates.input_first: 'x1' -> 'x2'"):
        again.begin({"seed": 1, "model_identity": "gguf-sha256:aaa", "templates": {"input_first": "x2"}})
    again.begin({"seed": 1, "model_identity": None})  # unknown in this invocation (e.g. step finetuning): not compared


# --- 5. exactly N ------------------------------------------------------------------------------------------
def test_num_instructions_keeps_exactly_n(tmp_path):
    with FakeOpenAI(text=_numbered) as fake:
        assert main(_cli(tmp_path / "run", fake.base_url, tmp_path / "c", "--num-instructions", "10")) == 0
        assert main(_cli(tmp_path / "old", fake.base_url, tmp_path / "c", "--num-instructions", "10",
                         "--keep-whole-last-batch")) == 0
        assert main(_cli(tmp_path / "old", fake.base_url, tmp_path / "c")) == 0  # 12 kept for N=10: still resumable
    kept = [json.loads(x) for x in open(tmp_path / "run" / "machine_generated_instructions.jsonl")]
    assert len(kept) == 10
    log = [json.loads(x) for x in open(tmp_path / "run" / "instruction_requests.jsonl")]
    assert sum(c["decision"] == "over_target" for r in log for c in r["candidates"]) == 2
    assert len(open(tmp_path / "old" / "machine_generated_instructions.jsonl").readlines()) == 12


# --- 9. all inputs validated before anything starts --------------------------------------------------------
def test_a_bad_seed_file_starts_no_server_and_creates_no_directory(tmp_path, monkeypatch, capsys):
    from selfinstruct_utils import local_lm

    def no_server(self):
        raise AssertionError("the embedded server was started")

    monkeypatch.setattr(local_lm.EmbeddedLM, "start", no_server)
    monkeypatch.setattr(local_lm, "gguf_identity", lambda path: "gguf-sha256:test")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    bad = tmp_path / "seeds.jsonl"
    bad.write_text('{"id": "a", "instruction": "x", "instances": "none"}\n')
    code = main(["run", "--run-dir", str(tmp_path / "run_bad"), "--seed-tasks", str(bad), "--gguf", str(gguf)])
    assert code == 2 and f"{bad}:1: field 'instances'" in capsys.readouterr().err
    assert not (tmp_path / "run_bad").exists()


# --- 12. empty seed outputs --------------------------------------------------------------------------------
def test_seed_tasks_with_an_empty_output_warn_and_never_become_finetuning_data(tmp_path, data):
    seeds = [json.loads(x) for x in open(data / "self_instruct" / "seed_tasks.jsonl")][:6]
    seeds[2]["instances"] = [{"input": "", "output": "  "}]
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in seeds))
    from selfinstruct_utils.records import load_seed_tasks

    with pytest.warns(UserWarning, match=rf"1 seed task\(s\) have an instance with an empty output.*seeds.jsonl:3 \({seeds[2]['id']}\)"):
        tasks = load_seed_tasks(path)
    from selfinstruct_utils.finetune import build_finetuning_data
    from selfinstruct_utils.records import write_jsonl

    run = RunDir(tmp_path / "run")
    write_jsonl(run.file("instances"), [])
    res = build_finetuning_data(run, seed_tasks=tasks)
    assert res.counts["seed_instances"] == sum(len(s["instances"]) for s in seeds) - 1
    assert res.rejections["seed_empty_output"] == 1
    completions = [json.loads(x)["completion"] for x in open(run.path / "finetuning" / "prompt_completion.jsonl")]
    assert all(c.strip() != "<|endoftext|>" for c in completions)


# --- 13. timeouts ----------------------------------------------------------------------------------------------
def test_timeout_is_derived_from_max_tokens_and_a_timeout_is_not_retried_into_a_busy_server():
    client = LMClient("m", base_url="http://127.0.0.1:9/v1", api_key="k", timeout=None, tokens_per_second=2.0)
    assert client.timeout_for(SamplingParams(max_tokens=1024)) == 60 + 512
    assert client.timeout_for(SamplingParams(max_tokens=100)) == 60 + 50
    assert LMClient("m", base_url="http://x/v1", api_key="k", timeout=33).timeout_for(SamplingParams(max_tokens=1024)) == 33
    with FakeOpenAI(default=("slow", 1.5)) as fake:
        busy = LMClient("m", base_url=fake.base_url, api_key="k", timeout=0.3, retry_timeouts=False, max_retries=3)
        with pytest.raises(LMRequestError, match=r"not retried.*--timeout"):
            busy.complete(["x"], SamplingParams(max_tokens=7), step="instances")
        assert len(fake.requests) == 1
    with FakeOpenAI(script=["503", "500"]) as fake:  # other faults are still retried
        flaky = LMClient("m", base_url=fake.base_url, api_key="k", retry_timeouts=False, max_retries=3)
        assert flaky.complete(["x"], SamplingParams())[0].text == " Yes" and len(fake.requests) == 3


# --- 14. smaller ------------------------------------------------------------------------------------------------
def test_the_lm_rater_reads_grades_not_articles():
    from selfinstruct_utils.parse import parse_rating

    assert [parse_rating(t) for t in (" B", "A", " A.", "Rating: C.", "D\n", "I'd give it a B", " a bit vague")] == \
        ["B", "A", "A", "C", "D", "B", ""]
    assert parse_rating(" A bit vague, so C") == "C"
    assert parse_rating("A bit vague") == ""
    assert parse_rating("") == "" and parse_rating(None) == ""


def test_an_explicit_data_folder_is_never_replaced_by_another(tmp_path):
    from selfinstruct_utils.data import DataNotFoundError, data_dir, user_oriented_path

    with pytest.raises(DataNotFoundError, match=f"{tmp_path}.*has no self_instruct"):
        user_oriented_path(tmp_path)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        data_dir(tmp_path / "nope")
    assert data_dir(tmp_path) == tmp_path


def test_histograms_count_and_average_every_value(tmp_path):
    from selfinstruct_utils import plots

    values = [1, 2, 3, 80]
    fig = plots.histogram(values, title="t", xlabel="x", bins=range(0, 60, 2))
    ax = fig.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 4  # the 80 is drawn in the last bin
    assert ax.get_ylabel() == "count (n = 4)" and "mean 21.50" in [t.get_text().strip() for t in ax.texts]
    lengths = pd.DataFrame({"field": ["instruction"] * 3 + ["output"] * 2 + ["non-empty input"], "words": [10, 20, 400, 5, 7, 3]})
    fig = plots.length_distributions(lengths, clip=150)
    assert "mean 143.33" in [t.get_text().strip() for t in fig.axes[0].texts]  # not the clipped 60.0


# --- 10, 11. loaders report what they leave out; one yes/no reader --------------------------------------------
def test_a_step3_file_in_another_format_warns_and_counts(tmp_path):
    path = tmp_path / "machine_generated_instances.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Task {k} here please.", "raw_instances": f"Q: q{k}\nA: a{k}"}) + "\n"
                            for k in range(101)))
    from selfinstruct_utils.analysis import load_dataset

    with pytest.warns(UserWarning, match="101 of 101 tasks gave no instance"):
        df = load_dataset(path)
    assert len(df) == 101 and df.output.isna().all()
    assert df.attrs["rejections"] == {"no_instances_parsed": 101, "tasks_without_instances": 101}


def test_the_original_codes_folder_is_recognized(gen2):
    from selfinstruct_utils.analysis import load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 9 of 67 tasks without instances: counted, no warning
        df = load_dataset(gen2)
    assert df.instruction.nunique() == 67
    assert df.drop_duplicates("instruction").is_classification.value_counts().to_dict() == {False: 59, True: 8}
    assert df.attrs["rejections"]["tasks_without_instances"] == 9


def test_one_yes_no_reader_everywhere(tmp_path):
    from selfinstruct_utils.analysis import load_dataset
    from selfinstruct_utils.parse import parse_is_classification

    answers = [" Yes.", " No.", "YES", " no, it is not", " Maybe", True]
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Task number {k}.", "output": "o", "is_classification": a}) + "\n"
                            for k, a in enumerate(answers)))
    df = load_dataset(path)
    assert df.is_classification.tolist() == [parse_is_classification(a) for a in answers] == [True, False, True, False, None, True]


def test_notebook_style_call_records_like_the_cli(tmp_path):
    """A run made by calling run_pipeline step by step (as notebooks 02-04 do) has the CLI's manifest."""
    with FakeOpenAI(text=_numbered) as fake:
        main(_cli(tmp_path / "cli", fake.base_url, tmp_path / "c", "--num-instructions", "3"))
        client = LMClient("m", base_url=fake.base_url, api_key="k", cache_dir=tmp_path / "c")
        cfg = PipelineConfig(num_instructions=3, request_batch_size=2)
        for step in ("instructions", "classification", "instances", "finetuning"):
            run_pipeline(client, tmp_path / "nb", cfg, steps=(step,), progress=False, source="notebook")
    cli = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    nb = json.loads((tmp_path / "nb" / "manifest.json").read_text())
    assert nb["config"] == cli["config"] and nb["lm"]["identity"] == cli["lm"]["identity"]
    assert set(nb["steps"]) == set(cli["steps"])
    for step in cli["steps"]:
        assert nb["steps"][step]["counts"] == cli["steps"][step]["counts"]
        if step != "finetuning":
            assert nb["steps"][step]["usage"]["requests"] + nb["steps"][step]["usage"]["cache_hits"] == \
                cli["steps"][step]["usage"]["requests"] + cli["steps"][step]["usage"]["cache_hits"] > 0
    assert "model: m" in format_summary(tmp_path / "nb") and "seed: 42" in format_summary(tmp_path / "nb")
    assert Path(tmp_path / "nb" / "usage.jsonl").is_file()


# --- issue "Records that stay true": one invocation per run directory, api and N on resume, budget ---------
def test_a_second_run_on_the_same_folder_fails_at_once_naming_the_holder(tmp_path):
    """Two real processes on one run directory: the second fails at once (exit 2) naming the first's pid;
    the first finishes, and the request log holds each request once."""
    import threading

    release = threading.Event()

    def held(body: dict) -> str:  # step 1 answers wait until the second process has been refused
        release.wait(timeout=HANG_GUARD_S)
        return _numbered(body)

    run_dir = tmp_path / "run"
    with FakeOpenAI(text=held) as fake:
        cmd = [sys.executable, "-m", "selfinstruct_utils.cli", *_cli(run_dir, fake.base_url, tmp_path / "c"),
               "--num-instructions", "4"]
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + HANG_GUARD_S  # a guard against a hang, not a measured time
            while time.monotonic() < deadline and not fake.requests:
                time.sleep(0.05)
            assert fake.requests, "the first run sent no request"
            second = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S)
        finally:
            release.set()
        out, err = first.communicate(timeout=HANG_GUARD_S)
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c")) == 0  # the lock went with the first process
    assert first.returncode == 0, err
    assert second.returncode == 2
    assert f"is in use by process {first.pid} on " in second.stderr and "another --run-dir" in second.stderr
    log = [json.loads(x)["request_idx"] for x in open(run_dir / "instruction_requests.jsonl")]
    assert log == sorted(set(log))  # no request twice
    assert len(open(run_dir / "machine_generated_instructions.jsonl").readlines()) == 4
    holder = json.loads((run_dir / ".lock.holder.json").read_text())
    assert holder["pid"] != first.pid and holder["started_at"]  # the last holder: the resume in this process


def test_a_resume_with_another_api_or_a_smaller_target_is_refused_and_changes_are_recorded(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with FakeOpenAI(text=_numbered) as fake:
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c", "--num-instructions", "4")) == 0
        n = len(fake.requests)
        capsys.readouterr()
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c", "--api", "chat")) == 2
        assert "api: 'completions' -> 'chat'" in capsys.readouterr().err and len(fake.requests) == n
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c", "--num-instructions", "2")) == 2
        err = capsys.readouterr().err
        assert "already keeps 4 instructions (started with num_instructions=4)" in err
        assert "--num-instructions 4 or more" in err and len(fake.requests) == n
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c", "--num-instructions", "2", "--force-new-config")) == 2
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c", "--num-instructions", "6", "--max-requests", "50")) == 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["num_instructions"] == 6 and manifest["config"]["api"] == "completions"
    assert manifest["config_history"][-1]["changes"] == [
        {"field": "max_requests", "old": None, "new": 50, "allowed": True},
        {"field": "num_instructions", "old": 4, "new": 6, "allowed": True},
    ]
    assert len(open(run_dir / "machine_generated_instructions.jsonl").readlines()) == 6


def test_a_run_that_runs_out_of_budget_says_so_and_exits_3(tmp_path, capsys):
    """An LM that repeats itself: 5 instructions asked, 3 requests allowed."""
    run_dir = tmp_path / "run"
    same = " Describe the water cycle in simple words.\n10. Describe the water cycle in simple words."
    answers = {"step 1": lambda body: same}

    def text(body: dict) -> str:
        return " No" if body.get("prompt", "").endswith("classification?") else answers["step 1"](body)

    with FakeOpenAI(text=text, probe_text=" probe") as fake:
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c", "--num-instructions", "5", "--max-requests", "3")) == 3
        out = capsys.readouterr().out
        manifest = json.loads((run_dir / "manifest.json").read_text())
        kept = len(open(run_dir / "machine_generated_instructions.jsonl").readlines())
        assert kept == 1 and manifest["status"] == "incomplete"
        assert manifest["shortfall"]["instructions"] == {
            "target": 5, "kept": 1, "requests": 3, "max_requests": 3,
            "why": "the request budget ran out (raise --max-requests and run again to continue)"}
        assert manifest["invocations"][-1]["status"] == "incomplete"
        assert "WARNING: INCOMPLETE: step instructions kept 1 of 5 after 3 of 3 requests" in out
        assert "WARNING: INCOMPLETE" in format_summary(run_dir)
        answers["step 1"] = _numbered  # more budget and a better LM: the same run reaches its target
        assert main(_cli(run_dir, fake.base_url, tmp_path / "c", "--max-requests", "20")) == 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "shortfall" not in manifest
