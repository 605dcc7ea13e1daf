"""Step 5: instruction tuning with LoRA and evaluation on the user-oriented tasks (paper Sec. 4).

The fast tests check the data handling on the published files. The ``train`` tests run the mechanics
(resume, manifest, data hash, skipped rows, refused configurations, reloading, evaluation files, the
command line) on a tiny random Llama (``tests/tiny_lm.py``, seconds), and one test tunes the real offline
default model (the embedded GGUF, de-quantized) where only it can tell: the loss is on completions only
and falls.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfinstruct_utils.analysis.human_eval import load_predictions, rating_sheet
from selfinstruct_utils.data import DATASETS, predictions_dir, user_oriented_path
from selfinstruct_utils.evaluate import (
    evaluation_prompt,
    rouge_summary,
    user_oriented_tasks,
)
from selfinstruct_utils.records import DataFormatError
from selfinstruct_utils.rouge import paired
from selfinstruct_utils.runs import ConfigChangedError


def finetuning_file(data: Path) -> Path:
    """The paper's finetuning data when downloaded, else a real GPT-3 run's finetuning file (same format)."""
    paper = data / DATASETS["Self-Instruct finetuning data (paper)"].path
    if paper.is_file():
        return paper
    return data / "generated/maulikmadhavi__self-instruct/gpt3_generations2/finetuning_data/gpt3_finetuning_data_253.jsonl"


# --- evaluation data, no model ------------------------------------------------------------------------------


def test_evaluation_prompt_reproduces_every_published_prompt(data):
    tasks = user_oriented_tasks(user_oriented_path(data))
    assert len(tasks) == 252 and (tasks["input"] == "").sum() == 44
    for path in sorted(predictions_dir(data).glob("*_predictions.jsonl")):
        published = [json.loads(line)["prompt"] for line in path.open(encoding="utf-8")]
        assert tasks["prompt"].tolist() == published, path.name


def test_evaluation_prompt_format():
    assert evaluation_prompt(" Fix the grammar. ", " me and him went ") == "Fix the grammar.\n\nInput: me and him went\nOutput:"
    assert evaluation_prompt("Tell a joke.\n", "  ") == "Tell a joke.\nOutput:"


def test_user_oriented_tasks_selects_by_index_or_count(data):
    path = user_oriented_path(data)
    assert user_oriented_tasks(path, 3)["id"].tolist() == [f"user_oriented_task_{k}" for k in range(3)]
    picked = user_oriented_tasks(path, [5, 200])
    assert picked["task"].tolist() == [5, 200]
    assert picked["prompt"].iloc[0].endswith("greatly appreciated.\nOutput:")  # task 5 has no input


def _kit_file(folder: Path, data: Path, tasks: list[int], name: str = "kit-model") -> Path:
    rows = user_oriented_tasks(user_oriented_path(data), tasks).set_index("task").loc[tasks].reset_index()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_predictions.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for r in rows.itertuples():
            fh.write(json.dumps({"id": r.id, "prompt": r.prompt, "instruction": r.instruction, "input": r.input,
                                 "target": r.target, "response": r.target if r.task == tasks[0] else "no idea"}) + "\n")
    return path


def test_a_kit_file_of_a_few_tasks_loads_beside_the_published_models(tmp_path, data):
    _kit_file(tmp_path, data, [7, 3, 100])
    both = load_predictions([predictions_dir(data), tmp_path], user_oriented_path(data))
    kit = both[both.model == "kit-model"]
    assert kit["task"].tolist() == [7, 3, 100]  # placed by id, not by line
    assert kit["task_id"].tolist() == ["user_oriented_task_7", "user_oriented_task_3", "user_oriented_task_100"]
    published = both[(both.model == "davinci") & both.task.isin([7, 3, 100])].set_index("task")
    assert (kit.set_index("task")["instruction"] == published.loc[[7, 3, 100], "instruction"]).all()
    assert both.model.nunique() == 9 and len(both) == 8 * 252 + 3
    sheet, key = rating_sheet(both, seed=1, tasks=[3])
    assert len(sheet) == 9 and "kit-model" in set(key.model)


def test_an_unknown_task_id_is_an_error_naming_file_and_line(tmp_path, data):
    path = _kit_file(tmp_path, data, [0, 1])
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace("user_oriented_task_1", "user_oriented_task_999")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"kit-model_predictions.jsonl:2.*'id'.*user_oriented_task_999"):
        load_predictions(tmp_path, user_oriented_path(data))


def test_rouge_summary_compares_models_on_their_common_tasks(tmp_path, data):
    _kit_file(tmp_path, data, [10, 11, 12, 13])
    both = load_predictions([predictions_dir(data), tmp_path], user_oriented_path(data))
    table = rouge_summary(both).set_index("model")
    assert (table["tasks"] == 4).all()
    davinci = both[(both.model == "davinci") & both.task.isin([10, 11, 12, 13])]
    assert table.loc["davinci", "rougeL"] == sum(paired(davinci.target.tolist(), davinci.response.tolist())) / 4
    # the kit file answers task 10 with its target, the rest with "no idea"
    kit = both[both.model == "kit-model"]
    expected = (1.0 + sum(paired(kit.target.tolist()[1:], ["no idea"] * 3))) / 4
    assert table.loc["kit-model", "rougeL"] == pytest.approx(expected, abs=1e-15)
    assert table.loc["kit-model", "low"] <= table.loc["kit-model", "rougeL"] <= table.loc["kit-model", "high"]
    full = rouge_summary(both[both.model != "kit-model"]).set_index("model")
    assert (full["tasks"] == 252).all()
    assert full.loc["text-davinci-003", "rougeL"] > full.loc["davinci", "rougeL"]


def test_training_records_are_seeded(data):
    from selfinstruct_utils.tune import training_records

    src = finetuning_file(data)
    a = training_records(src, limit=40, seed=3)
    assert a == training_records(src, limit=40, seed=3) and a != training_records(src, limit=40, seed=4)
    assert len(a) == 40 and all(r["completion"] and "<|endoftext|>" not in r["completion"] for r in a)



def test_output_less_rows_are_skipped_and_counted_not_a_traceback():
    import pandas as pd

    from selfinstruct_utils.tune import training_records

    df = pd.DataFrame({
        "instruction": ["Name a colour.", "Add the numbers.", "Say hi.", "Count to three.", None, "Spell cat."],
        "input": [None, "2 3", float("nan"), "", "x", None],
        "output": ["Blue.", None, "  ", 5, "y", "C-A-T"],
    })
    with pytest.warns(UserWarning, match=r"left out 4 training row\(s\) \(3 no output, 1 no instruction\)"):
        records = training_records(df, seed=0)
    assert sorted(r["instruction"] for r in records) == ["Name a colour.", "Spell cat."]
    assert all(r["input"] == "" for r in records)  # missing inputs (None, NaN) are empty, not "nan"
    with pytest.raises(ValueError, match="no example with an output"):
        training_records(df.iloc[1:4], seed=0)


def test_the_data_hash_sees_a_change_of_completion_alone(data):
    from selfinstruct_utils.tune import records_sha256, training_records

    records = training_records(finetuning_file(data), limit=4, seed=0)
    changed = [dict(r) for r in records]
    changed[2]["completion"] += " (changed)"
    assert records_sha256(changed) != records_sha256(records)
    assert records_sha256([dict(r) for r in records]) == records_sha256(records)


# --- the mechanics, on a tiny random model (torch, seconds) ------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data):
    """A tiny random base model, and 16 real finetuning examples its tokenizer was fitted to."""
    pytest.importorskip("trl")
    from tiny_lm import tiny_model_dir

    from selfinstruct_utils.tune import training_records

    records = training_records(finetuning_file(data), limit=16, seed=0)
    base = tiny_model_dir(tmp_path_factory.mktemp("tiny") / "base", [r["prompt"] + r["completion"] for r in records])
    return {"base": base, "records": records}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny):
    """A LoRA run on the tiny model, interrupted after step 2 and resumed to step 4."""
    from transformers import TrainerCallback

    from selfinstruct_utils.tune import TuneConfig, tune

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                control.should_training_stop = True

    config = TuneConfig(max_steps=4, batch_size=4, learning_rate=2e-3, save_steps=2, max_length=128, seed=0)
    out = tmp_path_factory.mktemp("tune") / "run"
    first = tune(tiny["records"], out, base=tiny["base"], config=config, device="cpu", progress=False,
                 callbacks=[StopAt()])
    second = tune(tiny["records"], out, base=tiny["base"], config=config, device="cpu", progress=False)
    return {**tiny, "first": first, "second": second, "config": config, "out": out}


@pytest.mark.train
def test_resuming_continues_the_step_count_and_the_manifest_adds_up(tuned):
    first, second = tuned["first"].manifest, tuned["second"].manifest
    assert first["steps"] == 2 and not first["complete"]
    assert second["steps"] == 4 and second["complete"]
    inv = second["invocations"]
    assert [(i["resumed_from"], i["from_step"], i["to_step"]) for i in inv] == [(None, 0, 2), ("checkpoint-2", 2, 4)]
    assert second["totals"]["seconds"] == pytest.approx(sum(i["seconds"] for i in inv), abs=0.02)
    assert second["totals"]["tokens"] == inv[-1]["tokens_seen_total"] > inv[0]["tokens_seen_total"] > 0
    assert second["base"] == {"kind": "hf", "name": str(tuned["base"]), "id": str(tuned["base"].resolve()),
                              "parameters": 34_976}  # vocabulary 512, width 32, 2 layers
    assert second["data"]["examples"] == 16 and second["data"]["skipped"] == {}
    assert second["config"]["learning_rate"] == 2e-3
    assert tuned["second"].losses()["step"].tolist() == [1, 2, 3, 4]
    on_disk = json.loads((tuned["out"] / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk["steps"] == 4 and len(on_disk["invocations"]) == 2


@pytest.mark.train
def test_a_complete_run_is_not_trained_again_and_a_changed_config_or_data_is_refused(tuned):
    from dataclasses import replace

    from selfinstruct_utils.tune import tune

    def again(records, config=tuned["config"]):
        return tune(records, tuned["out"], base=tuned["base"], config=config, device="cpu", progress=False)

    done = again(tuned["records"])
    assert done.model is None and len(done.manifest["invocations"]) == 2
    with pytest.raises(ConfigChangedError, match=r"config\.learning_rate: 0\.002 -> 0\.001"):
        again(tuned["records"], replace(tuned["config"], learning_rate=1e-3))
    with pytest.raises(ConfigChangedError, match=r"data: 'sha256:"):
        again(tuned["records"][:8])
    other_completion = [dict(r) for r in tuned["records"]]
    other_completion[5]["completion"] = other_completion[5]["completion"] + " Also this."
    with pytest.raises(ConfigChangedError, match=r"data: 'sha256:"):  # a change of completions alone is seen
        again(other_completion)
    stored = json.loads((tuned["out"] / "manifest.json").read_text(encoding="utf-8"))
    assert stored["steps"] == 4 and len(stored["invocations"]) == 2  # nothing was trained under other data


@pytest.mark.train
def test_records_without_a_completion_are_skipped_and_counted_in_the_manifest(tiny, tmp_path):
    from selfinstruct_utils.tune import TuneConfig, tune

    records = [dict(r) for r in tiny["records"][:6]]
    records[1]["completion"] = "   "
    del records[4]["completion"]
    with pytest.warns(UserWarning, match=r"<records>: left out 2 training row\(s\) \(2 no completion\)"):
        result = tune(records, tmp_path / "run", base=tiny["base"], config=TuneConfig(max_steps=1, batch_size=4),
                      device="cpu", progress=False)
    assert result.manifest["data"]["examples"] == 4 and result.manifest["data"]["skipped"] == {"no_completion": 2}
    with pytest.raises(ValueError, match="no training records"):
        tune([records[1]], tmp_path / "none", base=tiny["base"], device="cpu", progress=False)


@pytest.mark.train
def test_the_saved_adapter_reloads_to_the_same_outputs_and_identity(tuned):
    import torch

    from selfinstruct_utils.evaluate import generate
    from selfinstruct_utils.tune import load_tuned

    trained = tuned["second"]
    reloaded = load_tuned(tuned["out"], device="cpu")
    assert reloaded.identity == trained.identity
    assert reloaded.identity["tuning"] == {"data": trained.manifest["data"]["sha256"], "examples": 16, "steps": 4}
    assert reloaded.identity["adapter_sha256"].startswith("sha256:")
    prompts = [r["prompt"] for r in tuned["records"][:3]]
    enc = trained.tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        a = trained.model(**enc).logits
        b = reloaded.model(**enc).logits
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    out_a, _ = generate(trained.model, trained.tokenizer, prompts, max_new_tokens=12, progress=False)
    out_b, stats = generate(reloaded.model, reloaded.tokenizer, prompts, max_new_tokens=12, progress=False)
    assert out_a == out_b and 0 < stats.new_tokens <= 36


@pytest.mark.train
def test_load_tuned_refuses_a_base_that_now_loads_other_weights(tuned, tmp_path):
    import shutil

    from selfinstruct_utils.tune import load_tuned

    run = tmp_path / "run"
    shutil.copytree(tuned["out"], run)
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    manifest["base"]["id"] = "some-other-commit"
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValueError, match=r"trained on .* \(some-other-commit\), but that name now loads"):
        load_tuned(run, device="cpu")


@pytest.mark.train
def test_evaluation_writes_predictions_the_human_eval_views_read(tuned, tmp_path, data):
    from selfinstruct_utils.evaluate import evaluate_user_oriented

    model = tuned["second"]
    preds = evaluate_user_oriented(model.model, model.tokenizer, name="kit-lora-4-steps", out_dir=tmp_path,
                                   tasks=[0, 5, 17, 251], max_new_tokens=16, batch_size=2, progress=False,
                                   tasks_path=user_oriented_path(data), identity=model.identity)
    assert preds["task"].tolist() == [0, 5, 17, 251] and set(preds.model) == {"kit-lora-4-steps"}
    meta = json.loads((tmp_path / "kit-lora-4-steps_predictions.meta.json").read_text(encoding="utf-8"))
    assert meta["tasks"] == 4 and meta["decoding"] == "greedy" and meta["new_tokens"] <= 64
    # the meta file names the tuned model, not only its base: adapter, its weights' hash, the data's hash
    assert meta["model"]["adapter"] == str(tuned["out"] / "adapter")
    assert meta["model"]["adapter_sha256"] == model.identity["adapter_sha256"]
    assert meta["model"]["tuning"]["data"] == model.manifest["data"]["sha256"]
    assert not list(tmp_path.glob("*.tmp"))
    both = load_predictions([predictions_dir(data), tmp_path], user_oriented_path(data))
    assert both.model.nunique() == 9
    table = rouge_summary(both)
    assert (table["tasks"] == 4).all() and "kit-lora-4-steps" in set(table.model)
    sheet, key = rating_sheet(both, tasks=[251])
    assert len(sheet) == 9


@pytest.mark.train
def test_tune_and_evaluate_on_the_command_line(tiny, tmp_path, data, capsys):
    from selfinstruct_utils.cli import main

    out, base = tmp_path / "tuned", str(tiny["base"])
    args = ["tune", str(finetuning_file(data)), "--out", str(out), "--base", base, "--limit", "4", "--max-steps", "1",
            "--batch-size", "4", "--max-length", "64", "--device", "cpu"]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert f"tuned {base} on 4 examples" in said and "1 steps" in said and f"adapter: {out / 'adapter'}" in said
    assert main(["evaluate", "--tuned", str(out), "--name", "cli-lora", "--out", str(tmp_path / "pred"),
                 "--tasks", "2", "--max-new-tokens", "4", "--device", "cpu"]) == 0
    assert "cli-lora: ROUGE-L" in capsys.readouterr().out
    rows = (tmp_path / "pred" / "cli-lora_predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(r)["id"] for r in rows] == ["user_oriented_task_0", "user_oriented_task_1"]
    meta = json.loads((tmp_path / "pred" / "cli-lora_predictions.meta.json").read_text(encoding="utf-8"))
    assert meta["model"]["adapter"] == str(out / "adapter") and meta["model"]["tuning"]["steps"] == 1
    assert main([*args, "--lr", "1e-3"]) == 2
    assert "config.learning_rate: 0.0003 -> 0.001" in capsys.readouterr().err


# --- the real offline default model -------------------------------------------------------------------------


@pytest.mark.train
@pytest.mark.slow
def test_the_real_model_learns_from_completion_tokens_only(tmp_path, data):
    """The paper's prompt_loss_weight 0 on the embedded GGUF, de-quantized: step 1's loss (before any update)
    is the base model's loss on the completions of its batch, far from the loss over prompt and completion
    together; two steps (two epochs of them) lower the loss on those completions; the saved adapter reloads to the same loss."""
    pytest.importorskip("trl")
    from selfinstruct_utils.tune import (
        TuneConfig,
        completion_loss,
        load_base,
        load_tuned,
        training_records,
        tune,
    )

    records = [r for r in training_records(finetuning_file(data), limit=60, seed=1) if r["prompt"].endswith(":")][:8]
    assert len(records) == 8  # templates ending in "Output:", so the prompt/completion boundary is a token boundary
    base = load_base(device="cpu")
    completion_only = completion_loss(base.model, base.tokenizer, records, max_length=128)
    whole = completion_loss(base.model, base.tokenizer, [{"prompt": "", "completion": r["prompt"] + r["completion"]}
                                                         for r in records], max_length=128)
    del base
    config = TuneConfig(max_steps=2, batch_size=8, learning_rate=2e-3, max_length=128, seed=0)
    result = tune(records, tmp_path / "run", config=config, device="cpu", progress=False)
    first = result.losses()["loss"].iloc[0]
    assert first == pytest.approx(completion_only, abs=0.02), (first, completion_only, whole)
    assert abs(whole - completion_only) > 0.2
    after = completion_loss(result.model, result.tokenizer, records, max_length=128)
    assert after < completion_only - 0.05, (completion_only, after)
    assert result.manifest["base"]["id"].startswith("gguf-sha256:") and result.manifest["base"]["parameters"] == 134_515_008
    reloaded = load_tuned(tmp_path / "run", device="cpu")
    assert completion_loss(reloaded.model, reloaded.tokenizer, records, max_length=128) == pytest.approx(after, abs=1e-4)
