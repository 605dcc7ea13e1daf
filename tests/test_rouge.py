"""The fast ROUGE-L engine equals rouge-score (the reference) exactly: every comparison is ``==``."""

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer
from rouge_score import tokenize as rs_tokenize

from selfinstruct_utils import rouge

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def ref(target: str, prediction: str) -> float:
    return SCORER.score(target, prediction)["rougeL"].fmeasure


@pytest.fixture(scope="module")
def real_instructions(data) -> list[str]:
    """Every real instruction in the shared data: seeds, user-oriented, and the generated runs."""
    texts = []
    for path in [data / "self_instruct" / "seed_tasks.jsonl", data / "self_instruct" / "human_eval" / "user_oriented_instructions.jsonl"]:
        texts += [json.loads(line)["instruction"] for line in open(path, encoding="utf-8")]
    gen = data / "generated"
    for path in (gen / "maulikmadhavi__self-instruct").rglob("machine_generated_instructions.jsonl"):
        texts += [json.loads(line)["instruction"] for line in open(path, encoding="utf-8")]
    for path in gen.rglob("*.json"):
        texts += [r["instruction"] for r in json.load(open(path, encoding="utf-8"))]
    return texts


def test_tokenizer_matches_rouge_score(real_instructions):
    for text in real_instructions:
        assert rouge.tokenize(text) == rs_tokenize.tokenize(text, None)


def test_scores_equal_rouge_score_on_real_pairs(real_instructions):
    assert len(real_instructions) > 4000
    rng = random.Random(0)
    a = rng.sample(real_instructions, 150)
    b = rng.sample(real_instructions, 150)
    got = rouge.RougeIndex(b).scores(a)
    assert got.shape == (150, 150) and got.dtype == np.float64
    assert got.tolist() == [[ref(x, y) for y in b] for x in a]
    # near-duplicates are where the filter decides: pairs of each text with a perturbed copy
    for text in a[:100]:
        words = text.split()
        if len(words) > 3:
            words[rng.randrange(len(words))] = "zzz"
        other = " ".join(words)
        assert rouge.rougeL(text, other) == ref(text, other)
    assert rouge.paired(a, b) == [ref(x, y) for x, y in zip(a, b, strict=True)]


def test_max_on_real_data_and_a_query_sharing_no_word(real_instructions, data):
    seeds = [json.loads(line)["instruction"] for line in open(data / "self_instruct" / "seed_tasks.jsonl")]
    cands = real_instructions[-400:] + ["zzyzx qwv", "", "!!!"]
    got = rouge.max_rougeL(cands, seeds)
    assert got == [max(ref(c, s) for s in seeds) for c in cands]
    assert got[-3:] == [0.0, 0.0, 0.0]
    assert rouge.max_rougeL(["anything"], []) == [0.0]


def _reference_top_k(text, pool, k):
    """Highest F1 first; among equal scores the earlier pool text first."""
    scores = [ref(text, p) for p in pool]
    order = sorted(range(len(pool)), key=lambda j: (-scores[j], j))[:k]
    return [(pool[j], scores[j]) for j in order], float(np.mean(scores))


def test_top_k_neighbours_and_their_tie_order_on_real_data(real_instructions, data, gen2):
    """Real kept instructions against the seeds: the neighbours themselves (not only the scores) and
    the tie order. Ties are frequent: equal-length neighbours sharing the same number of words."""
    seeds = [json.loads(line)["instruction"] for line in open(data / "self_instruct" / "seed_tasks.jsonl")]
    recs = [json.loads(x) for x in open(gen2 / "machine_generated_instructions.jsonl")]
    index = rouge.RougeIndex(seeds)
    ties = 0
    for rec in recs:
        (got, mean), = index.top_k([rec["instruction"]], k=10)
        want, want_mean = _reference_top_k(rec["instruction"], seeds, 10)
        assert got == want and mean == want_mean
        scores = [s for _, s in got]
        ties += len(scores) - len(set(scores))
    assert ties > 20  # the rule is exercised, not vacuous
    # upto: compare with the pool's first texts only
    (got, _), = index.top_k([seeds[5]], k=3, upto=5)
    assert got == _reference_top_k(seeds[5], seeds[:5], 3)[0]
    assert index.top_k(["x"], upto=0) == [([], 0.0)]


def test_released_most_similar_scores_are_reproduced(gen2):
    """The original run recorded each kept instruction's 10 nearest neighbours with rouge-score."""
    rec = json.loads(open(gen2 / "machine_generated_instructions.jsonl").readline())
    for other, score in rec["most_similar"].items():
        assert abs(rouge.rougeL(rec["instruction"], other) - score) <= 1e-12


def test_edge_cases():
    assert rouge.rougeL("", "") == 0.0
    assert rouge.rougeL("", "a b") == 0.0
    assert rouge.rougeL("!!!", "???") == 0.0
    assert rouge.rougeL("Same words", "same WORDS") == 1.0
    # rouge-score drops non-ASCII words entirely: identical Chinese sentences score 0
    assert rouge.rougeL("翻译这个句子", "翻译这个句子") == ref("翻译这个句子", "翻译这个句子") == 0.0
    # the Unicode option keeps them
    assert rouge.rougeL("翻译 这个 句子", "翻译 这个 句子", unicode=True) == 1.0
    assert rouge.tokenize("Größe café", unicode=True) == ["größe", "café"]
    assert rouge.tokenize("Größe café") == ["gr", "e", "caf"]
    assert rouge.RougeIndex(["a"]).scores([]).shape == (0, 1)
    assert rouge.RougeIndex(["a b"]).scores(["a b"], dtype=np.float32).dtype == np.float32


