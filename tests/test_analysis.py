"""The paper's analyses on real data, checked against numbers recomputed independently here."""

import json

import numpy as np
import pandas as pd
import pytest
from rouge_score import rouge_scorer

from selfinstruct_utils.analysis import (
    dataset_statistics,
    length_table,
    load_dataset,
    load_superni_test_tasks,
    seed_vs_test_overlap,
    similarity_to_seeds,
)
from selfinstruct_utils.analysis import verb_noun as vn
from selfinstruct_utils.analysis.datasets import decode_prompt_completion
from selfinstruct_utils.records import DataFormatError

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _words(t):
    return len(t.split())


def test_statistics_of_code_alpaca_recomputed_independently(data):
    path = data / "generated" / "sahil280114__codealpaca" / "code_alpaca_2k.json"
    raw = json.load(open(path))
    stats = dataset_statistics(load_dataset(path))
    assert stats["instructions"] == len({r["instruction"] for r in raw})
    assert stats["instances"] == len(raw) == 2017
    assert stats["instances with empty input"] == sum(1 for r in raw if not r["input"].strip())
    non_empty = [r["input"] for r in raw if r["input"].strip()]
    assert stats["avg. non-empty input length (words)"] == pytest.approx(np.mean([_words(x) for x in non_empty]))
    assert stats["avg. output length (words)"] == pytest.approx(np.mean([_words(r["output"]) for r in raw]))
    distinct = list(dict.fromkeys(r["instruction"] for r in raw))
    assert stats["avg. instruction length (words)"] == pytest.approx(np.mean([_words(x) for x in distinct]))
    # not flagged: "n/a", never a made-up 0; counts are ints, not floats
    assert stats["classification instructions"] == "n/a" and stats["non-classification instructions"] == "n/a"
    assert type(stats["instructions"]) is int and type(stats["instances with empty input"]) is int
    from selfinstruct_utils.analysis.stats import PAPER_TABLE1, table1

    shown = table1({"paper": pd.Series(PAPER_TABLE1), "code": stats})
    assert shown.loc["instructions", "paper"] == "52,445" and shown.loc["instances", "code"] == "2,017"
    assert shown.loc["classification instructions", "code"] == "n/a"
    assert shown.loc["avg. instruction length (words)", "paper"] == "15.9"


def test_statistics_of_seed_tasks_and_gpteacher(data):
    seeds = dataset_statistics(load_dataset(data / "self_instruct" / "seed_tasks.jsonl"))
    assert (seeds["instructions"], seeds["classification instructions"], seeds["non-classification instructions"]) == (175, 26, 149)
    raw = [json.loads(x) for x in open(data / "self_instruct" / "seed_tasks.jsonl")]
    assert seeds["instances"] == sum(len(r["instances"]) for r in raw)
    assert seeds["instances with empty input"] == sum(1 for r in raw for i in r["instances"] if not i["input"].strip())
    gpt = load_dataset(data / "generated" / "teknium1__GPTeacher" / "roleplay-simple-deduped-roleplay-instruct.json")
    assert gpt["output"].notna().all()  # "response" is read as the output
    assert len(gpt) == 1923


def test_original_run_files_load(gen2, data):
    parsed = load_dataset(gen2 / "machine_generated_instances.jsonl")
    assert parsed["output"].notna().sum() >= 78  # all parsed instances, before the 5-per-task sample
    final = load_dataset(gen2 / "finetuning_data" / "all_generated_instances.jsonl")
    assert len(final) == 78
    instr = load_dataset(gen2 / "machine_generated_instructions.jsonl")
    assert len(instr) == 67 and instr["output"].isna().all()
    pc = load_dataset(gen2 / "finetuning_data" / "gpt3_finetuning_data_253.jsonl")
    assert len(pc) == 253
    first = pc.iloc[0]
    assert first.instruction == "Tell if the sentence contains toxic language."
    assert first.input == "aw, no wonder she married you. you are a bastard."
    assert first.output == "Yes"
    # the file holds the 78 generated instances and the 175 seed tasks' (--include_seed_tasks); the
    # prompts decode back to those instructions, except where an encoding is ambiguous
    known = set(final.instruction) | {json.loads(x)["instruction"].strip() for x in open(data / "self_instruct" / "seed_tasks.jsonl")}
    assert pc.instruction.isin(known).mean() > 0.9


def test_decode_every_template_round_trips():
    from selfinstruct_utils.finetune import TrainingExample, encode_prompt_completion

    for k in range(7):
        pc = encode_prompt_completion(TrainingExample("Sort the numbers.", "3, 1, 2", "1, 2, 3"), template=k)
        assert decode_prompt_completion(pc["prompt"], pc["completion"]) == ("Sort the numbers.", "3, 1, 2", "1, 2, 3")
    pc = encode_prompt_completion(TrainingExample("Tell a joke.", "", "Knock knock."), template=1)
    assert decode_prompt_completion(pc["prompt"], pc["completion"]) == ("Tell a joke.", "", "Knock knock.")


