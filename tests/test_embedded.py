"""Integration tests against the real embedded llama.cpp server (SmolLM2-135M-Instruct).

No assertion depends on the LM's wording: they check structure, counts that the pipeline itself
guarantees, the cache, resume, and the server's life cycle.
"""

import json
import socket
import subprocess
import sys
import urllib.request

import pytest
from conftest import HANG_GUARD_S

from selfinstruct_utils.llm import TABLE4
from selfinstruct_utils.local_lm import EmbeddedLM, EmbeddedLMError
from selfinstruct_utils.pipeline import PipelineConfig, format_summary, run_pipeline
from selfinstruct_utils.runs import RunDir

pytestmark = pytest.mark.lm


def _tiny_config(**kw) -> PipelineConfig:
    cfg = PipelineConfig.demo(num_instructions=3, request_batch_size=2, max_requests=6, **kw)
    cfg.params["instructions"] = cfg.params["instructions"].replace(max_tokens=64)
    cfg.params["instances"] = cfg.params["instances"].replace(max_tokens=64)
    return cfg


def test_server_answers_completions_and_chat(embedded_lm):
    client = embedded_lm.client()
    out = client.complete(["The capital of France is"], TABLE4["classification"].replace(max_tokens=4))
    assert isinstance(out[0].text, str) and out[0].finish_reason in ("stop", "length")
    assert client.usage["lm"].prompt_tokens > 0
    chat = embedded_lm.client(api="chat").complete(["Say hello."], TABLE4["classification"].replace(max_tokens=4))
    assert chat[0].finish_reason in ("stop", "length")


def test_tiny_run_of_all_four_steps_then_cache_hit(embedded_lm, tmp_path):
    cache = tmp_path / "cache"
    run_dir = tmp_path / "run"
    client = embedded_lm.client(cache_dir=cache)
    results = run_pipeline(client, run_dir, _tiny_config(), progress=False)
    run = RunDir(run_dir)
    requests = run.read("requests")
    kept = run.read("instructions")
    assert 1 <= len(requests) <= 6
    assert len(kept) == results["instructions"].counts["kept"]
    # every candidate has a decision, and the decisions add up
    decisions = [c["decision"] for r in requests for c in r["candidates"]]
    assert decisions.count("kept") == len(kept)
    assert sum(results["instructions"].rejections.values()) == len(decisions) - len(kept)
    clf = run.read("classification")
    assert [r["instruction"] for r in clf] == [r["instruction"] for r in kept]
    assert all(isinstance(r["is_classification"], bool) for r in clf)
    inst = run.read("instances")
    assert [r["instruction"] for r in inst] == [r["instruction"] for r in kept]
    ft = run.path / "finetuning"
    n = sum(1 for _ in open(ft / "all_generated_instances.jsonl"))
    assert n == results["finetuning"].counts["instances"] == len(json.load(open(ft / "alpaca.json")))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(manifest["steps"]) == {"instructions", "classification", "instances", "finetuning"}
    assert manifest["seed"] == 42 and manifest["n_seed_tasks"] == 175
    # with the lag schedule (W = 2) one request may still be in flight when the target is reached:
    # answered and counted in the usage log, not decided
    assert len(requests) <= manifest["steps"]["instructions"]["usage"]["requests"] <= len(requests) + 1
    assert "step instructions" in format_summary(run_dir)

    # Re-run from scratch in a new directory with the same cache: no request reaches the server,
    # and every file is identical.
    client2 = embedded_lm.client(cache_dir=cache)
    run_pipeline(client2, tmp_path / "run2", _tiny_config(), progress=False)
    assert sum(u.requests for u in client2.usage.values()) == 0
    assert sum(u.cache_hits for u in client2.usage.values()) > 0
    for name in ["instruction_requests.jsonl", "machine_generated_instructions.jsonl", "is_clf_or_not.jsonl",
                 "machine_generated_instances.jsonl", "finetuning/prompt_completion.jsonl"]:
        assert (run_dir / name).read_bytes() == (tmp_path / "run2" / name).read_bytes(), name


