"""The fast ROUGE-L scorer equals rouge-score (the reference) exactly: every comparison is ``==``.
The novelty filter built on it is tested in test_novelty.py."""

import json
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer
from rouge_score import tokenize as rs_tokenize

from selfinstruct_utils import rouge

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def ref(target: str, prediction: str) -> float:
    return SCORER.score(target, prediction)["rougeL"].fmeasure




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


@settings(max_examples=200, deadline=None)
@given(st.lists(_text, max_size=5), st.lists(_text, max_size=8))
def test_max_equals_the_maximum_of_rouge_score_property(cands, pool):
    """Ties among the best pool texts, empty texts on either side, pools sharing no word."""
    assert rouge.max_rougeL(cands, pool) == [max((ref(c, p) for p in pool), default=0.0) for c in cands]


def test_max_ties_and_empty_texts():
    pool = ["", "a", "a b c d", "b a", "x y"]
    cands = ["", "!!!", "a b", "a", "q"]
    assert rouge.max_rougeL(cands, pool) == [max(ref(c, p) for p in pool) for c in cands] == [0.0, 0.0, 2 / 3, 1.0, 0.0]


def test_the_worker_count_reaches_the_lcs_kernel(monkeypatch):
    """Every many-vs-many kernel call of max, top_k and scores runs on the index's ``workers`` threads
    (a regression passed workers=1 and silently used one core)."""
    seen = []

    def spy(name):
        real = getattr(rouge.process, name)

        def call(*args, **kwargs):
            seen.append((name, kwargs.get("workers")))
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(rouge.process, "cdist", spy("cdist"))
    monkeypatch.setattr(rouge.process, "cpdist", spy("cpdist"))
    pool = ["Write a poem about the sea.", "List three prime numbers.", "Name a famous painter."]
    queries = ["Write a poem about the moon.", "Name a painter."]
    for method in ("max", "top_k", "scores"):
        seen.clear()
        index = rouge.RougeIndex(pool, workers=3)
        getattr(index, method)(queries)
        assert seen and all(w == 3 for _, w in seen), (method, seen)
    seen.clear()
    rouge.max_rougeL(queries, pool, workers=2)
    assert seen and all(w == 2 for _, w in seen), seen


def test_f1_grid_gives_the_float_formulas_values_element_by_element():
    """_f1_grid gathers F1 from a table of (target length, LCS, prediction length): the same floats as
    rouge-score's formula (_f1) for a pool's worth of columns, and through its fallback for long texts."""
    rng = np.random.default_rng(5)
    for k, n, longest in [(8, 20000, 40), (3, 200, 900), (1, 1, 2), (4, 0, 9)]:
        m = rng.integers(1, longest, k)
        lens = rng.integers(0, longest, n)
        lcs = (rng.random((k, n)) * np.minimum(m[:, None], lens[None, :]) + 0.5).astype(np.int32)
        want = rouge._f1(lcs, m[:, None].astype(np.float64), lens[None, :].astype(np.float64))
        got = rouge._f1_grid(lcs, m, lens)
        assert got.shape == want.shape and np.array_equal(got, want), (k, n)


def test_top_k_selection_equals_a_stable_sort_of_the_whole_row():
    """top_k picks its neighbours without sorting the whole row: the same indices as the first k of a stable
    argsort (highest first, the earlier index among equals), on rows full of ties, for every k."""
    rng = np.random.default_rng(0)
    for _ in range(3000):
        row = rng.integers(0, 5, int(rng.integers(0, 30))) / 4.0
        for k in (0, 1, 3, 10, len(row), len(row) + 2):
            assert rouge._top_indices(row, k) == np.argsort(-row, kind="stable")[:k].tolist(), (row, k)
    # Long rows (a large pool) take the sampled path: its floor must never drop one of the k highest,
    # including when they sit between the sampled positions or tie with many others.
    for trial in range(300):
        n = int(rng.integers(640, 5000))
        row = rng.integers(0, 6, n) / 5.0 if trial % 2 else rng.random(n) ** 8
        if trial % 3 == 0:
            row[::16] = 0.0  # the sample holds nothing of the top
        for k in (1, 3, 10):
            assert rouge._top_indices(row, k) == np.argsort(-row, kind="stable")[:k].tolist(), (trial, k)
