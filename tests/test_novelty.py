"""The incremental novelty filter (paper Sec. 2.2) decides exactly as the released code's loop scored
with rouge-score: the same decisions, scores and blockers, whatever its pruning, call sizes and chunks."""

import json
import random
import tracemalloc

import numpy as np
import pytest
from rouge_score import rouge_scorer

from selfinstruct_utils import rouge
from selfinstruct_utils.novelty import NoveltyPool

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def ref(target: str, prediction: str) -> float:
    return SCORER.score(target, prediction)["rougeL"].fmeasure




@pytest.fixture(scope="module")
def seeds(data) -> list[str]:
    return [json.loads(line)["instruction"] for line in open(data / "self_instruct" / "seed_tasks.jsonl")]


def near_duplicates(real: list[str], n: int, seed: int) -> list[str]:
    """Real instructions with words swapped: near-duplicates at every distance."""
    rng = random.Random(seed)
    words = " ".join(real).split()
    out = []
    for _ in range(n):
        base = rng.choice(real).split()
        out.append(" ".join(w if rng.random() < 0.8 else rng.choice(words) for w in base))
    return out


def reference_filter(cands, pool, threshold=0.7, comparison="gt"):
    """The released code's loop with rouge-score: (accepted, score, blocker) per candidate."""
    pool = list(pool)
    out = []
    for c in cands:
        scores = [ref(c, p) for p in pool]
        m = max(scores, default=0.0)
        too = m > threshold if comparison == "gt" else m >= threshold
        out.append((False, m, pool[scores.index(m)]) if too else (True, None, None))
        if not too:
            pool.append(c)
    return out


def _unpruned_filter(cands, pool, threshold=0.7):
    """The same loop scored without any pruning: the full F1 matrix (equal to rouge-score: test_rouge)."""
    texts = list(pool) + list(cands)
    f1 = rouge.RougeIndex(texts).scores(cands)
    members = list(range(len(pool)))
    out = []
    for i in range(len(cands)):
        row = f1[i, members]
        k = int(np.argmax(row))
        if row[k] > threshold:
            out.append((False, float(row[k]), texts[members[k]]))
        else:
            out.append((True, None, None))
            members.append(len(pool) + i)
    return out


def _decided(pool, cands, batch, **kw):
    return [(d.accepted, d.score, d.blocker) for lo in range(0, len(cands), batch)
            for d in pool.add_novel(cands[lo : lo + batch], **kw)]


def test_novelty_pool_matches_reference_loop_on_real_data(real_instructions, seeds):
    rng = random.Random(1)
    cands = rng.sample(real_instructions[427:], 100)
    # add near-duplicates so that both decisions occur many times, some of them close to the threshold
    # (seeds with a fifth of their words swapped score 0.5-0.9: 8 rejections below 0.8, accepted ones above 0.6)
    cands += [c.replace("the", "a", 1) for c in cands[:30]] + cands[30:45] + near_duplicates(seeds, 40, 2)
    rng.shuffle(cands)
    want = reference_filter(cands, seeds)
    pool = NoveltyPool(seeds)
    got = _decided(pool, cands, 7)  # batches: earlier accepted candidates of a batch count
    assert got == want  # decisions, exact scores and blockers (the earliest among equals)
    rejected = sum(not w[0] for w in want)
    assert 50 < rejected < len(cands) - 50
    assert len(pool) == len(seeds) + len(cands) - rejected
    assert pool.texts == seeds + [c for c, w in zip(cands, want, strict=True) if w[0]]


def test_rejections_report_the_blocking_score():
    pool = NoveltyPool(["Write a poem about the sea and the moon."])
    d, = pool.add_novel(["Write a poem about the sea and the sun."])
    assert not d.accepted and d.blocker == "Write a poem about the sea and the moon."
    assert d.score == ref("Write a poem about the sea and the sun.", d.blocker)
    assert pool.add_novel(["List three prime numbers greater than one hundred."])[0].accepted


def test_the_earlier_pool_text_wins_a_tie():
    """Issue 22.5: ``cand`` scores 2*15/35 with both ``first`` (in the pool) and ``second`` (accepted
    earlier in the same call, or later in the pool); the blocker is the one that joined the pool first."""
    w = [f"w{i}" for i in range(20)]
    first, second, cand = " ".join(w[:15]), " ".join(w[5:]), " ".join(w)  # first vs second: 2*10/30, novel
    assert [(d.accepted, d.blocker) for d in NoveltyPool([first]).add_novel([second, cand])] == [(True, None), (False, first)]
    assert NoveltyPool([second, first]).add_novel([cand])[0].blocker == second