def test_dataframe_and_bad_inputs(tmp_path):
    df = load_dataset(pd.DataFrame({"instruction": ["Do a."], "response": ["done"]}))
    assert list(df.columns) == ["instruction", "input", "output", "is_classification", "source"]
    assert df.output[0] == "done"
    with pytest.raises(DataFormatError, match="instruction"):
        load_dataset(pd.DataFrame({"text": ["x"]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "ok", "output": "fine"}, {"instruction": 5, "output": "x"}]))
    with pytest.raises(DataFormatError) as err:
        load_dataset(bad)
    assert err.value.line == 2 and err.value.field == "instruction"
    bad2 = tmp_path / "bad.jsonl"
    bad2.write_text('{"instruction": "fine", "output": "a"}\n{"output": "b"}\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: field 'instruction'"):
        load_dataset(bad2)
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "none.json")


def test_length_table_fields(data):
    df = load_dataset(data / "self_instruct" / "seed_tasks.jsonl")
    lt = length_table(df)
    assert set(lt.field) == {"instruction", "non-empty input", "output"}
    assert (lt.field == "instruction").sum() == 175


@pytest.fixture(scope="module")
def nlp():
    return vn.load_spacy()


@pytest.mark.parametrize(
    "instruction, verb, noun",
    [
        ("Write a poem about the sea.", "write", "poem"),
        ("Generate a one-sentence description for each of the following people.", "generate", "description"),
        ("Classify the sentiment of the tweet.", "classify", "sentiment"),
        ("Suggest three names for a bakery.", "suggest", "name"),
        ("Translate the sentence into French.", "translate", "sentence"),
        ("What is the relation between the given pairs?", None, None),
        ("Explain why the sky is blue.", "explain", None),
    ],
)
def test_verb_noun_hand_checked(nlp, instruction, verb, noun):
    row = vn.verb_noun_pairs([instruction], nlp, progress=False).iloc[0]
    assert (row.verb if isinstance(row.verb, str) else None) == verb
    assert (row.noun if isinstance(row.noun, str) else None) == noun


def test_verb_noun_summary_and_top_table(nlp, data):
    texts = [json.loads(x)["instruction"] for x in open(data / "self_instruct" / "seed_tasks.jsonl")]
    pairs = vn.verb_noun_pairs(texts, nlp, progress=False)
    s = vn.summarize(pairs)
    assert s.instructions == 175 and 0 < s.with_verb_noun <= s.with_verb <= 175
    top = vn.top_verb_noun(pairs, n_verbs=20, n_nouns=4)
    assert top.verb.nunique() <= 20 and top.groupby("verb").size().max() <= 4
    # the table's counts are the pair counts recomputed directly
    both = pairs.dropna()
    for _, row in top.iterrows():
        assert row["count"] == ((both.verb == row.verb) & (both.noun == row.noun)).sum()


@pytest.mark.parametrize(
    "tree, expected",
    [
        ("(S (VP (VB Write) (NP (DT a) (NN poem)) (PP (IN about) (NP (DT the) (NN sea)))) (. .))", ("write", "poem")),
        ("(S (VP (VB Give) (NP (PRP me)) (NP (NP (DT a) (NN list)) (PP (IN of) (NP (NNS fruits))))) (. .))", ("give", "list")),
        ("(SBARQ (WHNP (WP What)) (SQ (VBZ is) (NP (DT the) (NN capital))) (. ?))", (None, None)),
        ("(S (VP (VB Explain) (SBAR (WHADVP (WRB why)) (S (NP (DT the) (NN sky)) (VP (VBZ is) (ADJP (JJ blue)))))) (. .))", ("explain", None)),
        ("(S (NP (PRP You)) (VP (MD should) (VP (VB summarize) (NP (DT the) (JJ long) (NNS articles)))) (. .))", ("summarize", "articles")),
        ("(S (VP (VB Name) (NP (NNP Paris))) (. .))", ("name", None)),
    ],
)
def test_constituency_rule_on_bracketed_trees(tree, expected):
    assert vn.constituency_verb_noun(tree) == expected


def test_constituency_uses_given_lemmas():
    lemmas = {0: "summarize", 3: "article"}
    assert vn.constituency_verb_noun("(S (VP (VBZ Summarizes) (NP (DT the) (JJ long) (NNS articles))))",
                                     lambda i, w: lemmas.get(i, w)) == ("summarize", "article")


def test_benepar_without_its_model_fails_clearly():
    pytest.importorskip("benepar")
    with pytest.raises(LookupError, match=r"benepar.download\('benepar_en3'\)"):
        vn.load_benepar()


def test_seed_vs_user_oriented_overlap_reproduces_the_paper(data):
    seeds = [json.loads(x)["instruction"] for x in open(data / "self_instruct" / "seed_tasks.jsonl")]
    user = [json.loads(x)["instruction"] for x in open(data / "self_instruct" / "human_eval" / "user_oriented_instructions.jsonl")]
    ov = seed_vs_test_overlap(seeds, user)
    assert round(ov.rougeL.mean(), 2) == 0.34  # paper Figure 8
    assert (ov.rougeL == 1.0).sum() == 1  # "one seed instruction identical to a test instruction"
    assert ov.loc[ov.rougeL == 1.0, "seed"].item() == "Answer the following question."
    # independent check with rouge-score on every pair
    ref = [max(SCORER.score(s, u)["rougeL"].fmeasure for u in user) for s in seeds]
    assert np.allclose(ov.rougeL, ref, atol=1e-12, rtol=0)


