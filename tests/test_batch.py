"""The Batch API client against a loopback Files/Batches server with faults, and export/import."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import HANG_GUARD_S
from fake_batch_server import FakeBatchServer

from selfinstruct_utils import batch as batch_mod
from selfinstruct_utils.batch import BatchExported, BatchLMClient, ExportingClient, import_results
from selfinstruct_utils.llm import LMClient, LMRequestError, ResponseCache, SamplingParams

PARAMS = SamplingParams(max_tokens=7, temperature=0.5, stop=("\n",))
PROMPTS = [f"prompt number {k} ends with word{k}" for k in range(6)]


def client_for(server, tmp_path, **kw):
    kw.setdefault("cache_dir", tmp_path / "cache")
    return BatchLMClient("m", base_url=server.base_url, api_key="k", state_dir=tmp_path / "batches",
                         poll_seconds=0, progress=False, **kw)


def test_round_maps_answers_by_custom_id_at_batch_prices(tmp_path):
    with FakeBatchServer() as server:
        client = client_for(server, tmp_path, price_per_million=(2.0, 10.0))
        comps = client.complete(PROMPTS, PARAMS, step="instructions", request_ids=range(10, 16), seeds=range(100, 106))
        assert [c.text for c in comps] == [f" WORD{k}" for k in range(6)]
        assert [c.prompt_tokens for c in comps] == [6] * 6 and [c.completion_tokens for c in comps] == [3] * 6
        assert len(server.creations) == 1
        created = server.creations[0]
        assert created["endpoint"] == "/v1/completions"
        assert [x["custom_id"] for x in created["lines"]] == [f"instructions-{k}" for k in range(10, 16)]
        first = created["lines"][0]
        assert first["method"] == "POST" and first["url"] == "/v1/completions"
        assert first["body"] == {"model": "m", "prompt": PROMPTS[0], "max_tokens": 7, "temperature": 0.5, "top_p": 1.0,
                                 "frequency_penalty": 0.0, "presence_penalty": 0.0, "stop": ["\n"], "n": 1, "seed": 100}
        usage = client.usage["instructions"]
        assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (6, 36, 18)
        assert client.price_per_million == (1.0, 5.0)
        assert usage.cost_usd == pytest.approx((36 * 1.0 + 18 * 5.0) / 1e6)
        assert client.describe()["list_price_per_million"] == [2.0, 10.0]
        # A rerun is served by the cache, which a live client with the same model shares.
        again = client_for(server, tmp_path).complete(PROMPTS, PARAMS, step="instructions", request_ids=range(10, 16),
                                                      seeds=range(100, 106))
        assert [c.text for c in again] == [c.text for c in comps] and all(c.cached for c in again)
        live = LMClient("m", base_url=server.base_url, api_key="k", cache_dir=tmp_path / "cache", max_retries=0)
        assert live.identity == client.identity and live.identity.startswith(f"server:{server.base_url}#fake#fp:")
        n_live = len(server.live)  # the identity probe
        assert [c.text for c in live.complete(PROMPTS, PARAMS, seeds=range(100, 106))] == [c.text for c in comps]
        assert len(server.creations) == 1 and len(server.live) == n_live


def test_chat_endpoint(tmp_path):
    with FakeBatchServer() as server:
        comps = client_for(server, tmp_path, api="chat").complete(PROMPTS[:2], PARAMS.replace(logprobs=3), step="s")
        line = server.creations[0]["lines"][1]
        assert line["url"] == "/v1/chat/completions" and server.creations[0]["endpoint"] == "/v1/chat/completions"
        assert line["body"]["messages"] == [{"role": "user", "content": PROMPTS[1]}] and "logprobs" not in line["body"]
        assert [c.text for c in comps] == ["WORD0", "WORD1"]


def test_error_lines_are_resubmitted_in_a_follow_up_batch(tmp_path):
    with FakeBatchServer(faults={0: "errors"}, error_ids={"s-1", "s-4"}) as server:
        comps = client_for(server, tmp_path).complete(PROMPTS, PARAMS, step="s")
        assert [c.text for c in comps] == [f" WORD{k}" for k in range(6)]
        assert [[x["custom_id"] for x in c["lines"]] for c in server.creations] == [
            [f"s-{k}" for k in range(6)], ["s-1", "s-4"]]


def test_lines_failing_every_retry_are_reported_by_id(tmp_path):
    with FakeBatchServer(faults={0: "errors", 1: "errors", 2: "errors"}, error_ids={"s-2"}) as server:
        with pytest.raises(LMRequestError, match=r"1 of 6 requests have no answer after 3 batches.*s-2: HTTP 500: scripted server error"):
            client_for(server, tmp_path, max_retries=2).complete(PROMPTS, PARAMS, step="s")
        assert len(server.creations) == 3


@pytest.mark.parametrize("fault", ["expired", "expired_silent"])
def test_expired_batch_resubmits_its_unfinished_lines(tmp_path, fault):
    with FakeBatchServer(faults={0: fault}) as server:
        comps = client_for(server, tmp_path).complete(PROMPTS, PARAMS, step="s")
        assert [c.text for c in comps] == [f" WORD{k}" for k in range(6)]
        assert [x["custom_id"] for x in server.creations[1]["lines"]] == ["s-3", "s-4", "s-5"]
        assert len(server.creations) == 2


@pytest.mark.parametrize("fault", ["failed", "cancelled"])
def test_failed_batch_names_its_id_and_errors_and_is_not_resubmitted(tmp_path, fault):
    with FakeBatchServer(faults={0: fault}) as server:
        pattern = "batch batch_0 failed .*line 1: invalid_request: scripted validation failure" if fault == "failed" \
            else "batch batch_0 cancelled"
        for _ in range(2):  # a rerun polls the same batch again: it never submits the round twice
            with pytest.raises(LMRequestError, match=pattern):
                client_for(server, tmp_path).complete(PROMPTS, PARAMS, step="s")
        assert len(server.creations) == 1


KILLED_CLIENT = textwrap.dedent("""
    import sys
    from selfinstruct_utils.batch import BatchLMClient
    from selfinstruct_utils.llm import SamplingParams
    base, state, cache = sys.argv[1:4]
    client = BatchLMClient("m", base_url=base, api_key="k", state_dir=state, cache_dir=cache, poll_seconds=0.02,
                           progress=False)
    client.complete([f"prompt number {k} ends with word{k}" for k in range(6)], SamplingParams(max_tokens=7),
                    step="s")
    print("finished")