def test_threshold_comparison_gt_vs_ge():
    a, b = "one two three four five six seven eight nine ten", "one two three four five six seven x y z"
    exact = ref(a, b)  # F1 = 2*7/20, whatever float rouge-score makes of it
    assert NoveltyPool([a]).add_novel([b], threshold=exact, comparison="gt")[0].accepted
    assert not NoveltyPool([a]).add_novel([b], threshold=exact, comparison="ge")[0].accepted
    with pytest.raises(ValueError, match="comparison"):
        NoveltyPool([]).add_novel(["x"], comparison="lt")
    with pytest.raises(ValueError, match="threshold"):
        NoveltyPool([]).add_novel(["x"], threshold=1.5)
    with pytest.raises(ValueError, match="chunk"):
        NoveltyPool([], chunk=0)


def test_within_batch_duplicates_and_max_accept():
    pool = NoveltyPool([])
    out = pool.add_novel(["Name a famous painter.", "Name a famous painter.", "Describe how rain forms in clouds."])
    assert [d.accepted for d in out] == [True, False, True]
    assert out[1].blocker == "Name a famous painter." and out[1].score == 1.0
    out = pool.add_novel(["List three rivers of Asia.", "Name two mountains in Chile.", "Sort the words."], max_accept=1)
    assert [(d.accepted, d.over_limit) for d in out] == [(True, False), (False, True), (False, True)]
    assert len(pool) == 3


def test_filter_prunes_with_the_shared_token_bound_and_stays_exact(real_instructions):
    """Thousands of candidates against a pool that grows past the presence matrix's tail size (so the
    matrix is rebuilt), in batches of 64 as step 1 runs: the same decisions, scores and blockers as
    scoring every pair."""
    rng = random.Random(5)
    pool_texts = rng.sample(real_instructions, 300)
    cands = near_duplicates(real_instructions, 2600, seed=6)
    pool = NoveltyPool(pool_texts)
    pool._TAIL = 256
    pool.brute_pairs = 0  # every call through the pruning (small calls are otherwise scored pair by pair)
    got = _decided(pool, cands, 64)
    rejected = sum(not g[0] for g in got)
    assert 100 < rejected < len(cands) - 100
    assert got == _unpruned_filter(cands, pool_texts)


def test_one_big_call_decides_as_small_calls_and_in_any_chunk_size(real_instructions, seeds):
    """Issue 18.11: a whole dataset in one call is decided chunk by chunk; the decisions, scores and
    blockers equal those of small calls and of scoring every pair, and max_accept counts across chunks."""
    cands = near_duplicates(real_instructions, 1500, seed=7)
    want = _unpruned_filter(cands, seeds)
    assert 100 < sum(not w[0] for w in want) < len(cands) - 100
    assert _decided(NoveltyPool(seeds), cands, len(cands)) == want  # default chunk
    assert _decided(NoveltyPool(seeds, chunk=37), cands, len(cands)) == want
    assert _decided(NoveltyPool(seeds, chunk=10**6), cands, 5) == want
    limit = sum(w[0] for w in want[:400])
    last = [i for i, w in enumerate(want) if w[0]][limit - 1]  # reached inside the second chunk of 256
    assert 256 <= last < 400
    out = NoveltyPool(seeds).add_novel(cands, max_accept=limit)
    assert [(d.accepted, d.score, d.blocker) for d in out[: last + 1]] == want[: last + 1]
    assert all(d.over_limit and not d.accepted for d in out[last + 1 :])


def test_one_call_memory_is_bounded_by_the_chunk(real_instructions, seeds):
    """Issue 18.11: the memory of one call does not grow with its square. 2,500 candidates in one call:
    the chunked filter stays under 48 MB at its peak (measured 17-20 MB, the codes of all candidates
    included); decided in one piece (as the code before did: ``chunk`` larger than the call), the
    within-call matrices of 6.25M pairs take about 150 MB (the code before: more)."""
    cands = near_duplicates(real_instructions, 2500, seed=8)

    def peak_mb(pool):
        tracemalloc.start()
        try:
            decisions = pool.add_novel(cands)
            return tracemalloc.get_traced_memory()[1] / 2**20, decisions
        finally:
            tracemalloc.stop()

    bounded, decisions = peak_mb(NoveltyPool(seeds))
    assert bounded < 48, bounded
    assert [d.accepted for d in decisions] == [w[0] for w in _decided(NoveltyPool(seeds), cands, 64)]
    unbounded, _ = peak_mb(NoveltyPool(seeds, chunk=len(cands)))
    assert unbounded > 120, unbounded  # the bound above is not vacuous