def test_similarity_to_seeds_matches_rouge_score(data, gen2):
    seeds = [json.loads(x)["instruction"] for x in open(data / "self_instruct" / "seed_tasks.jsonl")]
    gen = [json.loads(x)["instruction"] for x in open(gen2 / "machine_generated_instructions.jsonl")]
    sims = similarity_to_seeds(gen, seeds)
    for row in sims.itertuples():
        assert row.rougeL == pytest.approx(max(SCORER.score(row.instruction, s)["rougeL"].fmeasure for s in seeds), abs=1e-12)
        assert row.rougeL == pytest.approx(SCORER.score(row.instruction, row.most_similar_seed)["rougeL"].fmeasure, abs=1e-12)


def test_superni_loader_on_files_in_its_schema(tmp_path):
    (tmp_path / "splits" / "default").mkdir(parents=True)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "splits" / "default" / "test_tasks.txt").write_text("task001_quoref\ntask002_qa\n")
    (tmp_path / "tasks" / "task001_quoref.json").write_text(json.dumps({"Definition": ["Answer the question about the passage."], "Instances": []}))
    (tmp_path / "tasks" / "task002_qa.json").write_text(json.dumps({"Definition": "Write a title for the article."}))
    df = load_superni_test_tasks(tmp_path)
    assert df.to_dict("records") == [
        {"task": "task001_quoref", "instruction": "Answer the question about the passage.", "instances": None},
        {"task": "task002_qa", "instruction": "Write a title for the article.", "instances": None},
    ]
    (tmp_path / "tasks" / "task002_qa.json").write_text(json.dumps({"Positive Examples": []}))
    with pytest.raises(DataFormatError, match="Definition"):
        load_superni_test_tasks(tmp_path)
    with pytest.raises(DataFormatError, match="natural-instructions"):
        load_superni_test_tasks(tmp_path / "nowhere")


@pytest.mark.parametrize("prompt, definition", [
    ("Definition: Sort the list.\n\nNow complete the following example -\nInput: 3 1\nOutput: ", "Sort the list."),
    ("Definition: Two\nlines.\n\nPositive Example 1 -\nInput: a\nOutput: b\n\nNow complete", "Two\nlines."),
    ("Count the words.\nInput: a b\nOutput:", "Count the words."),
    ("Just a task with no marker", "Just a task with no marker"),
])
def test_superni_definition_from_a_prompt(prompt, definition):
    from selfinstruct_utils.analysis.overlap import superni_definition

    assert superni_definition(prompt) == definition


def test_superni_jsonl_without_a_prompt_names_the_line(tmp_path):
    f = tmp_path / "superni_test_set.jsonl"
    f.write_text(json.dumps({"prompt": "Definition: A.\n\nInput: x", "completion": "y"}) + "\n" + json.dumps({"completion": "y"}) + "\n")
    with pytest.raises(DataFormatError, match=r"superni_test_set\.jsonl:2: field 'prompt'"):
        load_superni_test_tasks(f)


def test_bad_records_can_be_skipped_with_a_warning_and_a_count(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"instruction": "Good one.", "output": "a"}\n{"output": "b"}\n{"instruction": 3, "output": "c"}\n'
                    '{"instruction": "Another good one.", "response": "d"}\n')
    with pytest.warns(UserWarning, match=r"skipped 2 record\(s\).*mixed.jsonl:2: field 'instruction': missing"):
        df = load_dataset(path, errors="skip")
    assert df.instruction.tolist() == ["Good one.", "Another good one."]
    with pytest.raises(DataFormatError, match="mixed.jsonl:2"):
        load_dataset(path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "x", "output": "y"}\n{not json\n')
    with pytest.raises(DataFormatError, match="broken.jsonl:2: invalid JSON"):
        load_dataset(broken, errors="skip")


def test_table1_of_the_papers_82k_data_when_it_is_here():
    """Runs only where `selfinstruct download --what paper` has put the real file in the data folder."""
    from selfinstruct_utils.analysis.stats import PAPER_TABLE1
    from selfinstruct_utils.data import find_datasets

    path = find_datasets(roles=("paper",)).get("Self-Instruct 82K (paper)")
    if path is None:
        pytest.skip("the paper's all_instances_82K.jsonl is not in the data folder (`selfinstruct download --what paper`)")
    stats = dataset_statistics(load_dataset(path))
    for key in ("instructions", "instances", "instances with empty input"):
        assert stats[key] == PAPER_TABLE1[key], key
    for key in ("avg. instruction length (words)", "avg. non-empty input length (words)", "avg. output length (words)"):
        assert round(stats[key], 1) == PAPER_TABLE1[key], key
    assert stats["classification instructions"] == "n/a"  # the file does not say which are classification
