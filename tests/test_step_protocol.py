"""The step protocol (issue 19): a step defined here, outside the package -- a template, a parser and a
step -- runs end to end through ``run_pipeline`` between steps 1 and 2, fails half-way, resumes, and
leaves the same files as an uninterrupted run. The paper's pipeline keeps its names, parameters and
template hashes."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from fake_openai import FakeOpenAI

from selfinstruct_utils.generate import MapStep, render_prompt
from selfinstruct_utils.llm import TABLE4, LMClient, LMRequestError, SamplingParams
from selfinstruct_utils.pipeline import (
    PIPELINE,
    STEPS,
    PipelineConfig,
    default_params,
    format_summary,
    insert_step,
    run_pipeline,
)
from selfinstruct_utils.runs import ConfigChangedError, StepResult
from selfinstruct_utils.templates import KIT_TEMPLATES, FewShotTemplate, template_hash

# --- the example step: 1. a template, 2. a parser, 3. a step -------------------------------------------------
REPHRASE = FewShotTemplate(
    header="Rephrase each task in other words, keeping what it asks for.",
    examples=("Task: Sort the numbers in the list.\nRephrased: Put the numbers of the list in increasing order.",),
    query="Task: {instruction}\nRephrased:",
)


def parse_rephrased(text: str | None) -> str | None:
    """The first line of the answer, or None when there is none (never raises)."""
    line = (text or "").strip().split("\n")[0].strip()
    return line or None


def _rewrite_record(rec: dict, comp) -> dict:
    new = parse_rephrased(comp.text)
    return {**rec, "instruction": new or rec["instruction"], "original_instruction": rec["instruction"],
            "rephrased": new is not None}


REWRITE = MapStep(
    "rewrite", "rewritten_instructions.jsonl", SamplingParams(max_tokens=48, temperature=0.0, stop=("\n",)),
    template=REPHRASE, parse=_rewrite_record, echo="original_instruction",
    summarize=lambda recs: StepResult(counts={"rewritten": sum(r["rephrased"] for r in recs)},
                                      rejections=+Counter(unparseable=sum(not r["rephrased"] for r in recs))),
)

FILES = ["instruction_requests.jsonl", "machine_generated_instructions.jsonl", "rewritten_instructions.jsonl",
         "is_clf_or_not.jsonl", "machine_generated_instances.jsonl", "finetuning/all_generated_instances.jsonl",
         "finetuning/prompt_completion.jsonl", "finetuning/alpaca.json", "finetuning/chat_messages.jsonl"]

_WORDS = [f"{a}{b}" for a in ("bra", "cle", "dro", "fi", "glo", "ho", "ja", "ku", "lu", "mo") for b in "aeiouyxzqv"]


def _answer(body: dict) -> str:
    """The fake LM: step 1 continues the list with three novel instructions (per request seed), the rewrite
    step says "Kindly ..." and shouts the rest, step 2 answers by prompt length, step 3 gives two examples."""
    prompt = body.get("prompt", "")
    if prompt.startswith(REPHRASE.header):
        task = prompt.rsplit("Task: ", 1)[1].rsplit("\nRephrased:", 1)[0]
        return " Kindly " + task.upper() + "\nTask: more"
    if prompt.endswith("Is it classification?"):
        return " Yes" if len(prompt) % 2 else " No"
    if "Task: " in prompt[-400:] and prompt.endswith("\n"):
        return "Example 1\nInput: some input\nOutput: some output\nExample 2\nInput: other\nOutput: another"
    rng = random.Random(body.get("seed", 0))
    lines = ["Describe " + " ".join(rng.sample(_WORDS, 7)) + "." for _ in range(3)]
    return " " + lines[0] + "\n10. " + lines[1] + "\n11. " + lines[2]


def _client(fake: FakeOpenAI, **kw) -> LMClient:
    return LMClient("m", base_url=fake.base_url, api_key="k", **kw)


def _config() -> PipelineConfig:
    return PipelineConfig(num_instructions=6, request_batch_size=2)


def _rewrite_prompts(fake: FakeOpenAI) -> list[str]:
    return [r["prompt"] for r in fake.requests if r["prompt"].startswith(REPHRASE.header)]


def test_the_paper_pipeline_is_one_list_with_its_recorded_names_parameters_and_template_hashes():
    assert STEPS == tuple(s.name for s in PIPELINE) == ("instructions", "classification", "instances", "finetuning")
    assert default_params() == TABLE4 and list(default_params()) == list(TABLE4)
    assert PipelineConfig().params == TABLE4
    # the hashes runs have recorded in their manifests since the first version (a resume compares them)
    assert KIT_TEMPLATES.fingerprint() == {
        "instruction_generation": "3c0994274a1a3e7e", "classification_identification": "f546fb795c7ec260",
        "input_first": "982567c2f8b62087", "output_first": "f1948eb1677a3bab",
        "finetuning_encodings": "78e3ff5e6f2267f7"}


def test_a_prompt_is_one_entry_of_a_template_set():
    with_rewrite = KIT_TEMPLATES.with_prompts(rewrite=REPHRASE)
    assert with_rewrite.rewrite is REPHRASE and with_rewrite.prompt("rewrite") is REPHRASE
    assert with_rewrite.fingerprint() == {**KIT_TEMPLATES.fingerprint(), "rewrite": template_hash(REPHRASE)}
    assert list(with_rewrite.fingerprint())[-2:] == ["rewrite", "finetuning_encodings"]
    # a step names it by role and gets the run's set's version of it
    assert render_prompt("rewrite", with_rewrite, {"instruction": "Sort it."}) == REPHRASE.render("Sort it.")
    with pytest.raises(KeyError, match="has no prompt 'rewrite'"):
        KIT_TEMPLATES.prompt("rewrite")


def test_insert_step_refuses_unknown_places_and_twin_names():
    pipe = insert_step(PIPELINE, REWRITE, after="instructions")
    assert [s.name for s in pipe] == ["instructions", "rewrite", "classification", "instances", "finetuning"]
    with pytest.raises(ValueError, match="no step 'nowhere'"):
        insert_step(PIPELINE, REWRITE, after="nowhere")
    with pytest.raises(ValueError, match="a step 'rewrite' already"):
        insert_step(pipe, REWRITE, after="instances")


def test_a_step_added_outside_the_package_runs_fails_resumes_and_equals_an_uninterrupted_run(tmp_path):
    pipe = insert_step(PIPELINE, REWRITE, after="instructions")
    full, part = tmp_path / "full", tmp_path / "part"

    # uninterrupted
    with FakeOpenAI(text=_answer) as fake:
        results = run_pipeline(_client(fake, max_concurrency=3), full, _config(), pipeline=pipe, progress=False)
        assert len(_rewrite_prompts(fake)) == 6
    assert list(results) == ["instructions", "rewrite", "classification", "instances", "finetuning"]
    assert results["rewrite"].counts == {"rewritten": 6}
    kept = [json.loads(x)["instruction"] for x in open(full / "machine_generated_instructions.jsonl")]
    rewritten = [json.loads(x) for x in open(full / "rewritten_instructions.jsonl")]
    assert [r["original_instruction"] for r in rewritten] == kept
    assert [r["instruction"] for r in rewritten] == ["Kindly " + k.upper() for k in kept]
    # step 2 read the rewrite step's records, step 3 step 2's
    classified = [json.loads(x) for x in open(full / "is_clf_or_not.jsonl")]
    assert [r["instruction"] for r in classified] == [r["instruction"] for r in rewritten]
    assert [json.loads(x)["instruction"] for x in open(full / "machine_generated_instances.jsonl")] == \
        [r["instruction"] for r in classified]
    manifest = json.loads((full / "manifest.json").read_text())
    assert manifest["config"]["params"]["rewrite"]["max_tokens"] == 48  # its own parameters, recorded
    assert manifest["config"]["params"]["classification"]["max_tokens"] == TABLE4["classification"].max_tokens
    assert manifest["config"]["templates"] == {**KIT_TEMPLATES.fingerprint(), "rewrite": template_hash(REPHRASE)}
    assert manifest["steps"]["rewrite"]["usage"]["requests"] == 6
    assert "step rewrite" in format_summary(full)

    # interrupted: step 1 alone, then the whole pipeline while the server fails after 2 answers (one server
    # throughout: its address is part of the model's identity, which a resume checks)
    with FakeOpenAI(text=_answer) as fake:
        run_pipeline(_client(fake, max_concurrency=3), part, _config(), steps=("instructions",), pipeline=pipe,
                     progress=False)
        n = len(fake.requests)
        fake.script, fake.default = ["ok", "ok"], "500"
        with pytest.raises(LMRequestError, match="step 'rewrite'"):
            run_pipeline(_client(fake, max_concurrency=1, max_retries=0), part, _config(), pipeline=pipe,
                         progress=False)
        assert len(fake.requests) - n == len(_rewrite_prompts(fake)) == 3  # step 1 was done: no request of its own
        assert (part / "rewritten_instructions.jsonl").read_bytes().count(b"\n") == 2
        assert not (part / "is_clf_or_not.jsonl").exists()

        # resumed: only the missing requests, the same files
        fake.default = "ok"
        run_pipeline(_client(fake, max_concurrency=3), part, _config(), pipeline=pipe, progress=False)
        assert len(_rewrite_prompts(fake)) == 3 + 4

        # the run remembers the step's template: another one is refused before any request
        other = MapStep(**{**REWRITE.__dict__, "template": FewShotTemplate(REPHRASE.header + " Be brief.",
                                                                            REPHRASE.examples, REPHRASE.query)})
        n = len(fake.requests)
        with pytest.raises(ConfigChangedError, match="templates.rewrite"):
            run_pipeline(_client(fake), part, _config(), pipeline=insert_step(PIPELINE, other, after="instructions"),
                         progress=False)
        assert len(fake.requests) == n
    for name in FILES:
        assert (part / name).read_bytes() == (full / name).read_bytes(), name
    resumed = json.loads((part / "manifest.json").read_text())
    assert [i["status"][:6] for i in resumed["invocations"]] == ["finish", "failed", "finish"]
    assert resumed["steps"]["rewrite"]["counts"] == {"rewritten": 6}
    assert resumed["steps"]["rewrite"]["usage"]["requests"] == 6  # 2 + 4 over two invocations
