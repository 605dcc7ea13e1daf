"""Step 5's evaluation (``selfinstruct_utils.evaluate``): the bootstrap interval of ``rouge_summary`` pinned
against hand-checked cases and scipy, SuperNI scoring on small files in the published format, the one
SuperNI reader, and (``train``: a tiny random model) the data-size curve's reuse of finished fractions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from http_mirror import SUPERNI_DEFINITIONS, superni_file

from selfinstruct_utils import evaluate
from selfinstruct_utils.evaluate import evaluate_superni, rouge_summary, superni_examples
from selfinstruct_utils.records import DataFormatError


def _scores(**models: list[float]) -> pd.DataFrame:
    """Predictions with their ROUGE-L already scored: one row per (model, task)."""
    return pd.DataFrame([{"model": m, "task": t, "rougeL": s} for m, scores in models.items()
                         for t, s in enumerate(scores)])


# --- the bootstrap interval ----------------------------------------------------------------------------------


def test_bootstrap_interval_on_hand_checked_cases():
    """Scores [0, 0, 0, 1]: a resample's mean is k/4 with k ~ Binomial(4, 1/4): P(k=0) = 0.32, P(k<=2) = 0.95,
    P(k<=3) = 0.996, so the 95% percentile interval is [0, 0.75] and the 5% one [0.25, 0.25] (the median
    resample, k=1, holds 42% of the mass). Scores [0, 1]: the mean is 0, 1/2 or 1 (1/4, 1/2, 1/4): [0, 1]."""
    table = rouge_summary(_scores(a=[0, 0, 0, 1], b=[0, 1, 0, 1]), common_tasks=False).set_index("model")
    assert table.loc["a"].to_dict() == {"tasks": 4, "rougeL": 0.25, "low": 0.0, "high": 0.75}
    assert table.loc["b"].to_dict() == {"tasks": 4, "rougeL": 0.5, "low": 0.0, "high": 1.0}
    narrow = rouge_summary(_scores(a=[0, 0, 0, 1]), confidence=0.05).iloc[0]
    assert (narrow["low"], narrow["high"]) == (0.25, 0.25)
    two = rouge_summary(_scores(c=[0, 1])).iloc[0]
    assert (two["rougeL"], two["low"], two["high"]) == (0.5, 0.0, 1.0)


def test_bootstrap_interval_equals_scipy_and_the_normal_approximation():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(7)
    a, b = rng.beta(2, 5, size=60), rng.beta(5, 2, size=60)
    table = rouge_summary(_scores(a=a.tolist(), b=b.tolist()), n_resamples=4000, seed=3).set_index("model")
    assert table.index.tolist() == ["b", "a"]  # best first
    for name, scores in (("a", a), ("b", b)):
        row = table.loc[name]
        ci = bootstrap((scores,), np.mean, confidence_level=0.95, n_resamples=4000, method="percentile",
                       rng=np.random.default_rng(3)).confidence_interval
        assert (row["low"], row["high"]) == (ci.low, ci.high)
        assert row["rougeL"] == scores.mean()
        # independent of scipy: the mean of 60 scores is close to normal, so the 95% interval is about
        # mean -+ 1.96 standard errors
        se = scores.std(ddof=0) / np.sqrt(len(scores))
        assert row["low"] == pytest.approx(scores.mean() - 1.96 * se, abs=0.2 * se)
        assert row["high"] == pytest.approx(scores.mean() + 1.96 * se, abs=0.2 * se)


def test_bootstrap_interval_is_over_the_common_tasks_only():
    preds = _scores(a=[0, 0, 0, 1, 1, 1], b=[0, 0, 0, 1])  # b answered tasks 0-3 only
    table = rouge_summary(preds).set_index("model")
    assert table.loc["a"].to_dict() == {"tasks": 4, "rougeL": 0.25, "low": 0.0, "high": 0.75}
    alone = rouge_summary(preds, common_tasks=False).set_index("model")
    assert alone.loc["a", "tasks"] == 6 and alone.loc["a", "rougeL"] == 0.5


def test_equal_scores_have_a_zero_width_interval():
    row = rouge_summary(_scores(a=[0.4, 0.4, 0.4])).iloc[0]
    assert (row["rougeL"], row["low"], row["high"]) == pytest.approx((0.4, 0.4, 0.4), abs=1e-15)


# --- SuperNI: the published format ---------------------------------------------------------------------------


@pytest.fixture()
def superni(tmp_path) -> Path:
    """A small file in the format `selfinstruct download --what superni` writes (what the test mirror
    serves): 3 tasks of 2, 3 and 1 instances, definition and input in the prompt, completion + end-of-text."""
    path = tmp_path / "superni_test_set.jsonl"
    path.write_bytes(superni_file())
    return path


def _fake_generate(answers: dict[str, str], seen: list):
    def fake(model, tokenizer, prompts, **kwargs):
        seen.append((model, tokenizer, list(prompts), kwargs))
        return [answers[p.split("Input: ")[-1].split("\n")[0]] for p in prompts], evaluate.GenerationStats(7, 5, 0.5)
    return fake


def test_evaluate_superni_scores_per_task_then_averages_tasks(superni, monkeypatch):
    """Task 1 answered yes/yes (1, 0), task 2 two of three instances (1 and "Paws" vs "Brave Paws": P 1,
    R 1/2, F 2/3), task 3 wrong (0): the mean over tasks is (1/2 + 5/6 + 0) / 3 = 4/9; over instances it
    would be 8/15."""
    seen: list = []
    answers = {"The cat sat on the mat.": "yes", "Mat the on sat cat.": "yes", "Ann lost her key and found it in the "
               "fridge.": "the cold key", "A dog learned to swim.": "Paws", "twelve": "twelve"}
    monkeypatch.setattr(evaluate, "generate", _fake_generate(answers, seen))
    res = evaluate_superni("MODEL", "TOKENIZER", superni, tasks=None, per_task=2, max_new_tokens=9, batch_size=3,
                           progress=False)
    assert res["rougeL"] == pytest.approx(4 / 9, abs=1e-15)
    assert res["per_task"].to_dict("records") == [
        {"task": "task_1", "instances": 2, "rougeL": 0.5},
        {"task": "task_2", "instances": 2, "rougeL": pytest.approx(5 / 6, abs=1e-15)},
        {"task": "task_3", "instances": 1, "rougeL": 0.0},
    ]
    preds = res["predictions"]
    assert preds["target"].tolist() == ["yes", "no", "The Cold Key", "Brave Paws", "12"]  # end-of-text removed
    assert preds["rougeL"].tolist() == pytest.approx([1, 0, 1, 2 / 3, 0], abs=1e-15)
    assert res["stats"].new_tokens == 5
    (model, tokenizer, prompts, kwargs), = seen
    assert (model, tokenizer) == ("MODEL", "TOKENIZER")
    assert prompts[2].startswith(f"Definition: {SUPERNI_DEFINITIONS[1][0]}\n\n") and prompts[2].endswith("Output: ")
    assert kwargs["max_new_tokens"] == 9 and kwargs["batch_size"] == 3


def test_evaluate_superni_keeps_the_first_tasks_and_instances(superni, monkeypatch):
    seen: list = []
    answers = {inp: out for _, instances in SUPERNI_DEFINITIONS for inp, out in instances}
    monkeypatch.setattr(evaluate, "generate", _fake_generate(answers, seen))
    res = evaluate_superni(None, None, superni, tasks=2, per_task=1, progress=False)
    assert res["per_task"]["task"].tolist() == ["task_1", "task_2"] and res["rougeL"] == 1.0
    assert [p.split("Input: ")[-1] for p in seen[0][2]] == ["The cat sat on the mat.\nOutput: ",
                                                             "Ann lost her key and found it in the fridge.\nOutput: "]


def test_one_superni_reader_for_the_overlap_and_the_evaluation(superni, tmp_path):
    from selfinstruct_utils.analysis.overlap import load_superni_test_tasks, read_superni_jsonl

    rows = read_superni_jsonl(superni)
    assert rows["task"].tolist() == ["task_1", "task_1", "task_2", "task_2", "task_2", "task_3"]
    assert rows["line"].tolist() == [1, 2, 3, 4, 5, 6]
    tasks = load_superni_test_tasks(superni)
    assert tasks.to_dict("records") == [{"task": f"task_{k + 1}", "instruction": d, "instances": len(inst)}
                                        for k, (d, inst) in enumerate(SUPERNI_DEFINITIONS)]
    examples = superni_examples(superni, tasks=None, per_task=10)
    assert examples[["task", "definition"]].drop_duplicates().values.tolist() == tasks[["task", "instruction"]].values.tolist()
    # a prompt holding no definition is the same error in both, naming file and line
    bad = tmp_path / "bad.jsonl"
    lines = superni.read_text(encoding="utf-8").splitlines()
    lines.insert(2, json.dumps({"prompt": "Input: x\nOutput: ", "completion": "y<|endoftext|>"}))
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for read in (load_superni_test_tasks, superni_examples):
        with pytest.raises(DataFormatError, match=r"bad\.jsonl:3: field 'prompt': holds no task definition"):
            read(bad)
    no_completion = tmp_path / "no_completion.jsonl"
    no_completion.write_text(json.dumps({"prompt": "Definition: Do it.\n\nInput: x\nOutput: "}) + "\n", encoding="utf-8")
    for read in (load_superni_test_tasks, superni_examples):
        with pytest.raises(DataFormatError, match=r"no_completion\.jsonl:1: field 'completion'"):
            read(no_completion)


# --- the data-size curve (tiny random model) -----------------------------------------------------------------


@pytest.mark.train
def test_data_size_curve_reuses_finished_fractions_without_loading_a_model(tmp_path, data, monkeypatch):
    pytest.importorskip("trl")
    from tiny_lm import tiny_model_dir

    from selfinstruct_utils import tune as tune_mod
    from selfinstruct_utils.tune import TuneConfig

    source = data / "generated/maulikmadhavi__self-instruct/gpt3_generations2/finetuning_data/gpt3_finetuning_data_253.jsonl"
    texts = [r["prompt"] + r["completion"] for r in tune_mod.training_records(source, limit=6, seed=0)]
    base = tiny_model_dir(tmp_path / "base", texts)
    config = TuneConfig(max_steps=1, batch_size=4, max_length=128, seed=0)
    kwargs = dict(fractions=(0, 0.5, 1), base=base, config=config, limit=6, tasks=2, max_new_tokens=3,
                  device="cpu", progress=False)
    loads = []
    real_load = tune_mod._load
    monkeypatch.setattr(tune_mod, "_load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    curve = evaluate.data_size_curve(source, tmp_path / "curve", **kwargs)
    assert curve["fraction"].tolist() == [0, 0.5, 1] and curve["steps"].tolist() == [0, 1, 1]
    assert curve["examples"].iloc[0] == 0 and curve["examples"].iloc[2] == 6
    assert len(loads) == 3  # the base, then each fraction's tuning (its trained model is evaluated in memory)
    meta = json.loads((tmp_path / "curve" / "frac_1" / f"{curve['model'].iloc[2]}_predictions.meta.json").read_text())
    assert meta["model"]["adapter_sha256"].startswith("sha256:") and meta["model"]["tuning"]["examples"] == 6

    loads.clear()
    again = evaluate.data_size_curve(source, tmp_path / "curve", **kwargs)
    assert loads == []  # every fraction was finished: no model loaded
    pd.testing.assert_frame_equal(again, curve)

    loads.clear()
    evaluate.data_size_curve(source, tmp_path / "curve", **{**kwargs, "max_new_tokens": 4})
    assert len(loads) == 3  # other settings: each fraction evaluated again (tuned runs reloaded, not retrained)
