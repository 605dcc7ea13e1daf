"""Fast checks of what a class meets in JupyterLab, without running a notebook: the tracked notebooks hold
no outputs, `make lab` starts a lab whose kernels draw inline, the figures' style stays inside the kit's
plotting functions, and the helpers behind notebooks 03, 08, 09 and 10 say what they show."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import HANG_GUARD_S, PROJECT


def _tracked_notebooks() -> list[str]:
    if shutil.which("git") is None or not (PROJECT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "notebooks/*.ipynb"], cwd=PROJECT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_tracked_notebooks_hold_no_outputs_and_no_execution_counts():
    names = _tracked_notebooks()
    assert len(names) >= 11
    dirty = []
    for name in names:
        for k, cell in enumerate(json.loads((PROJECT / name).read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
                dirty.append(f"{name} cell {k}")
    assert dirty == []


def test_gitattributes_route_notebooks_through_nbstripout():
    lines = (PROJECT / ".gitattributes").read_text(encoding="utf-8").splitlines()
    assert "*.ipynb filter=nbstripout" in lines and "*.ipynb diff=ipynb" in lines


def test_nbstripout_filter_strips_what_the_lab_saves(tmp_path):
    """`make notebook-filter`'s command in a scratch repository: a notebook saved with outputs is
    committed without them, and `git status` shows an executed copy of a clean notebook as unchanged."""
    nbstripout = shutil.which("nbstripout", path=str(PROJECT / ".venv" / "bin")) or shutil.which("nbstripout")
    if nbstripout is None or shutil.which("git") is None:
        pytest.skip("nbstripout (the notebooks extra) or git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    shutil.copyfile(PROJECT / ".gitattributes", repo / ".gitattributes")
    subprocess.run([nbstripout, "--install", "--attributes", ".gitattributes"], cwd=repo, check=True)
    assert (repo / ".gitattributes").read_text() == (PROJECT / ".gitattributes").read_text()  # nothing appended
    clean = json.loads((PROJECT / "notebooks" / "01_seed_tasks.ipynb").read_text(encoding="utf-8"))
    (repo / "nb.ipynb").write_text(json.dumps(clean, indent=1) + "\n")
    subprocess.run([*git, "add", "nb.ipynb", ".gitattributes"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "clean"], check=True)
    executed = json.loads(json.dumps(clean))
    code = next(c for c in executed["cells"] if c["cell_type"] == "code")
    code["execution_count"] = 3
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["175 seed tasks\n"]}]
    (repo / "nb.ipynb").write_text(json.dumps(executed, indent=1) + "\n")
    diff = subprocess.run([*git, "diff"], capture_output=True, text=True, check=True).stdout
    assert diff == ""  # the lab's autosave leaves nothing to review or commit
    subprocess.run([*git, "add", "nb.ipynb"], check=True)
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    assert status == ""  # (git status flags the file by its size until `git add` re-reads it through the filter)
    staged = json.loads(subprocess.run([*git, "show", ":nb.ipynb"], capture_output=True, text=True, check=True).stdout)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in staged["cells"] if c["cell_type"] == "code")


def _make(*args: str, env: dict | None = None) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return subprocess.run(["make", "-s", "-C", str(PROJECT), *args], capture_output=True, text=True, env=env,
                          timeout=HANG_GUARD_S).stdout


def test_make_lab_gives_its_kernels_no_agg_backend_and_runs_as_root():
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "MAKEFLAGS", "MAKELEVEL")}
    probe = "--eval=h7-probe: ; @echo \"backend=[$$MPLBACKEND]\""
    # the global export is gone: a recipe outside test/figures/bench sees no MPLBACKEND
    assert "backend=[]" in _make(probe, "h7-probe", env=env)
    dry = _make("-n", "-o", "install", "-o", "notebook-filter", "lab", env=env)
    assert "env -u MPLBACKEND" in dry and "--ip 127.0.0.1" in dry and "--notebook-dir=notebooks" in dry
    assert ("--allow-root" in dry) == (os.getuid() == 0)


def test_importing_plots_changes_no_global_style():
    code = ("import matplotlib as mpl; before = dict(mpl.rcParams); import selfinstruct_utils.plots as p; "
            "import pandas as pd; p.bar_counts({'a': 1, 'b': 2}, title='t'); "
            "changed = sorted(k for k in before if mpl.rcParams[k] != before[k] and k != 'backend'); print(changed)")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=PROJECT)
    assert out.stdout.strip() == "[]"


def test_plots_draw_in_the_kits_style_inside_a_context():
    import matplotlib as mpl

    from selfinstruct_utils import plots

    fig = plots.bar_counts({"a": 1}, title="t")
    assert fig.axes[0].xaxis._major_tick_kw.get("gridOn", True)  # seaborn's whitegrid inside the call
    assert mpl.rcParams["axes.grid"] is False or mpl.rcParams["axes.grid"] == mpl.rcParamsDefault["axes.grid"]


def test_whole_counts_get_whole_ticks():
    import matplotlib.pyplot as plt

    from selfinstruct_utils import plots

    fig = plots.bar_counts({"empty output": 1, "same input and output": 2, "trailing colon": 1}, title="t")
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if 0 <= t <= fig.axes[0].get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    plt.close(fig)


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_rating_legend_stays_off_the_title_and_ungraded_answers_are_drawn():
    import matplotlib.pyplot as plt

    from selfinstruct_utils import plots
    from selfinstruct_utils.analysis.human_eval import UNGRADED

    counts = pd.DataFrame({"A": [3, 1], "B": [1, 0], "C": [0, 1], "D": [0, 0], UNGRADED: [0, 2]}, index=["m1", "m2"])
    fig = plots.rating_distribution(counts, title="A title long enough to reach the middle of the figure")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend, title = ax.get_legend(), ax.title
    assert not _boxes_overlap(legend.get_window_extent(renderer), title.get_window_extent(renderer))
    assert [t.get_text() for t in legend.get_texts()] == ["A", "B", "C", "D", UNGRADED]
    assert sorted(t.get_text() for t in ax.get_yticklabels()) == ["m1 (n=4)", "m2 (n=4)"]
    plt.close(fig)


def test_request_seconds_shows_every_request_and_each_kinds_median():
    import matplotlib.pyplot as plt

    from selfinstruct_utils import plots

    fig = plots.request_seconds([1.0, 0.2, 1.2, 0.3, 0.9, 0.25], ["cold", "warm"] * 3, title="t")
    ax = fig.axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 6
    assert [round(p.get_width(), 3) for p in ax.patches] == [1.0, 0.25]
    assert any("median 1.000 s (n = 3" in t.get_text() for t in ax.texts)
    plt.close(fig)


def test_classifier_metrics_table_says_undefined_for_0_over_0():
    from selfinstruct_utils.prompt_eval import classifier_metrics, metrics_table

    table = metrics_table(classifier_metrics([True, False, False], [False, False, None]))
    assert table.loc["precision", "value"] == "undefined (0/0)" and table.loc["precision", "from counts"] == "0 / 0"
    assert table.loc["recall", "value"] == "0.000" and table.loc["accuracy", "value"] == "0.667"
    assert table.loc["f1", "value"] == "0.000"
    assert metrics_table(classifier_metrics([False], [False])).loc["f1", "value"] == "undefined (0/0)"


def test_review_shortfall_says_when_the_data_has_fewer_items(tmp_path):
    from selfinstruct_utils.analysis.quality import open_review_sheet, review_shortfall

    df = pd.DataFrame({"instruction": ["a", "a", "b", "c"], "input": ["", "", "", ""], "output": ["1", "2", "3", None]})
    path = open_review_sheet(df, tmp_path, "r1", n=200)
    assert review_shortfall(path, 200, df) == ("NOTE: the sheet holds 2 items, not the 200 asked: the dataset has 2 "
                                               "distinct instructions with an output (the sample takes one item per instruction)")
    assert review_shortfall(path, 2, df) is None


def _predictions(models: dict[str, int]) -> pd.DataFrame:
    rows = [{"task": t, "task_id": f"user_oriented_task_{t}", "model": m, "instruction": f"do {t}", "input": "",
             "target": f"answer {t}", "response": f"{m} says {t}"} for m, n in models.items() for t in range(n)]
    return pd.DataFrame(rows)


def test_a_new_set_of_models_opens_a_new_sheet_and_keeps_the_old_one(tmp_path):
    from selfinstruct_utils.analysis import human_eval as he

    published = _predictions({"a": 5, "b": 5})
    first = he.open_sheet_for_models(published, tmp_path, "r1")
    assert first.new and first.earlier == () and first.models == ("a", "b") and first.tasks == 5
    sheet = he.load_ratings(first.sheet_path)
    sheet["rating"] = ["A", "B"] * 5
    sheet.to_csv(first.sheet_path, index=False)
    saved = first.sheet_path.read_bytes()
    again = he.open_sheet_for_models(published, tmp_path, "r1")
    assert not again.new and again.folder == first.folder and "the sheet for these models (2 models on 5 tasks)" in again.message
    with_kit = pd.concat([published, _predictions({"kit": 2})], ignore_index=True)
    second = he.open_sheet_for_models(with_kit, tmp_path, "r1")
    assert second.new and second.folder != first.folder and second.earlier == (first.folder,)
    assert second.message.startswith("a new set of models (3 models on 5 tasks): opened a new sheet in")
    assert first.sheet_path.read_bytes() == saved
    pair = he.open_sheet_for_models(with_kit, tmp_path, "r1", models=["kit", "a"])
    assert pair.models == ("a", "kit") and pair.tasks == 2 and len(he.load_ratings(pair.sheet_path)) == 4
    assert he.sheet_folders(tmp_path) == [first.folder, second.folder, pair.folder]
    summary = he.sheets_summary(tmp_path)
    assert summary["rated"].tolist() == [10, 0, 0] and summary["items"].tolist() == [10, 12, 4]
    with pytest.raises(ValueError, match="no predictions of"):
        he.open_sheet_for_models(with_kit, tmp_path, "r1", models=["kit", "nobody"])


def test_a_sheet_made_before_sheet_folders_is_still_used(tmp_path):
    from selfinstruct_utils.analysis import human_eval as he

    published = _predictions({"a": 3, "b": 3})
    old_sheet, _ = he.open_rating_sheet(published, tmp_path, "r1")
    opened = he.open_sheet_for_models(published, tmp_path, "r1")
    assert opened.folder == tmp_path and opened.sheet_path == old_sheet and not opened.new
    assert he.open_sheet_for_models(_predictions({"a": 3}), tmp_path, "r1").earlier == (tmp_path,)


def test_ratings_over_all_sheets_add_up_per_model(tmp_path):
    from selfinstruct_utils.analysis import human_eval as he

    preds = pd.concat([_predictions({"a": 2, "b": 2}), _predictions({"kit": 2})], ignore_index=True)
    for models, grade in ((["a", "b"], "A"), (["a", "kit"], "D")):
        opened = he.open_sheet_for_models(preds, tmp_path, "r1", models=models)
        sheet = he.load_ratings(opened.sheet_path)
        sheet["rating"] = grade
        sheet.to_csv(opened.sheet_path, index=False)
    counts = he.rating_counts_all_sheets(tmp_path)
    assert counts.loc["a"].tolist() == [2, 0, 0, 2] and counts.loc["kit"].tolist() == [0, 0, 0, 2]
    assert counts.loc["b"].tolist() == [2, 0, 0, 0]


def test_views_count_ungraded_answers_and_compare_on_common_tasks():
    from selfinstruct_utils.analysis import human_eval as he

    preds = pd.concat([_predictions({"a": 4, "b": 4}), _predictions({"kit": 2})], ignore_index=True)
    common, n = he.on_common_tasks(preds)
    assert n == 2 and sorted(common.task.unique()) == [0, 1] and len(common) == 6
    sheet, key = he.rating_sheet(preds[preds.task < 2], seed=0)
    sheet["rating"] = ["A", "", "B", "", "", "C"]
    counts = he.lm_rating_counts(sheet, key)
    assert list(counts.columns) == ["A", "B", "C", "D", he.UNGRADED]
    assert int(counts[he.UNGRADED].sum()) == 3 and int(counts.values.sum()) == 6 and list(counts.index) == ["a", "b", "kit"]


def test_empty_answers_are_counted():
    from selfinstruct_utils.notebook import empty_answers

    preds = _predictions({"a": 3, "b": 3})
    preds.loc[[0, 1], "response"] = ["", "  "]
    table = empty_answers(preds)
    assert table.loc["a", "empty"] == 2 and table.loc["b", "empty"] == 0 and table.loc["a", "answers"] == 3


def test_phases_add_up():
    from selfinstruct_utils.notebook import Phases

    phases = Phases()
    for _ in range(2):
        with phases("x"):
            pass
    with phases("y"):
        pass
    table = phases.table()
    assert list(table.index) == ["x", "y"] and abs(table["share"].sum() - 1) < 1e-9


class _Config:
    def __init__(self, lr: float):
        self.lr = lr

    def to_dict(self) -> dict:
        return {"learning_rate": self.lr}


def _write_predictions(path, tasks: int, max_new_tokens: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": f"user_oriented_task_{k}", "instruction": "i", "response": "r"}) + "\n"
                            for k in range(tasks)))
    meta = path.with_name(path.name.replace("_predictions.jsonl", "_predictions.meta.json"))
    meta.write_text(json.dumps({"tasks": tasks, "max_new_tokens": max_new_tokens, "model": {"id": "base"}}))


def test_the_curve_reuses_the_main_run_only_when_the_manifest_shows_the_same_computation(tmp_path):
    from selfinstruct_utils.notebook import reuse_in_curve
    from selfinstruct_utils.tune import records_sha256

    records = [{"instruction": f"task {k // 2}", "prompt": f"p{k}", "completion": f"c{k}"} for k in range(6)]
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    manifest = {"complete": True, "identity": {"base": {"kind": "gguf", "id": "x"}, "data": records_sha256(records),
                                               "config": {"learning_rate": 3e-4}}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    preds = tmp_path / "predictions"
    _write_predictions(preds / "untuned_predictions.jsonl", 4, 16)
    _write_predictions(preds / "lora_predictions.jsonl", 4, 16)
    curve = tmp_path / "curve"

    # other data (a different CURVE_LIMIT), other settings: nothing of the main run is reused
    notes = reuse_in_curve(run, preds / "untuned_predictions.jsonl", preds / "lora_predictions.jsonl", curve, records[:4],
                           config=_Config(3e-4), tasks=8, max_new_tokens=16)
    assert notes == [] and not curve.exists()
    notes = reuse_in_curve(run, preds / "untuned_predictions.jsonl", preds / "lora_predictions.jsonl", curve, records,
                           config=_Config(1e-4), tasks=4, max_new_tokens=16)
    assert len(notes) == 1 and "zero point" in notes[0] and not (curve / "frac_1").exists()
    # the same data, configuration and evaluation: the adapter, manifest and both answer files are reused
    notes = reuse_in_curve(run, preds / "untuned_predictions.jsonl", preds / "lora_predictions.jsonl", curve, records,
                           config=_Config(3e-4), tasks=4, max_new_tokens=16)
    assert any("full-data point reuses the main run's adapter" in n for n in notes)
    assert (curve / "frac_1" / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert json.loads((curve / "frac_1" / "manifest.json").read_text()) == manifest
    assert (curve / "frac_1" / "kit-3-instructions_predictions.jsonl").read_text() == (preds / "lora_predictions.jsonl").read_text()
    assert (curve / "frac_0" / "kit-0-instructions_predictions.meta.json").is_file()
