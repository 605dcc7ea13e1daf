"""Every notebook runs top to bottom with small parameters and saves its figures.

Notebooks 00-04 use the session's embedded server (as BACKEND="server") and share one run directory,
in order, as a reader would run them.
"""

from pathlib import Path

import pytest
from conftest import PROJECT

NOTEBOOKS = PROJECT / "notebooks"
pytestmark = pytest.mark.notebook


def run_notebook(name: str, out_dir: Path, **parameters) -> Path:
    import papermill

    out = out_dir / f"{name}.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters, cwd=str(NOTEBOOKS),
        kernel_name="python3", progress_bar=False, request_save_on_cell_execute=False,
    )
    return out


@pytest.fixture(scope="module")
def nb_env(tmp_path_factory, embedded_lm):
    root = tmp_path_factory.mktemp("notebooks")
    return {
        "root": root,
        "lm": dict(BACKEND="server", BASE_URL=embedded_lm.base_url, MODEL=embedded_lm.alias,
                   CACHE_DIR=str(root / "cache"), RUN_DIR=str(root / "run"), FIGURES_DIR=str(root / "figures")),
    }


def _figures(env, prefix):
    return sorted(p.name for p in (env["root"] / "figures").glob(f"{prefix}*"))


def test_00_setup_and_backends(nb_env, monkeypatch):
    key = "sk-PLANTED-notebook-key-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", key)  # the kernel inherits it; the client sends it to the server
    out = run_notebook("00_setup_and_backends", nb_env["root"], **nb_env["lm"])
    assert key not in out.read_text()
    assert _figures(nb_env, "00_") == ["00_prefix_cache.pdf", "00_prefix_cache.png"]


def test_01_seed_tasks(nb_env):
    out = run_notebook("01_seed_tasks", nb_env["root"], FIGURES_DIR=nb_env["lm"]["FIGURES_DIR"])
    assert "175 seed tasks" in out.read_text()
    assert _figures(nb_env, "01_") == ["01_seed_instruction_lengths.pdf", "01_seed_instruction_lengths.png"]


def test_02_to_04_pipeline_notebooks(nb_env):
    run_notebook("02_generate_instructions", nb_env["root"], NUM_INSTRUCTIONS=4, **nb_env["lm"])
    run_notebook("03_classify_and_generate_instances", nb_env["root"], **nb_env["lm"])
    out = run_notebook("04_filter_and_finetuning_data", nb_env["root"], RUN_DIR=nb_env["lm"]["RUN_DIR"],
                       FIGURES_DIR=nb_env["lm"]["FIGURES_DIR"])
    assert "67 tasks, 78 instances after the cap" in out.read_text()
    for prefix in ("02_", "03_", "04_"):
        assert len(_figures(nb_env, prefix)) == 2
    run = Path(nb_env["lm"]["RUN_DIR"])
    assert (run / "finetuning" / "alpaca.json").is_file()


def _kit_run_from_the_original(gen2, folder: Path) -> Path:
    """A run directory of the kit holding the original GPT-3 run's steps 1-3 (then step 4 by the kit)."""
    import json

    from selfinstruct_utils.finetune import build_finetuning_data
    from selfinstruct_utils.records import write_jsonl
    from selfinstruct_utils.runs import RunDir

    run = RunDir(folder)
    clf = [json.loads(x) for x in open(gen2 / "is_clf_or_not_davinci_template_1.jsonl")]
    flags = {r["instruction"]: r["is_classification"].strip() == "Yes" for r in clf}
    write_jsonl(run.file("instructions"), ({"instruction": r["instruction"]} for r in clf))
    write_jsonl(run.file("classification"), ({"instruction": k, "is_classification": v} for k, v in flags.items()))
    recs = [json.loads(x) for x in open(gen2 / "machine_generated_instances.jsonl")]
    write_jsonl(run.file("instances"), ({"instruction": r["instruction"], "is_classification": flags[r["instruction"]],
                                         "raw_instances": r["raw_instances"],
                                         "finish_reason": r["instance_metadata"]["response"]["choices"][0]["finish_reason"]}
                                        for r in recs))
    build_finetuning_data(run)
    return folder