_words = st.sampled_from(["the", "a", "cat", "Cat", "sat", "on", "mat", "x1", "", "İ", "Ⅸ", "naïve", "k", "K"])
_text = st.lists(st.one_of(_words, st.text(max_size=6)), max_size=14).map(lambda ws: " ".join(ws))


@settings(max_examples=400, deadline=None)
@given(_text, _text)
def test_equal_to_rouge_score_property(a, b):
    assert rouge.tokenize(a) == rs_tokenize.tokenize(a, None)
    assert rouge.rougeL(a, b) == ref(a, b)


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


def _decided(pool, cands, batch, **kw):
    return [(d.accepted, d.score, d.blocker) for lo in range(0, len(cands), batch)
            for d in pool.add_novel(cands[lo : lo + batch], **kw)]


def test_novelty_pool_matches_reference_loop_on_real_data(real_instructions, data):
    seeds = [json.loads(line)["instruction"] for line in open(data / "self_instruct" / "seed_tasks.jsonl")]
    rng = random.Random(1)
    cands = rng.sample(real_instructions[427:], 250)
    # add near-duplicates so that both decisions occur many times
    cands += [c.replace("the", "a", 1) for c in cands[:60]] + cands[60:90]
    rng.shuffle(cands)
    want = reference_filter(cands, seeds)
    pool = rouge.RougeIndex(seeds)
    got = _decided(pool, cands, 7)  # batches: earlier accepted candidates of a batch count
    assert got == want  # decisions, exact scores and blockers (the earliest among equals)
    rejected = sum(not w[0] for w in want)
    assert 50 < rejected < len(cands) - 50
    assert len(pool) == len(seeds) + len(cands) - rejected


def test_rejections_report_the_blocking_score():
    pool = rouge.RougeIndex(["Write a poem about the sea and the moon."])
    d, = pool.add_novel(["Write a poem about the sea and the sun."])
    assert not d.accepted and d.blocker == "Write a poem about the sea and the moon."
    assert d.score == ref("Write a poem about the sea and the sun.", d.blocker)
    assert pool.add_novel(["List three prime numbers greater than one hundred."])[0].accepted


def test_threshold_comparison_gt_vs_ge():
    a, b = "one two three four five six seven eight nine ten", "one two three four five six seven x y z"
    exact = ref(a, b)  # F1 = 2*7/20, whatever float rouge-score makes of it
    assert rouge.RougeIndex([a]).add_novel([b], threshold=exact, comparison="gt")[0].accepted
    assert not rouge.RougeIndex([a]).add_novel([b], threshold=exact, comparison="ge")[0].accepted
    with pytest.raises(ValueError):
        rouge.RougeIndex([]).add_novel(["x"], comparison="lt")
    with pytest.raises(ValueError):
        rouge.RougeIndex([]).add_novel(["x"], threshold=1.5)


def test_within_batch_duplicates_and_max_accept():
    pool = rouge.RougeIndex([])
    out = pool.add_novel(["Name a famous painter.", "Name a famous painter.", "Describe how rain forms in clouds."])
    assert [d.accepted for d in out] == [True, False, True]
    assert out[1].blocker == "Name a famous painter." and out[1].score == 1.0
    out = pool.add_novel(["List three rivers of Asia.", "Name two mountains in Chile.", "Sort the words."], max_accept=1)
    assert [(d.accepted, d.over_limit) for d in out] == [(True, False), (False, True), (False, True)]
    assert len(pool) == 3


def _unpruned_filter(cands, pool, threshold=0.7):
    """The same loop scored without any pruning: the full F1 matrix (checked == rouge-score above)."""
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


def test_filter_prunes_with_the_shared_token_bound_and_stays_exact(real_instructions):
    """Thousands of candidates against a pool that grows past the presence matrix's tail size (so the
    matrix is rebuilt), in batches of 64 as step 1 runs: the same decisions, scores and blockers as
    scoring every pair."""
    rng = random.Random(5)
    pool_texts = rng.sample(real_instructions, 300)
    words = " ".join(real_instructions).split()
    cands = []
    for _ in range(2600):  # real instructions with words swapped: near-duplicates at every distance
        base = rng.choice(real_instructions).split()
        cands.append(" ".join(w if rng.random() < 0.8 else rng.choice(words) for w in base))
    index = rouge.RougeIndex(pool_texts)
    index._TAIL = 256
    got = _decided(index, cands, 64)
    rejected = sum(not g[0] for g in got)
    assert 100 < rejected < len(cands) - 100
    assert got == _unpruned_filter(cands, pool_texts)


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
            got = _decided(rouge.RougeIndex([]), cands, batch, threshold=0.7, comparison=comparison)
            assert got == want, (comparison, batch)
    assert reference_filter(cands, [], 0.7, "gt") != reference_filter(cands, [], 0.7, "ge")
