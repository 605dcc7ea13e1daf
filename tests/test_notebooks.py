"""Every notebook runs top to bottom with small parameters and saves its figures.

Notebooks 00-04 use the session's embedded server (as BACKEND="server") and share one run directory,
in order, as a reader would run them.
"""

import json
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
    text = run_notebook("03_classify_and_generate_instances", nb_env["root"], CLF_EVAL_SEEDS=7, **nb_env["lm"]).read_text()
    assert "'n': 7" in text and "'tp': " in text and "said yes" in text  # step 2 scored on 7 labelled seeds
    assert "field_leak_share" in text and "label_not_named" in text  # step 3 checks on the run's instances
    out = run_notebook("04_filter_and_finetuning_data", nb_env["root"], RUN_DIR=nb_env["lm"]["RUN_DIR"],
                       FIGURES_DIR=nb_env["lm"]["FIGURES_DIR"])
    assert "67 tasks, 78 instances after the cap" in out.read_text()
    for prefix in ("02_", "03_", "04_"):
        assert len(_figures(nb_env, prefix)) == 2
    run = Path(nb_env["lm"]["RUN_DIR"])
    assert (run / "finetuning" / "alpaca.json").is_file()
    # the notebooks recorded the run through the CLI's code path: a full manifest, not "model: None"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["num_instructions"] == 4 and manifest["config"]["seed"] == 42
    assert manifest["lm"]["identity"] == f"server:{nb_env['lm']['BASE_URL']}#{nb_env['lm']['MODEL']}"
    assert set(manifest["steps"]) == {"instructions", "classification", "instances", "finetuning"}
    usage = [manifest["steps"][s]["usage"] for s in ("instructions", "classification", "instances")]
    assert all(u["requests"] + u["cache_hits"] > 0 for u in usage)
    assert [i["source"] for i in manifest["invocations"]] == ["notebook"] * 4
    assert all(i["status"] == "finished" for i in manifest["invocations"])


def _kit_run_from_the_original(gen2, folder: Path) -> Path:
    """A run directory of the kit holding the original GPT-3 run's steps 1-3 (then step 4 by the kit)."""
    from selfinstruct_utils.analysis.datasets import original_step3_records
    from selfinstruct_utils.finetune import build_finetuning_data
    from selfinstruct_utils.records import write_jsonl
    from selfinstruct_utils.runs import RunDir

    run = RunDir(folder)
    recs = original_step3_records(gen2)
    write_jsonl(run.file("instructions"), ({"instruction": r["instruction"]} for r in recs))
    write_jsonl(run.file("classification"), ({"instruction": r["instruction"], "is_classification": r["is_classification"]}
                                             for r in recs))
    write_jsonl(run.file("instances"), recs)
    build_finetuning_data(run)
    return folder


GPT3 = "gpt_3_run__original_code"


def test_05_dataset_statistics(nb_env, gen2):
    run_dir = _kit_run_from_the_original(gen2, nb_env["root"] / "kit-run")
    out = run_notebook("05_dataset_statistics", nb_env["root"], FIGURES_DIR=nb_env["lm"]["FIGURES_DIR"], RUN_DIR=str(run_dir))
    text = out.read_text()
    assert "paper (52K, Table 1)" in text and "this kit's run" in text and "52,445" in text
    assert "using the small real stand-in 'GPT-3 run (original code)'" in text
    assert _figures(nb_env, "05_") == [f"05_lengths_{GPT3}.pdf", f"05_lengths_{GPT3}.png",
                                       "05_lengths_seed_tasks.pdf", "05_lengths_seed_tasks.png"]


def test_06_verb_noun_diversity(nb_env):
    out = run_notebook("06_verb_noun_diversity", nb_env["root"], FIGURES_DIR=nb_env["lm"]["FIGURES_DIR"], MAX_INSTRUCTIONS=300)
    assert "(paper: 14% of 52,445)" in out.read_text()
    assert _figures(nb_env, "06_") == [f"06_verb_noun_{GPT3}.pdf", f"06_verb_noun_{GPT3}.png",
                                       "06_verb_noun_seed_tasks.pdf", "06_verb_noun_seed_tasks.png"]