def test_resume_continues_where_it_stopped(embedded_lm, tmp_path):
    """Stop after step 1's first batch, resume, and compare with an uninterrupted run."""
    cache = tmp_path / "cache"
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    run_pipeline(embedded_lm.client(cache_dir=cache), full_dir, _tiny_config(), steps=("instructions",), progress=False)
    # a run with a budget of 2 requests stops early; the same command with the full budget resumes it
    cfg = _tiny_config()
    cfg.max_requests = 2
    run_pipeline(embedded_lm.client(cache_dir=cache), part_dir, cfg, steps=("instructions",), progress=False)
    # simulate a kill in the middle of writing the next line
    with open(part_dir / "instruction_requests.jsonl", "a") as fh:
        fh.write('{"request_idx": 2, "batch_')
    with pytest.warns(UserWarning, match="half-written"):
        run_pipeline(embedded_lm.client(cache_dir=cache), part_dir, _tiny_config(), steps=("instructions",), progress=False)
    for name in ["instruction_requests.jsonl", "machine_generated_instructions.jsonl"]:
        assert (full_dir / name).read_bytes() == (part_dir / name).read_bytes(), name


def test_server_is_stopped_on_exit_even_when_the_caller_raises(tmp_path):
    lm = EmbeddedLM(log_path=tmp_path / "log")
    with pytest.raises(RuntimeError, match="boom"):
        with lm:
            port = lm.port
            proc = lm.process
            urllib.request.urlopen(lm.base_url + "/models", timeout=HANG_GUARD_S).read()
            raise RuntimeError("boom")
    assert proc.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_server_dies_with_its_parent(tmp_path):
    """A SIGKILLed parent leaves no llama.cpp server behind (PR_SET_PDEATHSIG)."""
    code = (
        "from selfinstruct_utils.local_lm import EmbeddedLM; import os, time; "
        "lm = EmbeddedLM().start(); print(lm.process.pid, flush=True); os.kill(os.getpid(), 9)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S)
    pid = int(out.stdout.split()[0])
    import os
    import time

    deadline = time.monotonic() + HANG_GUARD_S  # however long a loaded machine takes to deliver the signal
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, 9)
        pytest.fail("the server outlived its parent")


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(EmbeddedLMError, match="does not exist"):
        EmbeddedLM(tmp_path / "nope.gguf").start()


def test_another_gguf_never_gets_the_first_ggufs_answers(tmp_path):
    """`selfinstruct step instructions` with the shipped GGUF, then with another GGUF behind the same alias
    (the same weights under another name in its metadata), on the same seeds and cache: the second run
    asks its own model; the first GGUF again is served from the cache."""
    from selfinstruct_utils.local_lm import default_gguf_path

    data = default_gguf_path().read_bytes()
    marker = b"Smollm2 135M 8k"
    assert data.count(marker) == 1
    other = tmp_path / "other.gguf"
    other.write_bytes(data.replace(marker, b"Smollm2 135M 9k"))
    common = ["step", "instructions", "--num-instructions", "2", "--max-requests", "2", "--request-batch-size", "2",
              "--instruction-max-tokens", "24", "--no-progress", "--cache-dir", str(tmp_path / "cache")]

    def run(name: str, *extra: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "selfinstruct_utils.cli", *common, "--run-dir", str(tmp_path / name), *extra],
                             capture_output=True, text=True, timeout=600)
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        short = manifest["steps"]["instructions"]["counts"]["kept"] < 2  # 2 requests may keep fewer: exit 3
        assert out.returncode == (3 if short else 0), out.stderr
        return manifest

    first, second, again = run("a"), run("b", "--gguf", str(other)), run("c")
    assert first["lm"]["identity"] != second["lm"]["identity"]
    assert second["lm"]["model"] == first["lm"]["model"] == "smollm2-135m-instruct"  # the same alias
    usage = [m["steps"]["instructions"]["usage"] for m in (first, second, again)]
    assert [(u["requests"], u["cache_hits"]) for u in usage] == [(2, 0), (2, 0), (0, 2)]
    assert first["lm"]["measured_tokens_per_second"] > 0 and first["lm"]["retry_timeouts"] is False
