"""One usage ledger: LMClient.usage (in memory) and the run's usage.jsonl add up the same per-answer record
(llm.Usage.of_answer), so they cannot disagree."""

from __future__ import annotations

import itertools

import pytest

from selfinstruct_utils import llm
from selfinstruct_utils.llm import Completion, LMClient, SamplingParams, Usage
from selfinstruct_utils.runs import RunDir


def test_the_client_totals_and_the_run_log_agree_answer_by_answer(tmp_path, monkeypatch):
    """Answers of 0.4 ms each: rounding each log line to the millisecond (as the log once did) sums to 0 s
    while the client counted 0.0012 s; the same records give the same totals."""
    client = LMClient("m", base_url="http://127.0.0.1:9/v1", api_key="k", cache_dir=tmp_path / "cache",
                      identity="test-weights", price_per_million=(0.15, 0.6))
    tokens = iter([(11, 5), (7, 3), (13, 8)])

    async def send(http, prompt, params):
        p, c = next(tokens)
        return Completion([(f" answer to {prompt}", "stop")], prompt_tokens=p, completion_tokens=c)

    clock = itertools.count(0, 0.0004)
    monkeypatch.setattr(client, "_send", send)
    monkeypatch.setattr(llm.time, "perf_counter", lambda: next(clock))
    run = RunDir(tmp_path / "run")

    async def ask(prompts):
        for rid, prompt in enumerate(prompts):
            await client.arequest(None, prompt, SamplingParams(max_tokens=8), step="s", request_id=rid,
                                  on_usage=lambda comp, r: run.log_request_usage("s", comp, client.price_per_million, r))

    llm.run_sync(ask(["a", "b", "c", "a", "b"]))  # the last two are cache hits
    run.close_usage()
    from_log, per_invocation = run.usage("s")
    assert client.usage["s"].to_dict() == from_log == {
        "requests": 3, "cache_hits": 2, "prompt_tokens": 31, "completion_tokens": 16, "seconds": 0.001,
        "cost_usd": round((31 * 0.15 + 16 * 0.6) / 1e6, 6)}
    assert list(per_invocation.values()) == [from_log]


@pytest.mark.parametrize("cached", [False, True])
def test_a_batch_round_logs_what_the_answers_add_up_to(tmp_path, cached):
    comps = [Completion([("x", "stop")], 10, 4, cached=cached, seconds=0.0004),
             Completion([("y", "stop")], 3, 9, seconds=0.0004)]
    run = RunDir(tmp_path / "run")
    run.log_usage("s", comps, (1.0, 2.0))
    memory = Usage()
    for c in comps:
        memory.add(Usage.of_answer(c, (1.0, 2.0)))
    assert run.usage("s")[0] == memory.to_dict()
    assert memory.cache_hits == int(cached) and memory.requests == 2 - int(cached)
