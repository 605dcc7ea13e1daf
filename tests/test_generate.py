"""Step 1 (paper Sec. 2.2) piece by piece, and the step drivers on a loopback fake server (no LM)."""

import json
import random

import pytest
from conftest import HANG_GUARD_S
from fake_openai import FakeOpenAI

from selfinstruct_utils.generate import (
    build_prompts,
    classify_instructions,
    decide_candidates,
    generate_instructions,
    request_seed,
    sample_prompt_instructions,
)
from selfinstruct_utils.llm import TABLE4, LMClient
from selfinstruct_utils.novelty import NoveltyPool
from selfinstruct_utils.records import load_seed_tasks
from selfinstruct_utils.runs import RunDir


@pytest.fixture(scope="module")
def seeds(data):
    return load_seed_tasks(data / "self_instruct" / "seed_tasks.jsonl")


def test_prompt_composition_6_seeds_2_machine(seeds):
    seed_instr = [t.instruction for t in seeds]
    machine = [f"Machine instruction number {k} about topic {k}." for k in range(10)]
    chosen = sample_prompt_instructions(seed_instr, machine, random.Random(0))
    assert len(chosen) == 8 and sum(c in machine for c in chosen) == 2 and sum(c in seed_instr for c in chosen) == 6
    # while the machine pool is small, seeds fill the prompt
    assert sum(c in machine for c in sample_prompt_instructions(seed_instr, machine[:1], random.Random(0))) == 1
    assert len(sample_prompt_instructions(seed_instr, [], random.Random(0))) == 8


def test_build_prompts_is_pure_and_seeded_per_request(seeds):
    seed_instr = [t.instruction for t in seeds]
    a = build_prompts(seed_instr, [], [0, 1, 2], seed=7)
    assert a == build_prompts(seed_instr, [], [0, 1, 2], seed=7)
    assert a[1] == build_prompts(seed_instr, [], [1], seed=7)[0]  # request 1 alone: the same prompt (resume)
    assert a != build_prompts(seed_instr, [], [0, 1, 2], seed=8)
    chosen, prompt = a[0]
    assert prompt.startswith("Come up with a series of tasks:\n1. ") and prompt.endswith("\n9.")
    assert all(f"{k}. " in prompt for k in range(1, 9))


def test_decide_candidates_records_each_decision_and_never_lists_itself(seeds):
    pool = NoveltyPool([t.instruction for t in seeds])
    n0 = len(pool)
    text = (" Write a limerick about a lazy cat who loves naps.\n10. Draw a picture of the sunset."
            "\n11. Detect if the Reddit thread contains any hate speech.\n12. Tell a joke.\n13. Write a limerick about a lazy cat who loves naps."
            "\n14. Find the capital city of the given country and its population.\n15. Name the")
    candidates, kept = decide_candidates(text, "length", pool, still_needed=None, record_similar=5)
    decisions = [(c["instruction"], c["decision"]) for c in candidates]
    assert ("Name the", "truncated") in decisions
    assert ("Draw a picture of the sunset.", "blacklisted_keyword") in decisions
    assert ("Tell a joke.", "too_short") in decisions
    assert ("Detect if the Reddit thread contains any hate speech.", "too_similar") in decisions  # seed_task_172
    assert [k["instruction"] for k in kept] == ["Write a limerick about a lazy cat who loves naps.",
                                                "Find the capital city of the given country and its population."]
    dup = next(c for c in candidates if c["decision"] == "too_similar" and c["instruction"].startswith("Write a limerick"))
    assert dup["rougeL"] == 1.0 and dup["most_similar"] == kept[0]["instruction"]  # decided against the same completion
    assert len(pool) == n0 + 2
    for k in kept:
        assert k["instruction"] not in k["most_similar"]  # the pool as it was before it joined
        assert len(k["most_similar"]) == 5 and max(k["most_similar"].values()) < 1.0
    # the second kept one saw the first
    assert kept[0]["instruction"] in pool.texts[: n0 + 1]


def test_still_needed_keeps_exactly_that_many(seeds):
    pool = NoveltyPool([t.instruction for t in seeds])
    text = (" Write a limerick about a lazy cat who loves naps.\n10. Find the capital city of the given country."
            "\n11. Convert the recipe quantities from cups into grams for baking.")
    candidates, kept = decide_candidates(text, "stop", pool, still_needed=1, record_similar=0)
    assert [c["decision"] for c in candidates] == ["kept", "over_target", "over_target"]
    assert len(kept) == 1 and "most_similar" not in kept[0]


_WORDS = [f"{a}{b}" for a in ("bra", "cle", "dro", "fi", "glo", "ho", "ja", "ku", "lu", "mo") for b in "aeiouyxzqv"]


def _numbered(body: dict) -> str:
    """A fake LM that continues the list with three instructions of words drawn from the request's seed."""
    rng = random.Random(body.get("seed", 0))
    lines = ["Describe " + " ".join(rng.sample(_WORDS, 7)) + "." for _ in range(3)]
    return " " + lines[0] + "\n10. " + lines[1] + "\n11. " + lines[2]


