"""The fast ROUGE-L engine equals rouge-score (the reference) exactly."""

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import LCSseq
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


def test_real_data_size(real_instructions):
    assert len(real_instructions) == 175 + 252 + 54 + 67 + 73 + 2017 + 1923


def test_tokenizer_matches_rouge_score(real_instructions):
    for text in real_instructions:
        assert rouge.tokenize(text) == rs_tokenize.tokenize(text, None)


def test_pairwise_equals_rouge_score_on_real_pairs(real_instructions):
    rng = random.Random(0)
    a = rng.sample(real_instructions, 150)
    b = rng.sample(real_instructions, 150)
    got = rouge.pairwise(a, b)
    assert got.shape == (150, 150) and got.dtype == np.float64
    want = np.array([[ref(x, y) for y in b] for x in a])
    assert np.max(np.abs(got - want)) <= 1e-12
    # near-duplicates are where the filter decides: check pairs of each text with a perturbed copy
    for text in a[:100]:
        words = text.split()
        if len(words) > 3:
            words[rng.randrange(len(words))] = "zzz"
        other = " ".join(words)
        assert abs(rouge.rougeL(text, other) - ref(text, other)) <= 1e-12


def test_max_and_top_k_on_real_data(real_instructions, data):
    seeds = [json.loads(line)["instruction"] for line in open(data / "self_instruct" / "seed_tasks.jsonl")]
    cands = real_instructions[-400:]
    got = rouge.max_rougeL(cands, seeds)
    want = [max(ref(c, s) for s in seeds) for c in cands]
    assert np.allclose(got, want, rtol=0, atol=1e-12)
    assert rouge.max_rougeL(["anything"], []) == [0.0]
    (nbrs, mean), = rouge.top_k([cands[0]], seeds, k=10)
    scores = [ref(cands[0], s) for s in seeds]
    assert len(nbrs) == 10 and [s for _, s in nbrs] == sorted(scores, reverse=True)[:10]
    assert abs(mean - float(np.mean(scores))) < 1e-12


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
    assert rouge.pairwise([], ["a"]).shape == (0, 1)
    assert rouge.pairwise(["a b"], ["a b"], dtype=np.float32).dtype == np.float32


_words = st.sampled_from(["the", "a", "cat", "Cat", "sat", "on", "mat", "x1", "", "İ", "Ⅸ", "naïve", "k", "K"])
_text = st.lists(st.one_of(_words, st.text(max_size=6)), max_size=14).map(lambda ws: " ".join(ws))


@settings(max_examples=400, deadline=None)
@given(_text, _text)
def test_equal_to_rouge_score_property(a, b):
    assert rouge.tokenize(a) == rs_tokenize.tokenize(a, None)
    assert abs(rouge.rougeL(a, b) - ref(a, b)) <= 1e-12


def reference_filter(cands, pool, threshold=0.7, comparison="gt"):
    pool = list(pool)
    out = []
    for c in cands:
        m = max((ref(c, p) for p in pool), default=0.0)
        too = m > threshold if comparison == "gt" else m >= threshold
        out.append(not too)
        if not too:
            pool.append(c)
    return out


def test_novelty_pool_matches_reference_loop_on_real_data(real_instructions, data):
    seeds = [json.loads(line)["instruction"] for line in open(data / "self_instruct" / "seed_tasks.jsonl")]
    rng = random.Random(1)
    cands = rng.sample(real_instructions[427:], 250)
    # add near-duplicates so that both decisions occur many times
    cands += [c.replace("the", "a", 1) for c in cands[:60]] + cands[60:90]
    rng.shuffle(cands)
    want = reference_filter(cands, seeds)
    pool = rouge.NoveltyPool(seeds)
    got = []
    for lo in range(0, len(cands), 7):  # batches: earlier accepted candidates of a batch count
        got += [d.accepted for d in pool.add_batch(cands[lo : lo + 7])]
    assert got == want
    assert 50 < want.count(False) < len(cands) - 50
    assert len(pool) == len(seeds) + want.count(True)


def test_rejections_report_the_blocking_score():
    pool = rouge.NoveltyPool(["Write a poem about the sea and the moon."])
    d = pool.add("Write a poem about the sea and the sun.")
    assert not d.accepted and d.blocker == "Write a poem about the sea and the moon."
    assert abs(d.score - ref("Write a poem about the sea and the sun.", d.blocker)) <= 1e-12
    assert pool.add("List three prime numbers greater than one hundred.").accepted


def test_threshold_comparison_gt_vs_ge():
    a, b = "one two three four five six seven eight nine ten", "one two three four five six seven x y z"
    exact = ref(a, b)  # F1 = 2*7/20, whatever float rouge-score makes of it
    assert rouge.NoveltyPool([a], threshold=exact, comparison="gt").add(b).accepted
    assert not rouge.NoveltyPool([a], threshold=exact, comparison="ge").add(b).accepted
    with pytest.raises(ValueError):
        rouge.NoveltyPool([], comparison="lt")


def test_within_batch_duplicates():
    pool = rouge.NoveltyPool([])
    out = pool.add_batch(["Name a famous painter.", "Name a famous painter.", "Describe how rain forms in clouds."])
    assert [d.accepted for d in out] == [True, False, True]


def test_exact_bounds_hold(real_instructions):
    vocab = rouge.Vocabulary()
    rng = random.Random(2)
    for _ in range(300):
        a, b = (vocab.encode(t) for t in rng.sample(real_instructions, 2))
        lcs = LCSseq.similarity(a, b)
        assert lcs <= rouge.multiset_bound(a, b)
        if a and b:
            assert 2 * lcs / (len(a) + len(b)) <= rouge.length_bound(len(a), len(b)) + 1e-15


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
            pool = rouge.NoveltyPool([], threshold=0.7, comparison=comparison)
            got = [d.accepted for lo in range(0, len(cands), batch) for d in pool.add_batch(cands[lo : lo + batch])]
            assert got == want, (comparison, batch)
    assert reference_filter(cands, [], 0.7, "gt") != reference_filter(cands, [], 0.7, "ge")
