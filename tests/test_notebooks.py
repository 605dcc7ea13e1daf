"""Every notebook runs top to bottom with small parameters and saves its figures.

Notebooks 00-04 use the session's embedded server (as BACKEND="server") and share one run directory,
in order, as a reader would run them. Every notebook runs the way JupyterLab runs it: the kernel gets no
MPLBACKEND from the test process (conftest sets Agg for in-process plots), so it uses its inline backend,
and every cell that draws a figure must show it inline (an ``image/png`` output), not only save it.
"""

import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import HANG_GUARD_S, PROJECT, kit_run_from_original

NOTEBOOKS = PROJECT / "notebooks"
pytestmark = pytest.mark.notebook

#: A call of one of the kit's plotting functions (``plots.save`` only writes files).
FIGURE_CALL = re.compile(r"\bplots\.(?!save\b)\w+\(")


@contextmanager
def as_the_lab_runs_it():
    """The kernel environment of `make lab`: no MPLBACKEND, so ipykernel picks its inline backend."""
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved


def run_notebook(name: str, out_dir: Path, *, conditional_figures: tuple[str, ...] = (), **parameters) -> Path:
    """Execute a notebook as the lab does and check that each cell that draws a figure shows it inline.

    Args:
        conditional_figures: substrings of figure cells that these parameters switch off (no image expected).
    """
    import papermill

    out = out_dir / f"{name}.ipynb"
    with as_the_lab_runs_it():
        papermill.execute_notebook(
            str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters, cwd=str(NOTEBOOKS),
            kernel_name="python3", progress_bar=False, request_save_on_cell_execute=False,
        )
    missing = figure_cells_without_image(out, conditional=conditional_figures)
    assert not missing, f"{name}: figure cells without an inline image: {missing}"
    return out


