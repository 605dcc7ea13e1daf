"""Notebook 11 (comparing datasets) runs top to bottom with small parameters (papermill, as
tests/test_notebooks.py runs the others)."""

from pathlib import Path

import pytest
from conftest import PROJECT

pytestmark = pytest.mark.notebook


def _kit_run(gen2, folder: Path) -> Path:
    """A run directory of the kit holding the original GPT-3 run's steps 1-3, step 4 by the kit."""
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


def _run(tmp_path: Path, **parameters) -> str:
    import papermill

    out = tmp_path / "11_comparing_datasets.ipynb"
    papermill.execute_notebook(
        str(PROJECT / "notebooks" / "11_comparing_datasets.ipynb"), str(out), parameters=parameters,
        cwd=str(PROJECT / "notebooks"), kernel_name="python3", progress_bar=False, request_save_on_cell_execute=False,
    )
    return out.read_text()


def test_11_comparing_datasets(tmp_path, gen2):
    run = _kit_run(gen2, tmp_path / "kit-run")
    figures = tmp_path / "figures"
    text = _run(tmp_path, RUN_DIR=str(run), N=40, REPEATS=3, N_LARGE=1000, FIGURES_DIR=str(figures))
    assert "this kit&#x27;s run (n=40)" in text or "this kit's run (n=40)" in text
    assert "Code Alpaca 2K (n=40)" in text and "paper (published, 52K)" in text
    assert "Embedding-based measures are left out" in text
    assert "not in the data folder (left out): Alpaca 52K" in text
    assert sorted(p.name for p in figures.glob("11_*.png")) == ["11_size_matched_all.png", "11_size_matched_large.png"]


def test_11_without_a_run_says_so(tmp_path):
    text = _run(tmp_path, RUN_DIR=str(tmp_path / "absent"), N=30, REPEATS=2, N_LARGE=10**6,
                FIGURES_DIR=str(tmp_path / "figures"))
    assert "no run of the kit at" in text and "comparison is skipped" in text