""")


def test_process_killed_while_polling_resumes_its_batch(tmp_path):
    with FakeBatchServer() as server:
        server.hold = True
        proc = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, server.base_url, str(tmp_path / "batches"),
                                 str(tmp_path / "cache")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + HANG_GUARD_S
            while server.retrieves < 3 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, proc.stderr.read().decode()
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        assert len(server.creations) == 1
        server.hold = False
        comps = client_for(server, tmp_path).complete(PROMPTS, SamplingParams(max_tokens=7), step="s")
        assert [c.text for c in comps] == [f" WORD{k}" for k in range(6)]
        assert len(server.creations) == 1


def test_kill_between_create_and_record_finds_the_batch_by_its_tag(tmp_path, monkeypatch):
    class Killed(BaseException):
        pass

    real = batch_mod.write_json_atomic

    def dies_when_recording_the_batch_id(path, state, **kwargs):
        if any(b.get("batch_id") for b in state["batches"]):
            raise Killed  # the batch exists on the server; its id never reached the state file
        real(path, state, **kwargs)

    with FakeBatchServer() as server:
        monkeypatch.setattr(batch_mod, "write_json_atomic", dies_when_recording_the_batch_id)
        with pytest.raises(Killed):
            client_for(server, tmp_path).complete(PROMPTS, PARAMS, step="s")
        monkeypatch.setattr(batch_mod, "write_json_atomic", real)
        assert len(server.creations) == 1
        (state_file,) = (tmp_path / "batches").iterdir()
        assert json.loads(state_file.read_text())["batches"][0]["batch_id"] is None
        comps = client_for(server, tmp_path).complete(PROMPTS, PARAMS, step="s")
        assert [c.text for c in comps] == [f" WORD{k}" for k in range(6)]
        assert len(server.creations) == 1


def test_kill_while_caching_a_returned_round_submits_nothing_new(tmp_path, monkeypatch):
    class Killed(BaseException):
        pass

    real_put, puts = ResponseCache.put, []

    def dies_after_two(self, key, completion):
        if len(puts) == 2:
            raise Killed
        puts.append(key)
        real_put(self, key, completion)

    with FakeBatchServer() as server:
        monkeypatch.setattr(ResponseCache, "put", dies_after_two)
        with pytest.raises(Killed):
            client_for(server, tmp_path).complete(PROMPTS, PARAMS, step="s")
        monkeypatch.setattr(ResponseCache, "put", real_put)
        comps = client_for(server, tmp_path).complete(PROMPTS, PARAMS, step="s")
        assert [c.text for c in comps] == [f" WORD{k}" for k in range(6)] and [c.cached for c in comps] == [True] * 2 + [False] * 4
        assert len(server.creations) == 1


def test_open_client_with_batch_dir_gives_a_batch_client(tmp_path):
    from selfinstruct_utils.session import open_client

    with FakeBatchServer() as server:
        client, started = open_client("server", base_url=server.base_url, model="m", batch_dir=tmp_path / "b")
        assert started is None and isinstance(client, BatchLMClient) and client.batch_api
        assert client.poll_seconds == 30.0 and client.state_dir == tmp_path / "b"
        client.poll_seconds = 0
        assert client.complete(PROMPTS[:1], PARAMS, step="s")[0].text == " WORD0" and len(server.creations) == 1
    with pytest.raises(ValueError, match="needs backend 'openai' or 'server'"):
        open_client("embedded", batch_dir=tmp_path / "b")


def test_export_then_import_fills_the_cache(tmp_path):
    cache = tmp_path / "cache"
    exporter = ExportingClient("m", cache_dir=cache, export_dir=tmp_path / "run" / "batches")
    with pytest.raises(BatchExported) as info:
        exporter.complete(PROMPTS[:3], PARAMS, step="classification", request_ids=[5, 6, 7])
    lines = [json.loads(x) for x in info.value.path.read_text().splitlines()]
    assert info.value.count == 3 and [x["url"] for x in lines] == ["/v1/completions"] * 3
    keys = [ResponseCache.key("completions", "m", p, PARAMS, "offline:m") for p in PROMPTS[:3]]
    assert [x["custom_id"] for x in lines] == [f"classification-{r}-{k}" for r, k in zip([5, 6, 7], keys, strict=True)]
    # What vLLM's run_batch would write: one answer per line, the last one failed.
    fake = FakeBatchServer()
    out = [fake._response(x) for x in lines[:2]] + [{"id": "e", "custom_id": lines[2]["custom_id"], "error": None,
                                                     "response": {"status_code": 400, "body": {"error": {"message": "bad"}}}}]
    fake.server.server_close()
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(x) + "\n" for x in out))
    summary = import_results(results, cache, tmp_path / "run")
    assert summary["imported"] == 2 and summary["steps"] == {"classification": 2}
    assert list(summary["errors"]) == [lines[2]["custom_id"]] and "HTTP 400: bad" in summary["errors"][lines[2]["custom_id"]]
    usage = [json.loads(x) for x in (tmp_path / "run" / "usage.jsonl").read_text().splitlines()]
    assert [(u["step"], u["requests"], u["prompt_tokens"], u["completion_tokens"]) for u in usage] == [
        ("classification", 2, 12, 6)]
    # The failed line is exported again, alone; the others come from the cache.
    with pytest.raises(BatchExported) as again:
        exporter.complete(PROMPTS[:3], PARAMS, step="classification", request_ids=[5, 6, 7])
    assert again.value.count == 1
    assert ResponseCache(cache).get(keys[0]).text == " WORD0"
    results.write_text(json.dumps(fake._response(lines[2])) + "\n")
    import_results(results, cache)
    comps = exporter.complete(PROMPTS[:3], PARAMS, step="classification", request_ids=[5, 6, 7])
    assert [c.text for c in comps] == [" WORD0", " WORD1", " WORD2"] and all(c.cached for c in comps)


def test_import_rejects_foreign_lines(tmp_path):
    bad = tmp_path / "out.jsonl"
    bad.write_text(json.dumps({"custom_id": "request-1", "response": {"status_code": 200, "body": {}}}) + "\n")
    with pytest.raises(ValueError, match=r"out.jsonl:1: custom_id 'request-1' is not one written by"):
        import_results(bad, tmp_path / "cache")


def test_without_a_cache_answers_stay_in_the_state_folder(tmp_path):
    with FakeBatchServer() as server:
        first = client_for(server, tmp_path, cache_dir=None).complete(PROMPTS, PARAMS, step="s")
        again = client_for(server, tmp_path, cache_dir=None).complete(PROMPTS, PARAMS, step="s")
        assert [c.text for c in again] == [c.text for c in first] and all(c.cached for c in again)
        assert len(server.creations) == 1 and (tmp_path / "batches" / "responses").is_dir()


def scripted_answer(prompt: str) -> str:
    """A stand-in LM for the kit's prompts: step 1 one novel instruction (pseudo-words drawn from the
    prompt's hash), step 2 Yes/No, step 3 one instance."""
    import hashlib
    import random as _random

    rng = _random.Random(hashlib.sha256(prompt.encode()).hexdigest())
    syll = ["ka", "lo", "mi", "nu", "pe", "ri", "so", "tu", "ve", "xa"]
    words = ["".join(rng.choice(syll) for _ in range(3)) for _ in range(8)]
    if prompt.endswith("\n9."):
        return " Summarize " + " ".join(words) + ".\n10."
    if prompt.endswith("Is it classification?"):
        return rng.choice([" Yes", " No"])
    return f" Input: {words[0]} {words[1]}\nOutput: {words[2]}"


