# The course's commands. `make lab` to learn, `make test` to check everything (what CI runs).
# Both create .venv on first use; torch is pinned to its CPU build by constraints.txt.

PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt
# nbgrader runs `alembic` from PATH, so the venv's bin goes first.
export PATH := $(BIN):$(PATH)
export MPLBACKEND := Agg

.PHONY: lab test unit notebooks assignments browser bench clean help

help:
	@echo "make lab          create .venv, install the course, open JupyterLab on notebooks/"
	@echo "make test         create .venv, install the test tools, run all tests (what CI runs)"
	@echo "make assignments  nbgrader student release of every notebook into build/nbgrader/release"
	@echo "make bench        install the reference libraries and compare (benchmarks/)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.course: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e .
	touch $@

$(VENV)/.test: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e ".[test]"
	touch $@ $(VENV)/.course

lab: $(VENV)/.course
	$(BIN)/jupyter lab notebooks/

# Unit tests, every notebook executed top to bottom in fast mode, the nbgrader round trip.
# Two workers (pytest-xdist); --dist loadfile keeps each file together on one worker, so a
# notebook's cells run in order in one kernel.
test: $(VENV)/.test
	RLNOTES_FAST=1 $(BIN)/python -m pytest tests notebooks -n 2 --dist loadfile \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider -v

unit: $(VENV)/.test
	$(BIN)/python -m pytest tests -m "not slow"

notebooks: $(VENV)/.test
	RLNOTES_FAST=1 $(BIN)/python -m pytest notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=900

$(VENV)/.bench: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e ".[bench]"
	touch $@ $(VENV)/.course

# rlnotes beside Stable-Baselines3 / sb3-contrib, one run; results in benchmarks/results/ (about an hour).
bench: $(VENV)/.bench
	$(BIN)/rlnotes bench --out benchmarks/results

assignments: $(VENV)/.test
	$(BIN)/python -m rlnotes.assignments build/nbgrader

clean:
	rm -rf build .pytest_cache