def figure_cells_without_image(path: Path, *, conditional: tuple[str, ...] = ()) -> list[str]:
    """First lines of executed code cells that call a plotting function but have no ``image/png`` output."""
    missing = []
    for cell in json.loads(Path(path).read_text(encoding="utf-8"))["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or not FIGURE_CALL.search(source) or any(c in source for c in conditional):
            continue
        if not any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            missing.append(source.strip().splitlines()[0])
    return missing


def images(path: Path) -> int:
    """The number of inline images (``image/png`` outputs) in an executed notebook."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


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


def test_01_seed_tasks(tmp_path):
    """Needs no LM: the figure is both saved and shown inline (run_notebook checks the inline image)."""
    out = run_notebook("01_seed_tasks", tmp_path, FIGURES_DIR=str(tmp_path / "figures"))
    assert "175 seed tasks" in out.read_text()
    assert images(out) == 1
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["01_seed_instruction_lengths.pdf",
                                                                        "01_seed_instruction_lengths.png"]


def test_02_to_04_pipeline_notebooks(nb_env):
    run_notebook("02_generate_instructions", nb_env["root"], NUM_INSTRUCTIONS=4, **nb_env["lm"])
    text = run_notebook("03_classify_and_generate_instances", nb_env["root"], CLF_EVAL_SEEDS=7, **nb_env["lm"]).read_text()
    assert "step 2 on 7 labelled seeds: the LM said yes" in text and "said yes" in text  # scored on 7 labelled seeds
    assert "from counts" in text and "{'n'" not in text  # a table, not a printed dict
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
    assert re.fullmatch(re.escape(f"server:{nb_env['lm']['BASE_URL']}#{nb_env['lm']['MODEL']}#fp:") + "[0-9a-f]{16}",
                        manifest["lm"]["identity"])  # the server's weights fingerprint ends the identity
    assert set(manifest["steps"]) == {"instructions", "classification", "instances", "finetuning"}
    usage = [manifest["steps"][s]["usage"] for s in ("instructions", "classification", "instances")]
    assert all(u["requests"] + u["cache_hits"] > 0 for u in usage)
    assert [i["source"] for i in manifest["invocations"]] == ["notebook"] * 4
    assert all(i["status"] == "finished" for i in manifest["invocations"])


GPT3 = "gpt_3_run__original_code"


def test_05_dataset_statistics(nb_env, gen2):
    run_dir = kit_run_from_original(gen2, nb_env["root"] / "kit-run")
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
    out = run_notebook("08_quality_review", nb_env["root"], RATER="r1", conditional_figures=("plots.quality_bars",),
                       **params).read_text()
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


def _simulated_notebook_10(folder: Path, tasks: int) -> Path:
    """What notebook 10 writes for notebook 09 (its smallest real run trains for minutes, so the test
    writes the same files): the untuned and tuned models' predictions on the first ``tasks`` tasks, in the
    published format with task ids."""
    from selfinstruct_utils.data import predictions_dir

    folder.mkdir(parents=True, exist_ok=True)
    lines = (predictions_dir() / "davinci_predictions.jsonl").read_text(encoding="utf-8").splitlines()[:tasks]
    for model, answer in (("smollm2-135m-untuned", "I do not know."), ("smollm2-135m-lora", "Here is my answer.")):
        records = [{**json.loads(line), "id": f"user_oriented_task_{k}", "response": f"{answer} ({k})"}
                   for k, line in enumerate(lines)]
        (folder / f"{model}_predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _rate(path: Path, grades: str, every: int = 1) -> int:
    """Fill every ``every``-th item of a sheet with grades cycling through ``grades``; returns how many."""
    from selfinstruct_utils.analysis import human_eval as he

    sheet = he.load_ratings(path)
    sheet["rating"] = [grades[k % len(grades)] if k % every == 0 else "" for k in range(len(sheet))]
    sheet.to_csv(path, index=False)
    return int((sheet["rating"] != "").sum())


def test_09_after_10_opens_a_new_sheet_and_keeps_every_rating(nb_env, tmp_path):
    """The README's order 09, 10, 09 with ratings in between: the second 09 opens a new sheet for the new
    set of models (and the kit's pair one of its own), every earlier sheet keeps its bytes, and Figure 6
    and agreement come per sheet; notebook 10's output is simulated (see _simulated_notebook_10)."""
    from selfinstruct_utils.analysis import human_eval as he
    from selfinstruct_utils.data import predictions_dir, user_oriented_path

    root = tmp_path / "human_eval"
    kit = tmp_path / "tuning" / "predictions"
    lm = {k: v for k, v in nb_env["lm"].items() if k != "RUN_DIR"}
    figures = Path(lm["FIGURES_DIR"])
    params = dict(SHEET_DIR=str(root), KIT_PREDICTIONS=str(kit), **lm)
    no_ratings = ("he.rating_counts(ratings)",)  # Figure 6 is drawn once a sheet holds ratings

    # 1. notebook 09 before notebook 10: the eight published models
    out = run_notebook("09_human_evaluation", tmp_path, RATER="r1", LM_RATER_TASKS=1, conditional_figures=no_ratings,
                       **params).read_text()
    assert "opened a new sheet in" in out and "no ratings yet" in out and "no predictions of" in out
    assert "Automatic view: overlap with the reference, 252 tasks per model" in out
    assert "AUTOMATIC ratings by" in out and "1 tasks, 8 answers" in out and "got no grade from the LM" in out
    (first,) = he.sheet_folders(root)
    assert len(he.load_ratings(first / "rating_r1.csv")) == 8 * 252
    rated_first = _rate(first / "rating_r1.csv", "ABCD", every=7)
    he.open_rating_sheet(he.load_predictions([predictions_dir()], user_oriented_path()), first, "r2")
    rated_first += _rate(first / "rating_r2.csv", "ABDC", every=7)
    before = {p.name: p.read_bytes() for p in first.iterdir()}

    # 2. notebook 10 (simulated) adds the kit's tuned and untuned models on 2 tasks
    _simulated_notebook_10(kit, tasks=2)

    # 3. notebook 09 again: a new sheet for ten models, one for the pair; the first keeps every byte
    out = run_notebook("09_human_evaluation", tmp_path, RATER="r1", LM_RATER_TASKS=0,
                       conditional_figures=("lm_rate(client",), **params).read_text()
    assert "a new set of models (10 models on 252 tasks): opened a new sheet in" in out
    assert "the 1 earlier sheet(s) keep their answers" in out
    assert "compared on the 2 tasks every model answered (of 252)" in out
    assert "Automatic view: overlap with the reference, 2 tasks per model" in out
    assert "a new set of models (2 models on 2 tasks)" in out
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    folders = he.sheet_folders(root)
    assert len(folders) == 3 and folders[0] == first
    by_size = {len(he.load_ratings(f / "rating_r1.csv")): f for f in folders[1:]}
    ten, pair = by_size[8 * 252 + 2 * 2], by_size[2 * 2]
    assert set(he.load_all_ratings(pair).model) == {"smollm2-135m-untuned", "smollm2-135m-lora"}
    rated_pair = _rate(pair / "rating_r1.csv", "AB")
    snapshot = {f: {p.name: p.read_bytes() for p in f.iterdir()} for f in folders}

    # 4. notebook 09 a third time: nothing new, every rating kept, Figure 6 per rated sheet and over all
    out = run_notebook("09_human_evaluation", tmp_path, RATER="r1", LM_RATER_TASKS=0,
                       conditional_figures=("lm_rate(client",), **params).read_text()
    assert "opened a new sheet" not in out and "the sheet for these models (10 models on 252 tasks) is" in out
    assert {f: {p.name: p.read_bytes() for p in f.iterdir()} for f in folders} == snapshot
    summary = he.sheets_summary(root).set_index("sheet")
    assert summary.loc[str(first), "rated"] == rated_first and summary.loc[str(pair), "rated"] == rated_pair
    assert summary.loc[str(ten), "rated"] == 0 and summary["raters"].tolist().count(2) == 1
    assert "kappa_4_levels" in out and "spearman_rho" in out
    counts = he.rating_counts_all_sheets(root)
    assert counts.loc["smollm2-135m-lora"].sum() == 2 and counts.values.sum() == rated_first + rated_pair
    drawn = {p.name for p in figures.glob("09_*.png")}
    assert {f"09_ratings_human_{first.name}.png", f"09_ratings_human_{pair.name}.png", "09_ratings_human_all.png",
            "09_rouge_by_model.png", "09_ratings_automatic.png"} <= drawn
    assert f"09_ratings_human_{ten.name}.png" not in drawn


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
    absent = ("if GENERATED in datasets", "if superni_source")  # the sections that need data not downloaded
    for name in ("05_dataset_statistics", "06_verb_noun_diversity", "07_rouge_overlap"):
        text = run_notebook(name, tmp_path, DATA_DIR=str(folder), FIGURES_DIR=figures, conditional_figures=absent).read_text()
        assert "neither the paper's 82K data nor a stand-in" in text, name
    assert "no SuperNI test set in the data folder" in text
    text = run_notebook("08_quality_review", tmp_path, SHEET_DIR=str(tmp_path / "review"), FIGURES_DIR=figures,
                        conditional_figures=("plots.quality_bars",)).read_text()
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
                       CURVE_FRACTIONS=[0, 1], CURVE_LIMIT=8, SUPERNI_TASKS=1).read_text()
    assert "already instruction-tuned" in out and "2 steps" in out and "loss on the tuning examples' completions" in out
    # the curve's two points are the main run's: reused (no training, no second evaluation), and said so
    assert "the curve's zero point reuses the untuned model's answers" in out
    assert "the curve's full-data point reuses the main run's adapter" in out
    assert not (tmp_path / "tuning" / "curve" / "frac_1" / "checkpoints").exists()
    assert "Known library warnings are silenced" in out and "empty answers (an empty string" in out
    cells = json.loads(out)["cells"]
    stderr = ["".join(o["text"]) for c in cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    library = [t for t in stderr if "site-packages" in t or "DeprecationWarning" in t or "FutureWarning" in t]
    assert library == []  # no red boxes of library warnings (the kit's own data notes, e.g. rows left out, remain)
    preds = load_predictions([predictions_dir(), tmp_path / "tuning" / "predictions"])
    assert set(preds.model) >= {"smollm2-135m-untuned", "smollm2-135m-lora", "davinci"}
    assert (preds[preds.model == "smollm2-135m-lora"].task.tolist()) == [0, 1]
    curve = (tmp_path / "tuning" / "curve" / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("fraction,instructions,examples,steps") and len(curve) == 3
    assert sorted(p.name for p in figures.glob("10_*.png")) == ["10_data_size_curve.png", "10_loss_curve.png",
                                                                "10_rouge_by_model.png"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_01_in_jupyterlab_shows_its_figure_inline(tmp_path, data):
    """A headless browser opens notebook 01 in JupyterLab started as `make lab` starts it (its recipe's
    command, on a copy of the notebooks so the lab's autosave touches no tracked file), runs every cell
    and finds the rendered figure. Needs Chromium (`apt-get install chromium`) and the `playwright`
    package (never `playwright install`: the system Chromium is used); skipped without them."""
    import shutil
    import subprocess
    import time
    import urllib.request

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    make = subprocess.run(["make", "-s", "-n", "-o", "install", "-o", "notebook-filter", "-C", str(PROJECT), "lab"],
                          capture_output=True, text=True, check=True).stdout
    command = " ".join(line.strip().rstrip("\\") for line in make.splitlines() if line.strip())
    assert command.startswith("env -u MPLBACKEND") and "--ip 127.0.0.1" in command
    if not (PROJECT / ".venv" / "bin" / "jupyter").exists():  # the same command with this interpreter's jupyter
        command = command.replace(".venv/bin/jupyter", str(Path(sys.executable).parent / "jupyter"))
    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks")
    port, token = _free_port(), "h7-test-token"
    command = (command.replace("--notebook-dir=notebooks", f"--notebook-dir={tmp_path / 'notebooks'}")
               .replace("--port 8888", f"--port {port}") + f" --no-browser --IdentityProvider.token={token}")
    env = {**os.environ, "SELFINSTRUCT_DATA": str(data), "HOME": str(tmp_path / "home"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config")}
    log = (tmp_path / "lab.log").open("w")
    lab = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT)
    shot = tmp_path / "01_in_jupyterlab.png"
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(int(HANG_GUARD_S)):  # the lab answers within seconds on a quiet machine, minutes on a busy one
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except OSError:
                assert lab.poll() is None, (tmp_path / "lab.log").read_text()
                time.sleep(1)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/01_seed_tasks.ipynb?token={token}", timeout=HANG_GUARD_S * 1000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=HANG_GUARD_S * 1000)
            page.get_by_text("| Idle").first.wait_for(timeout=HANG_GUARD_S * 1000)  # the status bar: the kernel is up
            try:
                page.get_by_role("menuitem", name="Kernel", exact=True).click()
                page.get_by_text("Restart Kernel and Run All Cells…", exact=True).click()
                page.get_by_role("button", name="Confirm Kernel Restart").or_(
                    page.get_by_role("button", name="Restart", exact=True)).first.click()
                image = page.wait_for_selector(".jp-OutputArea-output img", timeout=HANG_GUARD_S * 1000)
                image.scroll_into_view_if_needed()
                box = image.bounding_box()
            finally:
                page.screenshot(path=str(shot))
                if os.environ.get("LAB_SCREENSHOT"):  # a path to keep the screenshot at, to look at it
                    shutil.copyfile(shot, os.environ["LAB_SCREENSHOT"])
                browser.close()
        assert box is not None and box["width"] > 200 and box["height"] > 100  # a drawn figure, not an icon
        assert shot.stat().st_size > 10_000
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()
        log.close()


def test_11_comparing_datasets(tmp_path, gen2):
    run = kit_run_from_original(gen2, tmp_path / "kit-run")
    figures = tmp_path / "figures"
    text = run_notebook("11_comparing_datasets", tmp_path, RUN_DIR=str(run), N=40, REPEATS=3, N_LARGE=1000, FIGURES_DIR=str(figures)).read_text()
    assert "this kit&#x27;s run (n=40)" in text or "this kit's run (n=40)" in text
    assert "Code Alpaca 2K (n=40)" in text and "paper (published, 52K)" in text
    assert "Embedding-based measures are left out" in text
    assert "not in the data folder (left out): Alpaca 52K" in text
    assert sorted(p.name for p in figures.glob("11_*.png")) == ["11_size_matched_all.png", "11_size_matched_large.png"]


def test_11_without_a_run_says_so(tmp_path):
    text = run_notebook("11_comparing_datasets", tmp_path, RUN_DIR=str(tmp_path / "absent"), N=30, REPEATS=2, N_LARGE=10**6,
                FIGURES_DIR=str(tmp_path / "figures")).read_text()
    assert "no run of the kit at" in text and "comparison is skipped" in text
