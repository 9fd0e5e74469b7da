# Two commands for newcomers: `make demo` (the whole pipeline on the embedded demo config,
# CPU, minutes) and `make test`. Both create .venv from envs/requirements.lock when it is
# missing or older than the lock.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
CORES ?= all
# The venv's bin first, so that the rules' `python -m lipsim` is the pinned interpreter.
export PATH := $(BIN):$(PATH)

.PHONY: demo test test-fast lint report venv conda-env clean-demo help

help:
	@echo "make demo    run the whole pipeline on the demo config (results/demo/)"
	@echo "make test    run the test suite"
	@echo "make test-fast  the tests not marked slow (under 2 minutes; for every change)"
	@echo "make lint    ruff check, ruff format --check, snakefmt --check, snakemake --lint"
	@echo "make report  HTML report of the demo run (results/demo/report.html)"

$(STAMP): envs/requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r envs/requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	@echo "results in results/demo/ (tables/, figures/, manifest.parquet); 'make report' for HTML"

report: $(STAMP)
	$(BIN)/snakemake --report results/demo/report.html

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Slow tests (the demo DAG, SLURM, real report builds, big models) are marked `slow`.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lipsim tests benchmarks envs
	$(BIN)/ruff format --check lipsim tests benchmarks envs
	$(BIN)/snakefmt --check workflow/
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile config/paper.yaml

# The conda env file snakemake copies alone: pins inline, regenerated from the lock.
conda-env: envs/lipsim.yaml
envs/lipsim.yaml: envs/requirements.lock envs/make_conda_env.py
	$(PYTHON) envs/make_conda_env.py

clean-demo:
	rm -rf results/demo
