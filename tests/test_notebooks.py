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


def test_00_setup_and_backends(nb_env):
    run_notebook("00_setup_and_backends", nb_env["root"], **nb_env["lm"])
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


def test_05_dataset_statistics(nb_env):
    out = run_notebook("05_dataset_statistics", nb_env["root"], FIGURES_DIR=nb_env["lm"]["FIGURES_DIR"])
    assert "paper (52K, Table 1)" in out.read_text()
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
