"""Steps 2-3 measured against labelled data, and the released prompts fetched on demand (read, never run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from http_mirror import Mirror

from selfinstruct_utils.analysis.datasets import original_step3_records
from selfinstruct_utils.download import DownloadError
from selfinstruct_utils.llm import LMClient
from selfinstruct_utils.pipeline import PipelineConfig, check_resumable
from selfinstruct_utils.prompt_eval import (
    classifier_eval_tasks,
    classifier_metrics,
    evaluate_classifier,
    field_names,
    instance_quality,
    seed_split,
)
from selfinstruct_utils.records import SeedTask, load_seed_tasks
from selfinstruct_utils.released import (
    RELEASED_FILES,
    RELEASED_REPO,
    parse_released_templates,
    released_templates,
)
from selfinstruct_utils.runs import ConfigChangedError, RunDir
from selfinstruct_utils.templates import KIT_TEMPLATES

# Files in the released repository's layout, written for these tests (not the original prompts). The
# classification block holds two real seed instructions, which the evaluation must leave out.
CLF_FILE = '''import os
os.environ["RELEASED_TEMPLATE_WAS_EXECUTED"] = "1"
template_1 = """Is this a classification task?

Task: What is the relation between the given pairs?
Is it classification? No

Task: Tell me if the sentence is grammatical.
Is it classification? Yes

Task:"""
'''
INSTANCE_FILE = '''input_first_template_for_gen = """Make examples.

Task: Shorten the text.
Example 1
Paragraph: A long text.
Output: Short.

Task:"""
output_first_template_for_clf = """Make labelled examples.

Task: Is the review positive?
Class label: Yes
Review: Great food.