def test_exact_threshold_pairs_in_both_comparisons():
    """Pairs whose F1 is exactly 2L/(m+n) = 0.7 (7 of 10 words, 7 of 8+12, 14 of 20+20) are where the
    two comparisons differ; pruning must not change either decision."""
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(400)]
    cands = []
    for _ in range(60):
        m, n, lcs = rng.choice([(10, 10, 7), (8, 12, 7), (12, 8, 7), (20, 20, 14), (15, 25, 14)])
        shared = rng.sample(vocab, lcs)
        a = shared + rng.sample(vocab, m - lcs)
        b = shared + [w.upper() + "x" for w in rng.sample(vocab, n - lcs)]
        cands += [" ".join(a), " ".join(b)]
    for comparison in ("gt", "ge"):
        want = reference_filter(cands, [], 0.7, comparison)
        for batch in (1, 5):  # 1: every pair meets in the pool; 5: many meet inside a batch
            got = _decided(NoveltyPool([]), cands, batch, threshold=0.7, comparison=comparison)
            assert got == want, (comparison, batch)
    assert reference_filter(cands, [], 0.7, "gt") != reference_filter(cands, [], 0.7, "ge")


def test_texts_added_to_the_index_directly_take_part_in_the_filter():
    pool = NoveltyPool(["List three rivers of Asia."])
    assert pool.add_novel(["Name a famous painter."])[0].accepted
    pool.index.add(["Describe how rain forms in clouds."])  # the filter's state catches up on its next call
    d, = pool.add_novel(["Describe how rain forms in the clouds."])
    assert not d.accepted and d.blocker == "Describe how rain forms in clouds."


def test_small_calls_scored_pair_by_pair_decide_as_the_pruned_path(real_instructions, seeds):
    """Step 1 decides about 3 candidates a request against a pool of some thousands: such calls score
    every pair on one thread (``brute_pairs``) instead of building the pruning's sparse product. Both
    paths, forced in turn, give the decisions, scores and blockers of scoring every pair, ties included
    (near-duplicates of real instructions, threshold exactly hit in both comparisons)."""
    cands = near_duplicates(real_instructions, 900, seed=11) + seeds[:20] + ["", "!!!"]
    random.Random(12).shuffle(cands)
    want = _unpruned_filter(cands, seeds)
    assert 50 < sum(not w[0] for w in want) < len(cands) - 100
    for brute_pairs in (0, 10**12):
        pool = NoveltyPool(seeds)
        pool.brute_pairs = brute_pairs
        assert _decided(pool, cands, 3) == want, brute_pairs
    for comparison in ("gt", "ge"):
        got = []
        for brute_pairs in (0, 10**12):
            pool = NoveltyPool(["a b c d e", "a b c"])
            pool.brute_pairs = brute_pairs
            got.append(_decided(pool, ["a b c d", "a b c x y", "q r s"], 1, threshold=6 / 7, comparison=comparison))
        assert got[0] == got[1], comparison


def test_neighbours_of_accepted_candidates_reuse_the_filters_scores_exactly(real_instructions, seeds):
    """Step 1 asks each accepted candidate's 10 nearest pool texts (pool as it was before it joined) right
    after the filter scored it against the whole pool: top_k reuses those rows (RougeIndex.keep_scores),
    completed with the candidates accepted before it in the same call. Neighbours, their order among ties,
    and the mean equal a fresh index's, float for float."""
    cands = near_duplicates(real_instructions, 240, seed=13)
    pool = NoveltyPool(seeds)
    reused = 0
    for lo in range(0, len(cands), 4):
        part = cands[lo : lo + 4]
        n_before = len(pool)
        kept = [c for c, d in zip(part, pool.add_novel(part), strict=True) if d.accepted]
        for j, inst in enumerate(kept):
            reused += pool.index._kept_row(pool.index.encode([inst])[0], n_before + j) is not None
            got = pool.index.top_k([inst], 10, upto=n_before + j)
            assert got == rouge.RougeIndex(pool.texts[: n_before + j]).top_k([inst], 10), (lo, j)
    assert reused > 150