def test_05_dataset_statistics(nb_env, gen2):
    run_dir = _kit_run_from_the_original(gen2, nb_env["root"] / "kit-run")
    out = run_notebook("05_dataset_statistics", nb_env["root"], FIGURES_DIR=nb_env["lm"]["FIGURES_DIR"], RUN_DIR=str(run_dir))
    text = out.read_text()
    assert "paper (52K, Table 1)" in text and "this kit's run" in text
    assert _figures(nb_env, "05_") == ["05_lengths_gpt3_run.pdf", "05_lengths_gpt3_run.png",
                                       "05_lengths_seed_tasks.pdf", "05_lengths_seed_tasks.png"]


def test_06_verb_noun_diversity(nb_env):
    run_notebook("06_verb_noun_diversity", nb_env["root"], FIGURES_DIR=nb_env["lm"]["FIGURES_DIR"], MAX_INSTRUCTIONS=300)
    assert _figures(nb_env, "06_") == ["06_verb_noun_code_alpaca_2k.pdf", "06_verb_noun_code_alpaca_2k.png",
                                       "06_verb_noun_seed_tasks.pdf", "06_verb_noun_seed_tasks.png"]


def test_07_rouge_overlap_prints_the_papers_numbers(nb_env, tmp_path):
    import json

    (tmp_path / "splits" / "default").mkdir(parents=True)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "splits" / "default" / "test_tasks.txt").write_text("task1\n")
    (tmp_path / "tasks" / "task1.json").write_text(json.dumps({"Definition": ["Answer the following question."]}))
    out = run_notebook("07_rouge_overlap", nb_env["root"], FIGURES_DIR=nb_env["lm"]["FIGURES_DIR"],
                       SUPERNI_CHECKOUT=str(tmp_path)).read_text()
    assert "user-oriented instructions: 0.34 (paper: 0.34)" in out
    assert "identical to a test instruction: 1 (paper: 1)" in out
    assert "1 SuperNI test tasks" in out
    assert "07_seed_vs_superni.png" in _figures(nb_env, "07_")


def test_08_quality_review_with_filled_sheets(nb_env, tmp_path):
    from selfinstruct_utils.analysis import load_dataset
    from selfinstruct_utils.analysis.quality import QUESTIONS, sample_for_review, save_sheet
    from selfinstruct_utils.data import generated_dir

    data = load_dataset(generated_dir() / "maulikmadhavi__self-instruct" / "gpt3_generations2" / "finetuning_data" / "all_generated_instances.jsonl")
    sheets = []
    for rater, answer in (("r1", "yes"), ("r2", "no")):
        sheet = sample_for_review(data, 20, seed=0)
        for q in QUESTIONS:
            sheet[q] = answer
        sheets.append(str(save_sheet(sheet, tmp_path / f"{rater}.csv")))
    out = run_notebook("08_quality_review", nb_env["root"], SHEET=str(tmp_path / "mine.csv"), COMPLETED_SHEETS=sheets,
                       FIGURES_DIR=nb_env["lm"]["FIGURES_DIR"]).read_text()
    assert (tmp_path / "mine.csv").is_file()  # the rater's own sheet was created
    assert "50.0" in out  # 20 yes of 40 answers per question
    assert _figures(nb_env, "08_") == ["08_quality_review.pdf", "08_quality_review.png"]


def test_09_human_evaluation(nb_env, tmp_path):
    from selfinstruct_utils.analysis import human_eval as he
    from selfinstruct_utils.data import predictions_dir, user_oriented_path

    preds = he.load_predictions(predictions_dir(), user_oriented_path())
    paths = []
    for rater, shift in (("r1", 0), ("r2", 1)):
        sheet, key = he.rating_sheet(preds, seed=0, tasks=list(range(5)))
        sheet["rating"] = ["ABCD"[(k // 2 + shift * (k % 3 == 0)) % 4] for k in range(len(sheet))]
        paths.append(str(he.save_rating_sheet(sheet, key, tmp_path, name=rater)[0]))
    out = run_notebook("09_human_evaluation", nb_env["root"], SHEET_DIR=str(tmp_path / "mine"), LM_RATER_TASKS=1,
                       RATINGS=paths, **{k: v for k, v in nb_env["lm"].items() if k != "RUN_DIR"}).read_text()
    assert "kappa_4_levels" in out and "spearman_rho" in out
    assert _figures(nb_env, "09_") == ["09_ratings_automatic.pdf", "09_ratings_automatic.png", "09_ratings_human.pdf",
                                       "09_ratings_human.png", "09_rouge_by_model.pdf", "09_rouge_by_model.png"]