Task:"""
'''
BOOT_FILE = '''import os

def encode_prompt(prompt_instructions, classification=False):
    if classification:
        prompt = "List classification tasks:\\n"
    else:
        prompt = "List tasks:\\n"
    return prompt

raise SystemExit("this module must never run")
'''


def _released_files() -> dict[str, bytes]:
    body = {"classification": CLF_FILE, "instances": INSTANCE_FILE, "instructions": BOOT_FILE}
    return {f"/{RELEASED_REPO}/{RELEASED_FILES[k]}": v.encode() for k, v in body.items()}


@pytest.fixture()
def seeds(data):
    return load_seed_tasks(data / "self_instruct" / "seed_tasks.jsonl")


# --- step 2 ---------------------------------------------------------------------------------------------------


def test_classifier_metrics_exact():
    labels = [True, True, True, False, False, False, False, False]
    answers = [True, None, False, True, False, False, None, False]
    m = classifier_metrics(labels, answers)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (1, 2, 1, 4)
    assert m["accuracy"] == 5 / 8 and m["precision"] == 1 / 2 and m["recall"] == 1 / 3
    assert m["f1"] == 2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3) and m["unreadable"] == 2 and m["predicted_yes"] == 2
    assert classifier_metrics([False, False], [False, None])["f1"] == 0.0
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        classifier_metrics([True, False], [True])


def test_seed_split_is_stratified_disjoint_and_seeded(seeds):
    assert sum(t.is_classification for t in seeds) == 26 and len(seeds) == 175
    dev, test = seed_split(seeds)
    assert (len(dev), len(test)) == (87, 88)
    assert (sum(t.is_classification for t in dev), sum(t.is_classification for t in test)) == (13, 13)
    assert not {t.instruction for t in dev} & {t.instruction for t in test}
    assert [t.instruction for t in dev] == [t.instruction for t in seed_split(seeds)[0]]
    assert [t.instruction for t in dev] != [t.instruction for t in seed_split(seeds, seed=1)[0]]


def test_step2_evaluation_on_a_fake_server_counts_exactly(seeds):
    """The fake model says Yes exactly to the instructions holding "whether": the report must agree."""
    def answer(body):
        query = body["prompt"].rsplit("Task:", 1)[1]
        return " Yes" if "whether" in query.lower() else " No"

    with FakeOpenAI(text=answer) as fake:
        client = LMClient("fake", base_url=fake.base_url)
        report = evaluate_classifier(client, seeds, progress=False)
    said = ["whether" in t.instruction.lower() for t in seeds]
    expected = classifier_metrics([t.is_classification for t in seeds], said)
    assert report.metrics == expected and report.metrics["n"] == 175 and not report.left_out
    assert len(fake.requests) == 175
    assert sorted(r["prompt"] for r in fake.requests) == sorted(KIT_TEMPLATES.classification_prompt(t.instruction) for t in seeds)
    assert {(r["max_tokens"], r["temperature"]) for r in fake.requests} == {(3, 0)}
    conf = report.confusion()
    assert conf.loc["classification", "said yes"] == expected["tp"] and conf.to_numpy().sum() == 175
    assert report.row()["templates"] == "kit" and report.model.startswith(f"server:{fake.base_url}#fake#fp:")


def test_the_kit_block_ends_on_the_majority_class():
    examples = KIT_TEMPLATES.classification.examples
    labels = [e.rsplit("? ", 1)[1] for e in examples]
    assert labels == ["Yes"] * 8 + ["No"] * 10


@pytest.mark.lm
def test_step2_evaluation_with_the_embedded_model_is_consistent(embedded_lm, seeds):
    dev, _ = seed_split(seeds)
    sample = [t for t in dev if t.is_classification][:4] + [t for t in dev if not t.is_classification][:8]
    report = evaluate_classifier(embedded_lm.client(), sample, progress=False)
    assert len(report.answers) == 12 and report.metrics["n"] == 12
    assert report.metrics == classifier_metrics(report.answers["label"].tolist(), report.answers["predicted"].tolist())
    assert report.model.startswith("gguf-sha256:")


# --- step 3 ---------------------------------------------------------------------------------------------------


def test_field_names_are_read_at_line_starts():
    assert field_names("Sentence: a\nHeadline: b\nInput: c\nClass label: x") == {"sentence", "headline"}
    assert field_names("no field here: inside a line") == set()


def test_a_field_name_from_the_examples_is_a_leak_only_when_the_task_does_not_name_it():
    leak = {"instruction": "Is the joke funny?", "is_classification": True,
            "raw_instances": "Class label: Yes\nHeadline: Two cows walk into a bar.\nClass label: No\nJoke: A cat sat.",
            "finish_reason": "stop"}
    named = {**leak, "instruction": "Is the headline satire?"}
    q = instance_quality([leak, named]).set_index("template")
    row = q.loc["output-first"]
    assert (row["tasks"], row["instances"], row["field_leak"]) == (2, 4, 1)  # only "Headline:" under the joke task
    assert row["label_not_named"] == 0  # yes/no answer a yes/no question
    gen = {"instruction": "Write a title.", "is_classification": False,
           "raw_instances": "Example 1\nSentence: The storm.\nOutput: The storm.", "finish_reason": "stop"}
    q = instance_quality([gen]).set_index("template")
    assert q.loc["input-first", "field_leak"] == 1 and q.loc["input-first", "input_equals_output"] == 0


def test_instance_checks_on_the_original_gpt3_run(gen2):
    q = instance_quality(original_step3_records(gen2)).set_index("template")
    assert q.loc["input-first", ["tasks", "instances", "input_equals_output", "empty_output"]].tolist() == [59, 70, 2, 1]
    assert q.loc["output-first", ["tasks", "instances", "label_not_named"]].tolist() == [8, 12, 3]
    assert q.loc["output-first", "label_not_named_share"] == 3 / 12


# --- the released prompts, on demand ---------------------------------------------------------------------------


def test_released_templates_are_fetched_once_parsed_without_running_them(tmp_path, monkeypatch):
    monkeypatch.delenv("RELEASED_TEMPLATE_WAS_EXECUTED", raising=False)
    cache = tmp_path / "released"
    with Mirror(_released_files()) as mirror:
        t = released_templates(cache, mirror=mirror.url)
    import os

    assert "RELEASED_TEMPLATE_WAS_EXECUTED" not in os.environ
    assert t.name == "released" and sorted(p.name for p in cache.rglob("*.py")) == [
        "bootstrap_instructions.py", "clf_task_template.py", "instance_gen_template.py"]
    # rendered as the released code composes them: block + " " + instruction + "\n" (+ the question)
    assert t.classification_prompt(" Sort the list. ").endswith("Is it classification? Yes\n\nTask: Sort the list.\nIs it classification?")
    assert t.instance_prompt("Sort the list.", True).endswith("Review: Great food.\n\nTask: Sort the list.\n")
    assert t.instance_prompt("Sort the list.", False).startswith("Make examples.\n\nTask: Shorten the text.")
    assert t.instruction_prompt(["a b", "c d:"]) == "List tasks:\n1. a b\n2. c d\n3."
    assert t.instruction_prompt(["x"], classification=True).startswith("List classification tasks:\n1. x")
    assert t.fingerprint()["classification_identification"] != KIT_TEMPLATES.fingerprint()["classification_identification"]
    # cached: no server needed the second time
    assert released_templates(cache, mirror="http://127.0.0.1:9").fingerprint() == t.fingerprint()


def test_released_templates_offline_fail_with_the_url(tmp_path):
    with pytest.raises(DownloadError, match=r"--templates released needs.*http://127\.0\.0\.1:9/yizhongw/self-instruct/main/"
                                            r"self_instruct/templates/clf_task_template\.py"):
        released_templates(tmp_path / "none", mirror="http://127.0.0.1:9", timeout=2)
    assert not list((tmp_path / "none").rglob("*.py"))


def test_a_released_file_without_its_strings_is_a_clear_error(tmp_path):
    for path, body in _released_files().items():
        target = tmp_path / path.split("/main/", 1)[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body.replace(b"output_first_template_for_clf", b"renamed") if "instance_gen" in path else body)
    from selfinstruct_utils.records import DataFormatError

    with pytest.raises(DataFormatError, match=r"instance_gen_template\.py.*output_first_template_for_clf.*missing"):
        parse_released_templates(tmp_path)


def test_the_released_evaluation_leaves_out_the_templates_own_seed_examples(tmp_path, seeds):
    with Mirror(_released_files()) as mirror:
        t = released_templates(tmp_path, mirror=mirror.url)
    kept, left_out = classifier_eval_tasks(seeds, t)
    assert left_out == ["What is the relation between the given pairs?"] and len(kept) == 174
    assert classifier_eval_tasks(seeds, KIT_TEMPLATES)[1] == []


def test_a_run_records_and_guards_its_template_set(tmp_path, monkeypatch, data):
    import selfinstruct_utils.released as released

    with Mirror(_released_files()) as mirror:
        released_templates(tmp_path / "cache" / "released", mirror=mirror.url)
    monkeypatch.setattr(released, "CACHE_DIR", tmp_path / "cache")
    from selfinstruct_utils.data import seed_tasks_path
    from selfinstruct_utils.pipeline import _run_config

    kit = PipelineConfig()
    rel = PipelineConfig(template_set="released")
    stored = _run_config(rel, seed_tasks_path(), "id")
    assert stored["template_set"] == "released" and stored["templates"] == released.template_set("released").fingerprint()
    run = tmp_path / "run"
    RunDir(run).begin(stored)
    check_resumable(run, rel, identity="id")
    with pytest.raises(ConfigChangedError, match=r"templates\.classification_identification"):
        check_resumable(run, kit, identity="id")


def test_cli_eval_classifier_writes_every_answer(tmp_path, capsys):
    with FakeOpenAI(text=" No") as fake:
        from selfinstruct_utils.cli import main

        out = tmp_path / "ec.json"
        seeds_file = tmp_path / "seeds.jsonl"
        rows = [SeedTask(f"t{k}", f"t{k}", f"Task number {k} about things.", [], k < 2) for k in range(5)]
        seeds_file.write_text("".join(json.dumps({"id": r.id, "name": r.id, "instruction": r.instruction,
                                                  "instances": [{"input": "", "output": "x"}],
                                                  "is_classification": r.is_classification}) + "\n" for r in rows))
        assert main(["eval-classifier", "--backend", "server", "--base-url", fake.base_url, "--model", "fake",
                     "--seed-tasks", str(seeds_file), "--out", str(out), "--no-progress", "--cache-dir", ""]) == 0
    said = capsys.readouterr().out
    assert "accuracy 0.600  precision 0.000  recall 0.000" in said and "5 labelled seed tasks" in said
    saved = json.loads(out.read_text())
    assert saved[0]["tasks"] == 5 and [a["predicted"] for a in saved[0]["answers"]] == [False] * 5
    assert Path(out).is_file()