def test_step1_on_a_fake_server_keeps_exactly_n_and_sends_table4(seeds, tmp_path):
    """The schedule of runs started before the lag window existed (batches of W)."""
    with FakeOpenAI(text=_numbered) as fake:
        client = LMClient("m", base_url=fake.base_url, api_key="k")
        run = RunDir(tmp_path / "run")
        res = generate_instructions(client, seeds, run, num_instructions=4, request_batch_size=2, progress=False,
                                    scheduler="batch")
        body = fake.requests[0]
    # Table 4's decoding parameters reach the server, and each request has its own seed
    for key in ("max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty"):
        assert body[key] == getattr(TABLE4["instructions"], key)
    assert body["stop"] == list(TABLE4["instructions"].stop)
    assert len({r["seed"] for r in fake.requests}) == len(fake.requests) == 2
    assert res.counts == {"requests": 2, "candidates": 6, "kept": 4}
    log = run.read("requests")
    assert [c["decision"] for r in log for c in r["candidates"]] == ["kept"] * 4 + ["over_target"] * 2
    assert len(run.read("instructions")) == 4
    assert res.rejections == {"over_target": 2}
    usage = run.read("usage")  # one line per answer, logged where it is received
    assert [(u["step"], u["requests"], u["request_idx"]) for u in usage] in (
        [("instructions", 1, 0), ("instructions", 1, 1)], [("instructions", 1, 1), ("instructions", 1, 0)])


def test_step1_lag_schedule_ends_the_log_at_the_request_that_reaches_the_target(seeds, tmp_path):
    """Lag W = 2: request r sees the decisions of requests <= r - 2. Request 1 reaches the target (3 + 3
    novel candidates for N = 4); request 2 was already sent (it needed request 0 alone): it is answered
    and counted in the usage log, but the request log ends at request 1."""
    import time

    def latency(body: dict) -> float:
        """Request 1 is answered only once request 2 arrived (sent when request 0 was decided)."""
        deadline = time.monotonic() + HANG_GUARD_S
        while body["seed"] == request_seed(42, 1) and len(fake.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        return 0.0

    with FakeOpenAI(text=_numbered, latency=latency) as fake:
        client = LMClient("m", base_url=fake.base_url, api_key="k")
        run = RunDir(tmp_path / "run")
        res = generate_instructions(client, seeds, run, num_instructions=4, request_batch_size=2, progress=False)
        assert len(fake.requests) == 3
        prompt_2 = next(r["prompt"] for r in fake.requests if r["seed"] == request_seed(42, 2))
    log = run.read("requests")
    assert [r["pool_upto_request"] for r in log] == [-2, -1]
    assert res.counts == {"requests": 2, "candidates": 6, "kept": 4}
    assert [c["decision"] for r in log for c in r["candidates"]] == ["kept"] * 4 + ["over_target"] * 2
    assert sum(u["requests"] for u in run.read("usage")) == 3
    # request 2's prompt held machine instructions kept by request 0, none of request 1's
    kept_by = {k["instruction"]: k["request_idx"] for k in run.read("instructions")}
    assert any(i in prompt_2 for i, r in kept_by.items() if r == 0)
    assert not any(i in prompt_2 for i, r in kept_by.items() if r == 1)


def test_step1_released_behaviour_keeps_the_whole_last_batch(seeds, tmp_path):
    with FakeOpenAI(text=_numbered) as fake:
        client = LMClient("m", base_url=fake.base_url, api_key="k")
        res = generate_instructions(client, seeds, RunDir(tmp_path / "run"), num_instructions=4, request_batch_size=2,
                                    exact_num_instructions=False, progress=False, scheduler="batch")
        lag = generate_instructions(client, seeds, RunDir(tmp_path / "lag"), num_instructions=4, request_batch_size=2,
                                    exact_num_instructions=False, progress=False)
    assert res.counts["kept"] == 6
    assert lag.counts["kept"] == 6  # every novel candidate of the request that reached the target


def test_step2_reads_answers_with_the_one_reader(tmp_path):
    answers = iter([" Yes.", " no", "YES", " Maybe", " No, it is not."])
    with FakeOpenAI(text=lambda body: next(answers)) as fake:
        client = LMClient("m", base_url=fake.base_url, api_key="k", max_concurrency=1)
        run = RunDir(tmp_path / "run")
        res = classify_instructions(client, [f"Task {k} to classify here." for k in range(5)], run, batch_size=1, progress=False)
    recs = run.read("classification")
    assert [r["is_classification"] for r in recs] == [True, False, True, False, False]
    assert [r["parsed"] for r in recs] == [True, True, True, False, True]
    assert res.counts == {"classified": 5, "classification": 2, "generation": 3}
    assert res.rejections == {"unparseable_answer": 1}
    assert json.loads(run.file("usage").read_text().splitlines()[0])["requests"] == 1