def test_07_rouge_overlap_prints_the_papers_numbers(nb_env, tmp_path):
    (tmp_path / "splits" / "default").mkdir(parents=True)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "splits" / "default" / "test_tasks.txt").write_text("task1\n")
    (tmp_path / "tasks" / "task1.json").write_text(json.dumps({"Definition": ["Answer the following question."]}))
    out = run_notebook("07_rouge_overlap", nb_env["root"], FIGURES_DIR=nb_env["lm"]["FIGURES_DIR"],
                       SUPERNI_CHECKOUT=str(tmp_path)).read_text()
    assert "user-oriented instructions: 0.34 (paper: 0.34)" in out
    assert "identical to a test instruction: 1 (paper: 1)" in out
    assert "1 SuperNI test task definitions; mean ROUGE-L" in out
    assert "07_seed_vs_superni.png" in _figures(nb_env, "07_") and "07_similarity_to_seeds.png" in _figures(nb_env, "07_")


def test_08_quality_review_one_sheet_per_rater(nb_env, tmp_path):
    from selfinstruct_utils.analysis.quality import QUESTIONS, load_sheet, save_sheet

    sheets = tmp_path / "review"
    params = dict(SHEET_DIR=str(sheets), N_ITEMS=20, FIGURES_DIR=nb_env["lm"]["FIGURES_DIR"])
    out = run_notebook("08_quality_review", nb_env["root"], RATER="r1", **params).read_text()
    assert "no answers yet" in out
    first = load_sheet(sheets / "review_r1.csv")
    for q in QUESTIONS:
        first[q] = "yes"
    save_sheet(first, sheets / "review_r1.csv")
    before = (sheets / "review_r1.csv").read_bytes()
    out = run_notebook("08_quality_review", nb_env["root"], RATER="r2", **params).read_text()
    assert (sheets / "review_r1.csv").read_bytes() == before  # the second rater never touches the first's sheet
    second = load_sheet(sheets / "review_r2.csv")
    assert second.instruction.tolist() == first.instruction.tolist()  # the same items for every rater
    for q in QUESTIONS:
        second[q] = "no"
    save_sheet(second, sheets / "review_r2.csv")
    out = run_notebook("08_quality_review", nb_env["root"], RATER="r1", **params).read_text()
    assert (sheets / "review_r1.csv").read_bytes() == before
    assert "50.0" in out  # 20 yes of 40 answers per question: both raters' sheets were read
    assert _figures(nb_env, "08_") == ["08_quality_review.pdf", "08_quality_review.png"]


