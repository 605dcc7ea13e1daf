# Two commands do all set-up: `make demo` and `make test` (each creates .venv and installs first).
# Each job installs only what it needs: the demo the pipeline and its embedded LM; the tests everything.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# llama-cpp-python compiles from source; a native (-march=native) build dies with "Illegal instruction"
# on some machines, so build for a generic x86-64 target.
export CMAKE_ARGS := -DGGML_NATIVE=OFF
# Tests, figures and benchmarks draw without a display; `make lab` must not pass Agg to its kernels
# (they would show no figure inline), so the backend is set for those targets only.
test test-fast bench figures: export MPLBACKEND := Agg

DEMO_EXTRAS := embedded
ALL_EXTRAS  := embedded,notebooks,benepar,train,dev

.PHONY: install install-demo demo test test-fast lint style bench figures seeds paper-data lab notebook-filter clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[$(DEMO_EXTRAS)]"
	touch $@

$(VENV)/.installed-all: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[$(ALL_EXTRAS)]"
	touch $@ $(VENV)/.installed-demo

install-demo: $(VENV)/.installed-demo
install: $(VENV)/.installed-all

## The main job: the whole pipeline on the paper's 175 seed tasks with the embedded LM.
demo: install-demo
	$(BIN)/selfinstruct demo --run-dir runs/demo

## The test suite: unit tests, real-data tests, the embedded LM server, every notebook.
test: install
	$(BIN)/python -m pytest

## Without the embedded LM, notebooks and training, on every core (pytest-xdist): each test file runs on
## one worker, so its module-scoped fixtures (a spaCy parse, the report) are built once, as in a serial run.
test-fast: install
	$(BIN)/python -m pytest -n auto --dist loadfile -m "not lm and not notebook and not train"

lint: install
	$(BIN)/ruff check selfinstruct_utils tests benchmarks

style: install
	$(BIN)/ruff check --fix selfinstruct_utils tests benchmarks
	$(BIN)/ruff format selfinstruct_utils tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_rouge.py

## The published figures in figures/: the one command that rewrites them (notebooks write to runs/figures).
FIGURE_NOTEBOOKS := 01_seed_tasks 05_dataset_statistics 06_verb_noun_diversity 07_rouge_overlap 09_human_evaluation
figures: install
	mkdir -p runs/figures-notebooks
	cd notebooks && for nb in $(FIGURE_NOTEBOOKS); do \
	  ../$(BIN)/papermill --cwd . -p FIGURES_DIR $(CURDIR)/figures -p LM_RATER_TASKS 0 \
	    -p SHEET_DIR $(CURDIR)/runs/figures-notebooks/human_eval $$nb.ipynb ../runs/figures-notebooks/$$nb.ipynb || exit 1; \
	done

## The paper's published data, for machines without ../shared/data (needs internet): the seed tasks,
## the user-oriented set and predictions; or everything (82K instances, finetuning data, SuperNI, Alpaca).
seeds: install-demo
	$(BIN)/selfinstruct download

paper-data: install-demo
	$(BIN)/selfinstruct download --what all

## JupyterLab on the notebooks at http://127.0.0.1:8888/lab (the URL with its token is printed; LAB_PORT=...
## for another port). As root (a container) it adds --allow-root, and --no-browser without a display; LAB_FLAGS=... adds more.
## Installs the git filter that keeps outputs out of the tracked notebooks first.
LAB_PORT  ?= 8888
LAB_FLAGS ?=
lab: install notebook-filter
	env -u MPLBACKEND $(BIN)/jupyter lab --notebook-dir=notebooks --ip 127.0.0.1 --port $(LAB_PORT) \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(if $(DISPLAY),,--no-browser) $(LAB_FLAGS)

## nbstripout as a git filter (.gitattributes): outputs and execution counts never reach a commit or `git diff`.
notebook-filter: install
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  $(BIN)/nbstripout --install --attributes .gitattributes && echo "nbstripout filter installed for notebooks/*.ipynb"; \
	fi

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
