"""Size-matched comparison, diversity measures, near-duplicates and artifacts, on real data."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("spacy")
pytest.importorskip("datasketch")
pytest.importorskip("lexicalrichness")

from selfinstruct_utils.analysis import load_dataset  # noqa: E402
from selfinstruct_utils.analysis.artifacts import KINDS, artifact_examples, artifact_rates, flag_artifacts  # noqa: E402
from selfinstruct_utils.analysis.compare import (  # noqa: E402
    COLUMNS,
    PAPER,
    compare,
    comparison_figure,
    comparison_table,
    paper_values,
)
from selfinstruct_utils.analysis.diversity import MEASURES, profile_dataset  # noqa: E402
from selfinstruct_utils.analysis.lexical import compression_ratio, distinct_n, mtld  # noqa: E402
from selfinstruct_utils.analysis.neardup import jaccard, near_duplicates, shingles  # noqa: E402
from selfinstruct_utils.analysis.self_overlap import max_rouge_to_rest  # noqa: E402
from selfinstruct_utils.records import load_seed_tasks  # noqa: E402

CODE_ALPACA = "generated/sahil280114__codealpaca/code_alpaca_2k.json"
GPTEACHER = "generated/teknium1__GPTeacher/roleplay-simple-deduped-roleplay-instruct.json"


@pytest.fixture(scope="module")
def seeds(data):
    return [t.instruction for t in load_seed_tasks(data / "self_instruct" / "seed_tasks.jsonl")]


@pytest.fixture(scope="module")
def code_alpaca(data, seeds):
    """Code Alpaca 2K profiled once (spaCy parse and ROUGE-L to the 175 seeds of every instruction)."""
    from selfinstruct_utils.analysis.verb_noun import load_spacy

    df = load_dataset(data / CODE_ALPACA, name="Code Alpaca 2K")
    return profile_dataset(df, "Code Alpaca 2K", seed_instructions=seeds, nlp=load_spacy())


# --- exact values on inputs checked by hand -------------------------------------------------------------


def test_distinct_n_by_hand():
    texts = ["a b a", "a b"]
    assert distinct_n(texts, 1) == 2 / 5  # a b a a b: 5 unigrams, {a, b}
    assert distinct_n(texts, 2) == 2 / 3  # (a b) (b a) | (a b): n-grams never cross two texts
    assert distinct_n(texts, 3) == 1.0  # (a b a) only
    assert np.isnan(distinct_n(["a b"], 3))  # no text has 3 tokens
    assert distinct_n(["Write, WRITE!", "write"], 1) == 1 / 3  # the ROUGE tokens: lower case, punctuation gone
    with pytest.raises(ValueError):
        distinct_n(texts, 0)


def test_compression_ratio_by_hand():
    texts = ["ab", "ab"]
    raw = b"ab\nab"  # 5 bytes: joined by a newline, UTF-8
    assert compression_ratio(texts) == 5 / len(zlib.compress(raw, 9))
    one = "Write a poem about the sea."
    repetitive = compression_ratio([one] * 200)
    varied = compression_ratio([f"{one} {k} {k * 7919 % 104729}" for k in range(200)])
    assert repetitive > 20 > varied > 1  # 200 copies compress to almost one
    with pytest.raises(ValueError):
        compression_ratio([])


def test_mtld_is_lexicalrichness_on_the_rouge_tokens():
    from lexicalrichness import LexicalRichness

    texts = ["The cat sat on the mat.", "A dog ran in the park, and the dog barked!", "Cats and dogs."] * 5
    tokens = " ".join(texts).lower().replace(".", "").replace(",", "").replace("!", "").split()
    assert mtld(texts) == pytest.approx(LexicalRichness(tokens, preprocessor=None, tokenizer=None).mtld(threshold=0.72))
    assert np.isnan(mtld(["!!!", "..."]))


def test_shingles_and_jaccard_by_hand():
    assert shingles("Abc  DEF", 5) == {"abc d", "bc de", "c def"}
    assert shingles("ab", 5) == {"ab"}
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 0.5


def test_max_rouge_to_rest_leaves_the_text_itself_out():
    from selfinstruct_utils.rouge import rougeL

    texts = ["write a poem about the sea", "write a poem about the moon", "sort a list of numbers", "sort a list of numbers", "!!"]
    got = max_rouge_to_rest(texts)
    assert got[0] == rougeL(texts[0], texts[1]) == got[1]  # its best *other* text, not itself (1.0)
    assert got[2] == got[3] == 1.0  # an identical copy
    assert got[4] == 0.0  # no ROUGE token
    assert max_rouge_to_rest(texts, queries=2, seed=3).shape == (2,)


# --- planted artifacts and near-duplicates in real data -------------------------------------------------


def test_planted_near_duplicates_are_found(data):
    df = load_dataset(data / CODE_ALPACA)
    texts = df["instruction"].drop_duplicates().tolist()[:400]
    before = near_duplicates(texts)
    planted = {
        10: texts[10] + " Please.",  # a word added
        20: texts[20].upper(),  # case
        30: texts[30].replace(" ", "  ").rstrip(".") + "!",  # spacing and final punctuation
        40: texts[40].replace("a ", "the ", 1) if "a " in texts[40] else texts[40] + " now",
        50: texts[50],  # an exact copy
    }
    found = near_duplicates(texts + list(planted.values()))
    cluster_of = {i: k for k, c in enumerate(found.clusters) for i in c}
    for j, (original, _) in enumerate(planted.items()):
        copy = len(texts) + j
        assert copy in cluster_of and cluster_of[copy] == cluster_of.get(original), (original, texts[original])
    assert found.redundant == before.redundant + len(planted)
    for cluster in found.clusters:  # every pair joined was checked exactly
        members = [shingles(found.texts[i]) for i in cluster]
        assert all(max(jaccard(a, b) for b in members if b is not a) >= 0.7 for a in members)
    ex = found.examples(max_clusters=3, per_cluster=2)
    assert list(ex.columns) == ["cluster", "size", "text"] and ex["cluster"].max() <= 3


def test_planted_refusals_are_counted(data):
    df = load_dataset(data / GPTEACHER).head(600).copy()
    base = artifact_rates(df).set_index("kind")["count"]
    refusals = ["I'm sorry, but I cannot help with that request.", "I am unable to provide that information.",
                "I apologize, but this is not something I can do.", "Sorry, I can't assist with that."]
    disclaimers = ["As an AI language model, I don't have personal opinions, but here is a summary."]
    rows = list(range(100, 100 + len(refusals) + len(disclaimers)))
    df.loc[rows, "output"] = refusals + disclaimers
    df.loc[[500, 501], "input"] = df.loc[[500, 501], "output"]  # the pipeline's artifact: input == output
    after = artifact_rates(df).set_index("kind")
    assert after.loc["refusal", "count"] == base["refusal"] + len(refusals)
    assert after.loc["ai_disclaimer", "count"] == base["ai_disclaimer"] + len(disclaimers)
    assert after.loc["input_equals_output", "count"] == base["input_equals_output"] + 2
    assert after.loc["refusal", "of"] == 600 and after.loc["refusal", "rate"] == after.loc["refusal", "count"] / 600
    assert list(after.index) == list(KINDS)
    ex = artifact_examples(df, per_kind=10)
    assert set(refusals) <= set(ex[ex.kind == "refusal"]["output"])
    # "I'm sorry to hear that" is sympathy, not a refusal
    assert not flag_artifacts(pd.DataFrame({"instruction": ["x"], "input": [""], "output": ["I'm sorry to hear that."]}))["refusal"].any()


def test_real_artifacts_counted_exactly(data):
    """Code Alpaca 2K holds 5 inputs that start with the prompt's "Input:" marker, 1 input equal to its
    output and 2 empty outputs; GPTeacher's role-play says "I can't help but feel" and plays AIs
    ("As an AI therapist, I am here"), which are neither refusals nor disclaimers."""
    code = artifact_rates(load_dataset(data / CODE_ALPACA)).set_index("kind")["count"]
    assert code.to_dict() == {"refusal": 0, "ai_disclaimer": 0, "meta_talk": 0, "copied_prompt_field": 5,
                              "input_equals_output": 1, "empty_output": 2}
    role = artifact_rates(load_dataset(data / GPTEACHER)).set_index("kind")["count"]
    assert role["refusal"] == 0 and role["ai_disclaimer"] == 0
    assert role["meta_talk"] == 2  # "Of course, I would be glad to ...", "Certainly, here are ..."


# --- the size-matched comparison -------------------------------------------------------------------------


@pytest.mark.slow
def test_compare_table_shape_defaults_and_errors(code_alpaca):
    first = code_alpaca.subset(range(600), "first 600")
    half = first.subset(range(0, 600, 2), "every second")
    res = compare({"all": first, "every second": half}, repeats=4, progress=False)
    assert list(res.columns) == COLUMNS
    assert len(res) == 2 * len(MEASURES) and set(res["n"]) == {len(half)} and set(res["repeats"]) <= {4}
    whole = res[res.dataset == "every second"]  # the smallest set is used whole in every repeat: zero width
    assert ((whole["lo"] == whole["hi"]) | whole["lo"].isna()).all()
    assert whole.attrs["profiles"] is res.attrs["profiles"]  # shared by derived frames, never deep-copied
    assert res.attrs["notes"] and "Embedding-based measures are left out" in res.attrs["notes"][0]
    with pytest.raises(ValueError, match="every second"):
        compare({"all": first, "every second": half}, n=len(half) + 1, progress=False)
    table = comparison_table(res)
    assert PAPER in table.columns and table.loc["instruction length (words)", PAPER] == "15.9 (n=52,445)"
    assert table.loc["distinct-1", PAPER] == ""
    fig = comparison_figure(res)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == len(MEASURES)
    pv = paper_values()
    assert pv.set_index("measure").loc["verb-noun share", "mean"] == 26_559 / 52_445


@pytest.mark.slow
def test_size_matched_intervals_overlap_for_a_set_and_its_double(code_alpaca):
    """The property a whole-set score lacks: a random half of Code Alpaca and the whole of it (the same
    data, twice the size) give overlapping intervals for every measure once both are subsampled to the
    same n. (Doubling by resampling *with replacement* would plant exact copies, which the duplication
    measures rightly count; the whole set is the half's honest double.) The same measures at unequal
    sizes do not overlap: the test can fail."""
    rng = np.random.default_rng(7)
    half = code_alpaca.subset(np.sort(rng.permutation(len(code_alpaca))[: len(code_alpaca) // 2]), "half")
    res = compare({"half": half, "double": code_alpaca}, n=300, repeats=10, progress=False)
    wide = res.pivot(index="measure", columns="dataset", values=["lo", "hi"])
    defined = wide.dropna()
    assert len(defined) >= len(MEASURES) - 3  # only artifact rates that are 0/0 can be undefined
    overlap = (defined["lo"]["half"] <= defined["hi"]["double"]) & (defined["lo"]["double"] <= defined["hi"]["half"])
    assert overlap.all(), defined[~overlap]
    # size dependence, shown: the half at n=300 against the double at n=900 do not overlap
    dependent = [m for m in MEASURES if m.name in ("distinct-2", "distinct verb-noun pairs", "max ROUGE-L to rest")]
    small = compare({"half": half}, n=300, repeats=10, measures=dependent, progress=False).set_index("measure")
    big = compare({"double": code_alpaca}, n=900, repeats=10, measures=dependent, progress=False).set_index("measure")
    for m in dependent:
        assert small.loc[m.name, "hi"] < big.loc[m.name, "lo"] or big.loc[m.name, "hi"] < small.loc[m.name, "lo"], m.name


@pytest.mark.slow
def test_compare_loads_paths_and_is_deterministic(data, seeds):
    paths = {"GPT-3 run": data / "generated/maulikmadhavi__self-instruct/gpt3_generations2",
             "Alpaca regeneration": data / "generated/minpeter__stanford_alpaca_regen/regen.json"}
    a = compare(paths, repeats=3, seed_tasks=seeds, progress=False)
    b = compare(a.attrs["profiles"], repeats=3, seed_tasks=seeds, progress=False)
    pd.testing.assert_frame_equal(a, b)
    assert set(a["n"]) == {67}  # the GPT-3 run's 67 distinct instructions


# --- the fast paths give the numbers of the plain computations (pinned before the speed work) -------------


def _plain_spacy_pairs(texts, nlp):
    """The rule on Docs of the whole pipeline, one process: how the kit parsed before its fast path."""
    from selfinstruct_utils.analysis.verb_noun import _first_sentence_root, root_verb_and_object

    out = []
    for doc in nlp.pipe(texts, batch_size=512):
        root = _first_sentence_root(doc)
        out.append(root_verb_and_object(root) if root is not None else (None, None))
    return out


def test_verb_noun_fast_path_equals_the_whole_pipeline(data, seeds):
    """The attribute ruler and lemmatizer applied to a window around the tokens the rule reads give the
    POS, dependency labels and lemmas of the whole pipeline: the same (verb, noun) pairs on real
    instructions and on texts that exercise the ruler's two-token and whitespace rules; forked workers
    give the same pairs in the same order."""
    from selfinstruct_utils.analysis.verb_noun import _local_suffix, load_spacy, verb_noun_pairs

    nlp = load_spacy()
    names, width = _local_suffix(nlp)
    assert names == ["attribute_ruler", "lemmatizer"] and width == 1  # the fast path is the one tested
    user = [r["instruction"] for r in pd.read_json(data / "self_instruct/human_eval/user_oriented_instructions.jsonl", lines=True).to_dict("records")]
    texts = seeds + user + load_dataset(data / GPTEACHER)["instruction"].drop_duplicates().tolist()[:300]
    texts += ["Let's write a poem about the sea.", "Write  a poem\n\nabout the sea.", "I ain't gonna write it, so y'all write the code.",
              "Do the dishes and have a rest.", "There is a bug: fix it.", "Give me a list of it.", "\n Write a haiku.", "", "!!!"]
    got = verb_noun_pairs(texts, nlp, progress=False)
    pairs = [tuple(None if v is None or v != v else v for v in p) for p in zip(got["verb"], got["noun"], strict=True)]
    assert pairs == _plain_spacy_pairs(texts, nlp)
    assert sum(v is not None and n is not None for v, n in pairs) > len(texts) // 3  # the rule finds pairs
    forked = verb_noun_pairs(texts, nlp, progress=False, n_process=2, batch_size=64)
    pd.testing.assert_frame_equal(forked, got)


def test_comparison_numbers_pinned(code_alpaca):
    """The whole tidy table of a comparison on real data (Code Alpaca's even and odd rows: one set
    subsampled, one used whole), digest and a few values exactly as the code computed them before it
    reused per-profile work (tokens, MinHash signatures, whole-set ROUGE-L, one shared parse)."""
    import hashlib

    res = compare({"A": code_alpaca.subset(range(0, len(code_alpaca), 2), "even"),
                   "B": code_alpaca.subset(range(1, len(code_alpaca), 2), "odd")}, repeats=3, progress=False)
    got = res.set_index(["dataset", "measure"])["mean"]
    assert got["A", "distinct-2"] == 0.36117917202638594
    assert got["A", "MTLD"] == 48.58102535232549
    assert got["A", "distinct verb-noun pairs"] == 308.3333333333333
    assert got["B", "max ROUGE-L to rest"] == 0.5546166606526794
    assert got["A", "max ROUGE-L to rest"] == 0.5478947077733526
    assert hashlib.sha256(res.to_csv(index=False).encode()).hexdigest() == "11c7be9f4971e35fceb96cc2dc6f5fb42434a789923a07326abc54c18e91d306"


def test_reused_views_equal_fresh_computations(real_instructions, code_alpaca):
    """What a profile keeps (MinHash signatures, tokens, the whole set's ROUGE-L to the rest) gives, for
    any subset, what the functions compute from the texts alone; the signatures are datasketch's."""
    from datasketch import MinHash
    from datasketch.hashfunc import sha1_hash32

    from selfinstruct_utils.analysis.compare import _draw
    from selfinstruct_utils.analysis.diversity import _self_rouge
    from selfinstruct_utils.analysis.lexical import TokenTable
    from selfinstruct_utils.analysis.neardup import NearDuplicateIndex

    texts = real_instructions
    nd = near_duplicates(texts)  # pinned: the clusters of the datasketch-LSH implementation before
    assert (len(nd.clusters), nd.redundant) == (7, 8) and sorted(map(len, nd.clusters)) == [2, 2, 2, 2, 2, 2, 3]
    assert {texts[i] for i in nd.clusters[0]} == {"Answer the following question."}
    index = NearDuplicateIndex(texts)
    sig = index.signatures(range(200))
    ref = MinHash.bulk([[s.encode("utf-8") for s in shingles(t)] for t in texts[:200]], num_perm=128, seed=1, hashfunc=sha1_hash32)
    assert np.array_equal(sig, np.array([m.hashvalues for m in ref]))
    table = TokenTable(texts)
    rng = np.random.default_rng(5)
    for _ in range(3):
        rows = np.sort(rng.permutation(len(texts))[:1500])
        picked = [texts[i] for i in rows]
        assert index.clusters(rows).clusters == near_duplicates(picked).clusters
        assert [table.distinct_n(k, rows) for k in (1, 2, 3)] == [distinct_n(picked, k) for k in (1, 2, 3)]
    whole = _draw(code_alpaca, len(code_alpaca), np.random.default_rng(0), seed=3, max_queries=500)
    direct = max_rouge_to_rest(code_alpaca.instructions["instruction"].tolist(), queries=500, seed=3)
    assert np.array_equal(_self_rouge(whole), direct)