def test_09_human_evaluation_keeps_ratings_across_reruns(nb_env, tmp_path):
    from selfinstruct_utils.analysis import human_eval as he
    from selfinstruct_utils.data import predictions_dir, user_oriented_path

    folder = tmp_path / "human_eval"
    kit = tmp_path / "kit_predictions"  # a model of the kit's own, on task 0 only (as notebook 10 writes them)
    kit.mkdir()
    first = json.loads((predictions_dir() / "davinci_predictions.jsonl").open().readline())
    (kit / "kit-lora_predictions.jsonl").write_text(json.dumps({**first, "id": "user_oriented_task_0"}) + "\n")
    params = dict(SHEET_DIR=str(folder), KIT_PREDICTIONS=str(kit), **{k: v for k, v in nb_env["lm"].items() if k != "RUN_DIR"})
    out = run_notebook("09_human_evaluation", nb_env["root"], RATER="r1", LM_RATER_TASKS=1, **params).read_text()
    assert "no ratings yet" in out and f"with the kit's own models from {kit}" in out
    sheet = he.load_ratings(folder / "rating_r1.csv")
    assert len(sheet) == 8 * 252 + 1
    sheet["rating"] = ["ABCD"[k // 2 % 4] for k in range(len(sheet))]
    sheet.to_csv(folder / "rating_r1.csv", index=False)
    preds = he.load_predictions([predictions_dir(), kit], user_oriented_path())
    second, _ = he.open_rating_sheet(preds, folder, "r2")
    other = he.load_ratings(second)
    other["rating"] = ["ABCD"[(k // 2 + (k % 3 == 0)) % 4] for k in range(len(other))]
    other.to_csv(second, index=False)
    before = (folder / "rating_r1.csv").read_bytes()
    out = run_notebook("09_human_evaluation", nb_env["root"], RATER="r1", LM_RATER_TASKS=0, **params).read_text()
    assert (folder / "rating_r1.csv").read_bytes() == before  # a re-run never wipes a rater's work
    assert "kappa_4_levels" in out and "spearman_rho" in out and "kit-lora" in out
    assert _figures(nb_env, "09_") == ["09_ratings_automatic.pdf", "09_ratings_automatic.png", "09_ratings_human.pdf",
                                       "09_ratings_human.png", "09_rouge_by_model.pdf", "09_rouge_by_model.png"]


def test_analysis_notebooks_run_on_only_what_download_writes(nb_env, tmp_path, monkeypatch, data):
    """A data folder holding only what `selfinstruct download --what seeds` writes (no generated/ at all):
    notebooks 04-08 run top to bottom, each saying that it falls back."""
    from http_mirror import Mirror, published_files, served

    from selfinstruct_utils.download import download, files_of

    folder = tmp_path / "downloaded"
    with Mirror(served(published_files(data))) as mirror:
        download(folder, what="seeds", mirror=mirror.url, progress=False)
    assert sorted(p.name for p in folder.rglob("*.jsonl")) == sorted(d.path.rsplit("/", 1)[1] for d in files_of("seeds"))
    monkeypatch.setenv("SELFINSTRUCT_DATA", str(folder))
    figures = str(tmp_path / "figures")
    out = run_notebook("04_filter_and_finetuning_data", tmp_path, RUN_DIR=nb_env["lm"]["RUN_DIR"], FIGURES_DIR=figures)
    assert "the original code's GPT-3 run is not in the data folder" in out.read_text()
    for name in ("05_dataset_statistics", "06_verb_noun_diversity", "07_rouge_overlap"):
        text = run_notebook(name, tmp_path, DATA_DIR=str(folder), FIGURES_DIR=figures).read_text()
        assert "neither the paper's 82K data nor a stand-in" in text, name
    assert "no SuperNI test set in the data folder" in text
    text = run_notebook("08_quality_review", tmp_path, SHEET_DIR=str(tmp_path / "review"), FIGURES_DIR=figures).read_text()
    assert "neither the paper's 82K data nor a stand-in" in text


def test_analysis_notebooks_default_to_the_papers_data_once_downloaded(tmp_path, small_registry):
    """`selfinstruct download --what all` from a local mirror (small files in the published formats):
    notebooks 05-07 analyse the paper's data, and 07 draws the SuperNI half of Figure 8."""
    from http_mirror import Mirror, served

    from selfinstruct_utils.download import download

    folder = tmp_path / "downloaded"
    with Mirror(served(small_registry)) as mirror:
        download(folder, what="all", mirror=mirror.url, progress=False)
    figures = tmp_path / "figures"
    for name in ("05_dataset_statistics", "06_verb_noun_diversity", "07_rouge_overlap"):
        text = run_notebook(name, tmp_path, DATA_DIR=str(folder), FIGURES_DIR=str(figures)).read_text()
        assert "Using the paper's own data: Self-Instruct 82K (paper)." in text, name
        assert "Alpaca 52K" in text, name
        if name.startswith("06"):  # the kit's figure beside the paper's, with the difference and why
            assert "have a verb-noun pair; the paper: 26,559 of 52,445 (50.6%), a difference of" in text
            assert "the paper parsed with the Berkeley Neural Parser" in text
    assert "3 SuperNI test task definitions; mean ROUGE-L" in text
    assert {"05_lengths_self_instruct_82k__paper.png", "06_verb_noun_self_instruct_82k__paper.png",
            "07_seed_vs_superni.png"} <= {p.name for p in figures.iterdir()}


@pytest.mark.train
def test_10_instruction_tuning_closes_the_loop(tmp_path):
    pytest.importorskip("trl")
    from selfinstruct_utils.analysis.human_eval import load_predictions
    from selfinstruct_utils.data import predictions_dir

    figures = tmp_path / "figures"
    out = run_notebook("10_instruction_tuning", tmp_path, OUT_DIR=str(tmp_path / "tuning"), FIGURES_DIR=str(figures),
                       LIMIT=8, MAX_STEPS=2, BATCH_SIZE=4, MAX_LENGTH=96, EVAL_TASKS=2, MAX_NEW_TOKENS=8,
                       CURVE_FRACTIONS=[0, 1], CURVE_LIMIT=4, SUPERNI_TASKS=1).read_text()
    assert "already instruction-tuned" in out and "2 steps" in out and "loss on the tuning examples' completions" in out
    preds = load_predictions([predictions_dir(), tmp_path / "tuning" / "predictions"])
    assert set(preds.model) >= {"smollm2-135m-untuned", "smollm2-135m-lora", "davinci"}
    assert (preds[preds.model == "smollm2-135m-lora"].task.tolist()) == [0, 1]
    curve = (tmp_path / "tuning" / "curve" / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("fraction,instructions,examples,steps") and len(curve) == 3
    assert sorted(p.name for p in figures.glob("10_*.png")) == ["10_data_size_curve.png", "10_loss_curve.png",
                                                                "10_rouge_by_model.png"]