def fake_run_batch(src, dst):
    """What `python -m vllm.entrypoints.openai.run_batch -i src -o dst` writes, answered by scripted_answer."""
    out = []
    for raw in src.read_text().splitlines():
        line = json.loads(raw)
        out.append({"id": "vllm-1", "custom_id": line["custom_id"], "error": None, "response": {
            "status_code": 200, "request_id": "r",
            "body": {"choices": [{"index": 0, "text": scripted_answer(line["body"]["prompt"]), "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}}})
    dst.write_text("".join(json.dumps(x) + "\n" for x in out))


def test_export_import_rounds_run_a_whole_pipeline_offline(tmp_path, data):
    from selfinstruct_utils.batch import export_pending
    from selfinstruct_utils.pipeline import PipelineConfig
    from selfinstruct_utils.runs import read_manifest

    config = PipelineConfig(seed_tasks=str(data / "self_instruct" / "seed_tasks.jsonl"), num_instructions=3,
                            request_batch_size=2)
    run, cache = tmp_path / "run", tmp_path / "cache"
    exported = []
    for _ in range(12):
        pending = export_pending(run, config, model="m", cache_dir=cache, progress=False)
        if pending is None:
            break
        lines = [json.loads(x) for x in pending.path.read_text().splitlines()]
        exported.append((pending.step, [int(x["custom_id"].split("-")[1]) for x in lines]))
        fake_run_batch(pending.path, tmp_path / "out.jsonl")
        assert import_results(tmp_path / "out.jsonl", cache, run)["imported"] == len(lines)
    steps = [s for s, _ in exported]
    assert steps[-2:] == ["classification", "instances"] and set(steps[:-2]) == {"instructions"}
    for _, ids in exported[:-2]:  # step 1: rounds of at most W = 2 consecutive requests
        assert 1 <= len(ids) <= 2 and ids == list(range(ids[0], ids[0] + len(ids)))
    assert exported[-2][1] == [0, 1, 2] and exported[-1][1] == [0, 1, 2]  # steps 2-3: all remaining at once
    manifest = read_manifest(run)
    assert manifest["invocations"][-1]["status"] == "finished"
    assert len((run / "machine_generated_instructions.jsonl").read_text().splitlines()) == 3
    assert (run / "finetuning").is_dir()
    usage = [json.loads(x) for x in (run / "usage.jsonl").read_text().splitlines()]
    # Tokens are counted once, at import; the run then counts the same requests as cache hits.
    assert sum(u["requests"] for u in usage) == 10 and sum(u["prompt_tokens"] for u in usage) == 50
    assert sum(u["cache_hits"] for u in usage) >= 10


def test_cli_run_with_batch_api_sends_rounds_and_resumes_for_free(tmp_path, data, capsys):
    from selfinstruct_utils.cli import main
    from selfinstruct_utils.runs import read_manifest

    argv = ["run", "--run-dir", str(tmp_path / "run"), "--backend", "server", "--model", "m", "--cache-dir",
            str(tmp_path / "c"), "--no-progress", "--seed-tasks", str(data / "self_instruct" / "seed_tasks.jsonl"),
            "--num-instructions", "3", "--request-batch-size", "2", "--batch-api", "--batch-poll", "0"]
    with FakeBatchServer(answer=lambda body: scripted_answer(body["prompt"])) as server:
        assert main([*argv, "--base-url", server.base_url]) == 0, capsys.readouterr().err
        rounds = [(c["lines"][0]["custom_id"].split("-")[0], len(c["lines"])) for c in server.creations]
        assert rounds == [("instructions", 2), ("instructions", 2), ("classification", 3), ("instances", 3)]
        assert len(server.live) == 1  # the identity probe; every generation went through a batch
        manifest = read_manifest(tmp_path / "run")
        assert manifest["lm"]["batch_api"] is True and manifest["invocations"][-1]["status"] == "finished"
        assert len(list((tmp_path / "run" / "batches").glob("*.json"))) == 4
        assert main([*argv, "--base-url", server.base_url]) == 0
        assert len(server.creations) == 4


def test_cli_batch_api_refuses_the_embedded_backend(tmp_path, capsys):
    from selfinstruct_utils.cli import main

    with pytest.raises(SystemExit, match="--batch-api needs --backend openai or server"):
        main(["run", "--run-dir", str(tmp_path / "run"), "--batch-api"])
    assert not (tmp_path / "run").exists()


def test_cli_batch_export_import(tmp_path, data, capsys):
    from selfinstruct_utils.cli import main

    common = ["--run-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c")]
    export = ["batch", "export", *common, "--model", "m", "--no-progress", "--num-instructions", "2",
              "--request-batch-size", "2", "--seed-tasks", str(data / "self_instruct" / "seed_tasks.jsonl")]
    for _ in range(8):
        assert main(export) == 0
        out = capsys.readouterr().out
        if "nothing to export" in out:
            break
        (path,) = sorted((tmp_path / "run" / "batches").glob("export-*.jsonl"), key=lambda p: p.stat().st_mtime)[-1:]
        assert str(path) in out and "run_batch" in out
        fake_run_batch(path, tmp_path / "out.jsonl")
        assert main(["batch", "import", str(tmp_path / "out.jsonl"), *common]) == 0
        assert "imported" in capsys.readouterr().out
    assert "step finetuning" in out
    assert len((tmp_path / "run" / "machine_generated_instructions.jsonl").read_text().splitlines()) == 2
    (tmp_path / "bad.jsonl").write_text('{"custom_id": "x-1"}\n')
    assert main(["batch", "import", str(tmp_path / "bad.jsonl"), *common]) == 2
    assert "bad.jsonl:1: custom_id 'x-1' is not one written by" in capsys.readouterr().err
