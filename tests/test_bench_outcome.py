"""The outcome benchmark's plumbing (benchmarks/bench_outcome.py) on a tiny random model: every point
trained and evaluated, scores equal to an independent computation, the paired comparison and its verdict,
resume without recomputation, scoring a predictions folder made elsewhere, the rater, and a results file
whose other sections survive. Not its numbers: those are the benchmark's."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_outcome", ROOT / "benchmarks" / "bench_outcome.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_outcome"] = module
    spec.loader.exec_module(module)
    return module


def _independent_rouge(path: Path) -> dict[int, float]:
    """ROUGE-L F1 per task of one predictions file, by rouge-score itself (not the kit's engine)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        out[int(r["id"].split("_")[-1]) if isinstance(r["id"], str) else int(r["id"])] = \
            scorer.score(r["target"], r["response"])["rougeL"].fmeasure
    return out


@pytest.mark.train
def test_the_outcome_benchmark_trains_scores_compares_and_resumes(tmp_path, data, monkeypatch):
    pytest.importorskip("trl")
    from tiny_lm import tiny_model_dir

    bench = _bench()
    base = tiny_model_dir(tmp_path / "tiny")
    work, results = tmp_path / "work", tmp_path / "results"
    results.mkdir()
    (results / "bench_outcome.md").write_text("# bench_outcome\n\n## gpu: an earlier section\n\nkept\n", encoding="utf-8")
    with FakeOpenAI(text=" B") as rater:
        args = ["--scale", "smoke", "--base", str(base), "--work", str(work), "--results", str(results),
                "--kit-run", str(tmp_path / "absent"), "--no-progress", "--device", "cpu",
                "--rate", "2", "--rater-url", rater.base_url]
        table = bench.main(args)
        asked = {p for b in rater.requests for p in (b["prompt"] if isinstance(b["prompt"], list) else [b["prompt"]])}

    points = ["base", "code-alpaca-2", "gpt3-run", "code-alpaca", "gpteacher"]
    rows = [json.loads(line) for line in (work / "rows.jsonl").read_text().splitlines()]
    assert [r["model"] for r in rows] == points
    assert [r["examples"] for r in rows] == [0, 2, 4, 4, 4] and [r["steps"] for r in rows] == [0, 1, 1, 1, 1]
    ours = table[table["model"].isin(points)].set_index("model")
    published = table[~table["model"].isin(points)]
    assert len(published) == 8 and set(published["group"]) == {"published (GPT-3 family)"}
    assert (table["tasks"] == 2).all()

    # scores: each point's mean equals rouge-score's own per-task F1s; the paired difference from base too
    per_task = {m: _independent_rouge(work / "predictions" / f"{m}_predictions.jsonl") for m in points}
    for m in points:
        assert ours.loc[m, "rougeL"] == pytest.approx(np.mean(list(per_task[m].values())), abs=1e-9)
        assert ours.loc[m, "low"] <= ours.loc[m, "rougeL"] <= ours.loc[m, "high"]
    for m in points[1:]:
        d = [per_task[m][t] - per_task["base"][t] for t in per_task["base"]]
        assert ours.loc[m, "vs_base"] == pytest.approx(np.mean(d), abs=1e-9)
        low, high = ours.loc[m, "vs_base_low"], ours.loc[m, "vs_base_high"]
        assert low <= ours.loc[m, "vs_base"] <= high
        assert ours.loc[m, "verdict"] == ("better" if low > 0 else "worse" if high < 0 else "no significant difference")
    assert pd.isna(ours.loc["base", "vs_base"])
    # answers without a word, counted from the files; the mean over the others
    for m in points:
        preds = [json.loads(x) for x in (work / "predictions" / f"{m}_predictions.jsonl").read_text().splitlines()]
        said = [per_task[m][int(str(p["id"]).split("_")[-1])] for p in preds if p["response"].split()]
        assert ours.loc[m, "empty"] == len(preds) - len(said)
        if said:
            assert ours.loc[m, "rougeL_answered"] == pytest.approx(np.mean(said), abs=1e-9)
        else:
            assert pd.isna(ours.loc[m, "rougeL_answered"])

    # the rater: every point's answer on each of the 2 seeded tasks graded (the fake grades B); identical
    # answers are asked once (the client shares identical prompts)
    assert 2 <= len(asked) <= 2 * len(points) and all("Response" in p or "response" in p for p in asked)
    rating = pd.read_csv(results / "bench_outcome_smoke_rater.csv", index_col=0)
    assert rating.loc[points, "B"].tolist() == [2] * len(points) and (rating.loc[points, "A_or_B"] == 1).all()

    md = (results / "bench_outcome.md").read_text(encoding="utf-8")
    assert "## gpu: an earlier section\n\nkept" in md and md.count("## smoke:") == 1
    assert "| code-alpaca-2 |" in md and (results / "bench_outcome_smoke.png").stat().st_size > 0
    assert pd.read_csv(results / "bench_outcome_smoke.csv")["model"].tolist() == table["model"].tolist()

    # run again: nothing is trained or evaluated again; the section is replaced, not added
    stamps = {p: p.stat().st_mtime_ns for p in (work / "predictions").glob("*.jsonl")}
    manifests = {m: json.loads((work / m / "manifest.json").read_text())["invocations"] for m in points[1:]}
    again = bench.main(args[:-4])
    assert {p: p.stat().st_mtime_ns for p in (work / "predictions").glob("*.jsonl")} == stamps
    assert {m: json.loads((work / m / "manifest.json").read_text())["invocations"] for m in points[1:]} == manifests
    pd.testing.assert_series_equal(again["rougeL"], table["rougeL"])
    assert (results / "bench_outcome.md").read_text(encoding="utf-8").count("## smoke:") == 1

    # a predictions folder made elsewhere is scored without a model
    monkeypatch.setattr(bench, "run_point", lambda *a, **k: pytest.fail("no model may be loaded"))
    elsewhere = bench.main(["--predictions", str(work / "predictions"), "--no-write", "--scale", "smoke"])
    pd.testing.assert_frame_equal(elsewhere[["model", "rougeL", "low", "high", "vs_base", "verdict"]],
                                  table[["model", "rougeL", "low", "high", "vs_base", "verdict"]])

    # an answer made of whitespace counts as empty and leaves the answered mean (the tiny model always says something)
    import shutil

    blank = tmp_path / "blank"
    shutil.copytree(work / "predictions", blank / "predictions")
    shutil.copy(work / "rows.jsonl", blank / "rows.jsonl")
    path = blank / "predictions" / "gpteacher_predictions.jsonl"
    preds = [json.loads(x) for x in path.read_text().splitlines()]
    preds[0]["response"] = " \n "
    path.write_text("".join(json.dumps(p) + "\n" for p in preds))
    blanked = bench.main(["--predictions", str(blank / "predictions"), "--no-write", "--scale", "smoke"]).set_index("model")
    assert blanked.loc["gpteacher", "empty"] == ours.loc["gpteacher", "empty"] + 1
    rest = per_task["gpteacher"][int(str(preds[1]["id"]).split("_")[-1])]
    assert blanked.loc["gpteacher", "rougeL_answered"] == pytest.approx(rest, abs=1e-9)
    assert blanked.loc["base", "empty"] == ours.loc["base", "empty"]
