"""Step 1's decisions made many requests at a time (Decisions.decide_many): the candidates of several
requests are scored against the pool together (RougeIndex.prescore), and the result must be what deciding
one request after another with decide_candidates gives, record for record and float for float."""

import random

import pytest
from test_novelty import near_duplicates

from selfinstruct_utils import rouge
from selfinstruct_utils.deciding import DecisionRules, Decisions, decide_candidates, last_decided
from selfinstruct_utils.novelty import NoveltyPool
from selfinstruct_utils.records import load_seed_tasks


@pytest.fixture(scope="module")
def seeds(data):
    return load_seed_tasks(data / "self_instruct" / "seed_tasks.jsonl")


def _completions(real: list[str], n: int, seed: int) -> list[tuple[str, str]]:
    """n completions of step 1's prompt: 2-5 real instructions or near-duplicates of them each (some
    repeated across requests, some too short or blacklisted), numbered from 9 as the LM continues."""
    rng = random.Random(seed)
    mixed = real[:: max(1, len(real) // 400)] + near_duplicates(real, 300, seed=seed)
    out, lines = [], []
    for r in range(n):
        # every 6th request repeats the previous one's last line: the newest pool text is then the blocker
        lines = ([lines[-1]] if r % 6 == 5 else []) + [rng.choice(mixed) for _ in range(rng.randint(2, 5))]
        if r % 9 == 4:
            lines.append("Draw a map of the city.")  # blacklisted ("draw")
        text = " " + "\n".join(f"{9 + i}. {line}" if i else line for i, line in enumerate(lines))
        out.append((text, "stop" if r % 5 else "length"))
    return out


def _one_by_one(seeds: list[str], answers, rules: DecisionRules):
    """The reference: decide_candidates per request on a NoveltyPool, with the run's stopping rule."""
    pool, n_kept, stop_at, out = NoveltyPool(seeds), 0, 10**9, []
    for rid, (text, reason) in enumerate(answers):
        if rid > stop_at:
            out.append(None)
            continue
        still = max(0, rules.num_instructions - n_kept)
        cand, kept = decide_candidates(text, reason, pool, threshold=rules.threshold, comparison=rules.comparison,
                                       still_needed=still, record_similar=rules.record_similar)
        if n_kept < rules.num_instructions <= n_kept + len(kept):
            stop_at = last_decided(rules.scheduler, rules.W, rid)
        n_kept += len(kept)
        out.append((cand, kept))
    return out


@pytest.mark.parametrize("scheduler", ["lag", "batch"])
def test_decide_many_equals_one_request_at_a_time_on_real_instructions(real_instructions, seeds, scheduler):
    seeds = [t.instruction for t in seeds]
    answers = _completions(real_instructions, 140, seed=3)
    # the target is reached inside a run of answers decided together, so the stop rule acts mid-call
    rules = DecisionRules(num_instructions=230, record_similar=10, scheduler=scheduler, W=8)
    want = _one_by_one(seeds, answers, rules)
    assert sum(w is None for w in want) >= 10  # the stop was reached before the end
    decisions = [c["decision"] for w in want if w for c in w[0]]
    assert decisions.count("kept") == 230 and decisions.count("too_similar") > 40
    assert {"over_target", "blacklisted_keyword"} <= set(decisions)
    items = [(rid, text, reason) for rid, (text, reason) in enumerate(answers)]
    for sizes, group in [((1,), 32), ((7, 1, 50), 5), ((140,), 32), ((3, 64), 1)]:
        d = Decisions(seeds, rules)
        d.prescore_group = group
        got, lo, k = [], 0, 0
        while lo < len(items):
            got += d.decide_many(items[lo : lo + sizes[k % len(sizes)]])
            lo, k = lo + sizes[k % len(sizes)], k + 1
        assert got == want, (sizes, group)
        assert d.pool.index._kept == {}  # the scored rows are dropped after each call
    # the recorded neighbours and mean are the pool's as it was when each instruction joined
    pool_texts = d.pool.texts
    for _, kept in [w for w in want if w][::9]:
        for rec in kept[:1]:
            upto = pool_texts.index(rec["instruction"])
            (neighbours, mean), = rouge.RougeIndex(pool_texts[:upto]).top_k([rec["instruction"]], 10)
            assert rec["most_similar"] == dict(neighbours) and rec["avg_similarity_score"] == mean


def test_decide_many_checks_the_request_order(seeds):
    d = Decisions([t.instruction for t in seeds], DecisionRules(num_instructions=5))
    d.decide_many([(0, " Write a poem about the sea.", "stop")])
    with pytest.raises(ValueError, match="decides request 2 next, not 3"):
        d.decide_many([(1, " Write a poem about rivers.", "stop"), (3, None, "stop")])
    assert d.next_request == 1  # nothing of the refused call was decided


def test_the_worker_runs_this_package_whatever_the_working_directory_holds(seeds, tmp_path, monkeypatch):
    """The worker is ``python -m selfinstruct_utils.deciding``: started from a folder holding another
    ``selfinstruct_utils`` (another checkout of the kit, an older engine), it still runs this one."""
    from selfinstruct_utils.deciding import DecisionWorker

    decoy = tmp_path / "selfinstruct_utils"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("")
    (decoy / "deciding.py").write_text("raise SystemExit(3)\n")
    monkeypatch.chdir(tmp_path)
    with DecisionWorker() as worker:
        worker.wait_ready()
        worker.start([t.instruction for t in seeds], DecisionRules(num_instructions=5))
        worker.send([(0, " Write a poem about the sea in the style of a sailor.", "stop")])
        msg = worker.recv()
    assert msg[0] == "decided" and msg[1] == 0 and msg[3][0]["instruction"].startswith("Write a poem")
    assert worker.process.returncode == 0
