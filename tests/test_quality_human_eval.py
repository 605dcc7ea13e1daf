"""Quality review and human-evaluation workbench: sampling, sheets, widgets, statistics."""

import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from selfinstruct_utils.analysis import human_eval as he
from selfinstruct_utils.analysis import load_dataset
from selfinstruct_utils.analysis.quality import load_sheet, quality_table, sample_for_review, save_sheet
from selfinstruct_utils.data import predictions_dir, user_oriented_path
from selfinstruct_utils.widgets import rating_annotator, review_annotator

MODELS = ["davinci", "davinci-t0-ft", "davinci-superni-ft", "davinci-self-instruct",
          "davinci-self-instruct-and-superni-ft", "text-davinci-001", "text-davinci-002", "text-davinci-003"]


@pytest.fixture(scope="module")
def gpt3_run(gen2):
    return load_dataset(gen2 / "finetuning_data" / "all_generated_instances.jsonl")


def test_sample_is_seeded_one_instance_per_instruction(gpt3_run):
    a = sample_for_review(gpt3_run, 40, seed=3)
    b = sample_for_review(gpt3_run, 40, seed=3)
    c = sample_for_review(gpt3_run, 40, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert len(a) == 40 and a.instruction.is_unique and (a.seed == 3).all()
    # each sampled instance really belongs to its instruction
    pairs = set(zip(gpt3_run.instruction, gpt3_run.input, gpt3_run.output, strict=True))
    assert all((r.instruction, r.input, r.output) in pairs for r in a.itertuples())
    assert len(sample_for_review(gpt3_run, 1000)) == gpt3_run.instruction.nunique()


def test_quality_table_against_hand_computed_values(tmp_path):
    sheet = pd.DataFrame({
        "item": range(10), "instruction": ["x"] * 10,
        "valid_task": ["yes"] * 9 + ["no"],
        "input_appropriate": ["yes"] * 8 + ["no", ""],
        "output_correct": ["yes"] * 5 + ["no"] * 4 + ["yes"],
    })
    path = save_sheet(sheet, tmp_path / "s.csv")
    table = quality_table(load_sheet(path)).set_index("question")
    assert table.loc["valid_task", ["yes", "answered"]].tolist() == [9, 10]
    assert table.loc["valid_task", "percent_yes"] == 90.0
    # Wilson 95% interval for 9/10, by hand: (p + z^2/2n -+ z*sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    z, n, p = 1.959963984540054, 10, 0.9
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    assert table.loc["valid_task", "ci_low"] == pytest.approx(100 * (centre - half))
    assert table.loc["valid_task", "ci_high"] == pytest.approx(100 * (centre + half))
    assert table.loc["input_appropriate", ["yes", "answered"]].tolist() == [8, 9]
    # all fields valid: items 0-4 (yes, yes, yes); item 9 is incomplete
    assert table.loc["all_fields_valid", ["yes", "answered"]].tolist() == [5, 9]
    assert table.loc["all_fields_valid", "paper"] == 54.0


def test_sheet_csv_round_trip_and_bad_answers(tmp_path, gpt3_run):
    sheet = sample_for_review(gpt3_run, 5, seed=0)
    sheet.loc[0, "valid_task"] = "Y"
    path = save_sheet(sheet, tmp_path / "r.csv")
    back = load_sheet(path)
    assert back.loc[0, "valid_task"] == "yes"
    assert back.drop(columns=["valid_task"]).astype(str).equals(sheet.drop(columns=["valid_task"]).astype(str))
    sheet.loc[2, "output_correct"] = "maybe"
    save_sheet(sheet, path)
    with pytest.raises(ValueError, match=r"r.csv:4: column 'output_correct'"):
        load_sheet(path)


def test_review_widget_autosaves_and_resumes(tmp_path, gpt3_run):
    path = save_sheet(sample_for_review(gpt3_run, 6, seed=1), tmp_path / "review.csv")
    ann = review_annotator(path, rater="r1")
    assert ann.index == 0
    for _ in range(3):
        ann.answer(valid_task="yes", input_appropriate="no", output_correct="yes")
        ann.next_button.click()
    ann.answer(valid_task="no")  # item 3 half answered; then the kernel "dies"
    del ann
    saved = load_sheet(path)
    assert saved.loc[:2, "valid_task"].tolist() == ["yes"] * 3 and saved.loc[3, "valid_task"] == "no"
    assert saved.loc[3, "output_correct"] == "" and (saved.loc[:3, "rater"] == "r1").all()
    again = review_annotator(path)
    assert again.index == 3  # resumes at the first item with an unanswered question
    assert again.radios["valid_task"].value == "no"
    again.back_button.click()
    assert again.index == 2 and again.radios["input_appropriate"].value == "no"


def test_paper_acceptable_mapping_and_agreement_known_cases():
    a = pd.Series(list("AABBCCDDAB"))
    perfect = he.agreement(a, a)
    assert perfect["kappa_4_levels"] == 1.0 and perfect["kappa_acceptable"] == 1.0 and perfect["spearman_rho"] == pytest.approx(1.0)
    b = pd.Series(list("BABACDDCAB"))  # swaps within A/B and within C/D only
    r = he.agreement(a, b)
    assert r["kappa_acceptable"] == 1.0 and r["kappa_4_levels"] < 1.0
    # hand-computed Cohen's kappa on four levels: po = 6/10 agree; pe = sum_k pa_k * pb_k
    assert (a == b).sum() == 6
    pa = a.value_counts(normalize=True)
    pb = b.value_counts(normalize=True)
    pe = sum(pa[k] * pb.get(k, 0) for k in "ABCD")  # (.3*.3 + .3*.3 + .2*.2 + .2*.2) = 0.26
    assert pe == pytest.approx(0.26)
    assert r["kappa_4_levels"] == pytest.approx((0.6 - 0.26) / (1 - 0.26))
    assert r["kappa_4_levels"] == pytest.approx(cohen_kappa_score(a, b))
    with_gaps = he.agreement(pd.Series(["A", "", "B", "C"]), pd.Series(["A", "B", "", "C"]))
    assert with_gaps["n"] == 2


@pytest.fixture(scope="module")
def predictions():
    return he.load_predictions(predictions_dir(), user_oriented_path())


def test_predictions_load(predictions):
    assert sorted(predictions.model.unique()) == sorted(MODELS)
    assert len(predictions) == 8 * 252
    assert predictions.task_id.iloc[0] == "user_oriented_task_0"


def test_rating_sheet_hides_models(tmp_path, predictions):
    sheet, key = he.rating_sheet(predictions, seed=7, tasks=list(range(20)))
    sheet_path, key_path = he.open_rating_sheet(predictions, tmp_path, "r", seed=7, tasks=list(range(20)))
    text = sheet_path.read_text()
    assert "model" not in sheet.columns
    for m in MODELS:
        assert m not in text  # no model identity anywhere in what the rater sees
    assert len(sheet) == 160 and set(key.model) == set(MODELS)
    # responses are shuffled per task: the slot order is not the same model order everywhere
    merged = sheet.merge(key, on="item")
    orders = {tuple(g.sort_values("slot").model) for _, g in merged.groupby("task")}
    assert len(orders) > 1
    # the key really identifies each response
    joined = merged.merge(predictions, on=["task", "model"], suffixes=("", "_p"))
    assert (joined.response == joined.response_p).all()


def test_ratings_by_model_and_rating_widget(tmp_path, predictions):
    sheet, key = he.rating_sheet(predictions, seed=0, tasks=[0, 1])
    sheet_path, _ = he.open_rating_sheet(predictions, tmp_path, "r", seed=0, tasks=[0, 1])
    ann = rating_annotator(sheet_path)
    for k in range(len(sheet)):
        ann.answer(rating="ABCD"[k % 4])
        ann.next_button.click()
    rated = he.load_ratings(sheet_path)
    counts = he.ratings_by_model(rated, key)
    assert counts.to_numpy().sum() == 16 and list(counts.columns) == ["A", "B", "C", "D"]
    assert (counts.sum(axis=1) == 2).all()
    from selfinstruct_utils import plots

    plots.rating_distribution(counts, name="t", figures_dir=tmp_path)
    assert (tmp_path / "t.png").is_file()


def test_rouge_by_model_is_exact(predictions):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    sub = predictions[predictions.task < 10]
    scored = he.rouge_by_model(sub)
    for r in scored.itertuples():
        assert r.rougeL == pytest.approx(scorer.score(r.target, r.response)["rougeL"].fmeasure, abs=1e-12)


@pytest.mark.lm
def test_lm_rater_fills_a_sheet(embedded_lm, predictions):
    sheet, _ = he.rating_sheet(predictions, seed=0, tasks=[0])
    from selfinstruct_utils.rater import lm_rate

    rated = lm_rate(embedded_lm.client(), sheet, progress=False)
    assert len(rated) == 8
    assert rated.rating.isin(["A", "B", "C", "D", ""]).all()
    assert (rated.rater == "automatic:smollm2-135m-instruct").all()


def test_each_rater_has_a_sheet_that_is_never_overwritten(tmp_path, predictions):
    sheet_1, key = he.open_rating_sheet(predictions, tmp_path, "rater 1", tasks=[0, 1])
    sheet_2, key_2 = he.open_rating_sheet(predictions, tmp_path, "rater-2", tasks=[0, 1])
    assert sheet_1.name == "rating_rater_1.csv" and sheet_2.name == "rating_rater-2.csv" and key == key_2
    first = he.load_ratings(sheet_1)
    first["rating"] = ["ABCD"[k % 4] for k in range(len(first))]
    first.to_csv(sheet_1, index=False)
    before = sheet_1.read_bytes()
    assert he.open_rating_sheet(predictions, tmp_path, "rater 1", tasks=[0, 1])[0] == sheet_1
    assert sheet_1.read_bytes() == before  # opened again (a notebook re-run): the ratings stay
    with pytest.raises(ValueError, match="another sheet"):
        he.open_rating_sheet(predictions, tmp_path, "rater 3", tasks=[2])
    ratings = he.load_all_ratings(tmp_path)
    assert sorted(ratings.rater.unique()) == ["rater-2", "rater_1"] and len(ratings) == 32
    assert (ratings[ratings.rater == "rater-2"].rating == "").all()
    assert he.agreement_between_raters(ratings).empty  # rater 2 rated nothing yet
    assert he.load_all_ratings(tmp_path / "none").empty


def test_each_reviewer_has_a_sheet(tmp_path, gpt3_run):
    from selfinstruct_utils.analysis.quality import load_review_sheets, open_review_sheet

    a = open_review_sheet(gpt3_run, tmp_path, "r1", n=10)
    b = open_review_sheet(gpt3_run, tmp_path, "r2", n=10)
    assert a != b
    sheet = load_sheet(a)
    sheet["valid_task"] = "yes"
    save_sheet(sheet, a)
    assert open_review_sheet(gpt3_run, tmp_path, "r1", n=10) == a and (load_sheet(a).valid_task == "yes").all()
    sheets = load_review_sheets(tmp_path)
    assert len(sheets) == 2 and quality_table(*sheets).set_index("question").loc["valid_task", "answered"] == 10
