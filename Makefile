# The course's commands. `make lab` to learn, `make test` to check everything (what CI runs).
# Both create .venv on first use; torch is pinned to its CPU build by constraints.txt.

PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt
# nbgrader runs `alembic` from PATH, so the venv's bin goes first.
export PATH := $(BIN):$(PATH)
export MPLBACKEND := Agg

.PHONY: lab test unit notebooks test-full test-seeds test-cpus assignments site browser bench clean help

help:
	@echo "make lab          create .venv, install the course, open JupyterLab on notebooks/"
	@echo "make test         create .venv, install the test tools, run all tests (what CI runs)"
	@echo "make assignments  nbgrader student release of every notebook (English, and Chinese as zh_NN) into build/nbgrader/release"
	@echo "make site         every notebook executed (fast mode) and rendered to a static site in build/site (Chinese: build/site/zh)"
	@echo "make bench        install the reference libraries and compare (benchmarks/)"
	@echo "make test-full    every notebook in full mode, as a learner runs it, with each chapter's time"
	@echo "make test-seeds   the trained-model tests and every notebook (fast mode) on seed offsets 1 to 4"
	@echo "make test-cpus    the unit tests and every notebook (fast mode) under torch's other CPU kernels"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.course: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e .
	touch $@

# The test tools and the extra "hf" (transformers, TRL: tests/test_hf_bridge.py runs when it is installed).
$(VENV)/.test: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e ".[test,hf]"
	touch $@ $(VENV)/.course

# JupyterLab without the news prompt and without the update check (each a request to the web):
# settings overrides in the venv's JupyterLab application folder, written once, and two server flags.
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json

$(LAB_OVERRIDES): | $(VENV)/.course
	mkdir -p $(dir $@)
	echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' > $@

lab: $(VENV)/.course $(LAB_OVERRIDES)
	$(BIN)/jupyter lab notebooks/ --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate

# Unit tests, every notebook executed once top to bottom in fast mode by nbval (`--nbval-lax`, a test a
# cell; notebooks/conftest.py keeps each executed copy, which tests/test_notebooks.py checks and builds the
# site from), the nbgrader round trip, JupyterLab in a browser. Two workers (pytest-xdist); --dist loadfile
# keeps each test file together on one worker, and the notebooks with tests/test_notebooks.py after them.
test: $(VENV)/.test
	RLNOTES_FAST=1 $(BIN)/python -m pytest tests notebooks --nbval-lax -n 2 --dist loadfile -p no:cacheprovider -v --durations=15

unit: $(VENV)/.test
	$(BIN)/python -m pytest tests -m "not slow"

# Every notebook in fast mode through nbval, two at a time; the executed copies go to build/site/executed/,
# where `make site` finds them. One notebook: .venv/bin/pytest --nbval-lax notebooks/04_trpo.ipynb
notebooks: $(VENV)/.test
	RLNOTES_FAST=1 $(BIN)/python -m pytest notebooks --nbval-lax -n 2 --dist loadfile -p no:cacheprovider

# Not part of `make test`: every notebook executed top to bottom in full mode (what a learner runs,
# about 27 minutes of CPU for all nine), printing each chapter's wall and CPU time; and every notebook in
# fast mode under RLNOTES_SEED_OFFSET=1..4, so that no claim holds on one seed only.
# Executed copies go to build/notebooks/. Options: tools/run_notebooks.py --help.
test-full: $(VENV)/.test
	$(BIN)/python tools/run_notebooks.py --full

test-seeds: $(VENV)/.test
	for k in 1 2 3 4; do RLNOTES_SEED_OFFSET=$$k $(BIN)/python -m pytest tests -m trained -n 2 --dist loadfile -p no:cacheprovider -q || exit 1; done
	$(BIN)/python tools/run_notebooks.py --fast --offsets 1,2,3,4

# Not part of `make test`: the unit tests and every notebook (fast mode, through nbval) under torch's other CPU
# kernels, ATEN_CPU_CAPABILITY=default (no SIMD) and avx2, which round differently and so train along other
# trajectories, as other machines do. The browser and classroom tests are left out (they test no number).
test-cpus: $(VENV)/.test
	for cap in default avx2; do \
	    echo "=== ATEN_CPU_CAPABILITY=$$cap"; \
	    ATEN_CPU_CAPABILITY=$$cap RLNOTES_FAST=1 $(BIN)/python -m pytest tests notebooks --nbval-lax -n 2 --dist loadfile \
	        -p no:cacheprovider -q --deselect tests/test_classroom.py --deselect tests/test_browser.py || exit 1; \
	done

$(VENV)/.bench: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e ".[bench]"
	touch $@ $(VENV)/.course

# rlnotes beside Stable-Baselines3 / sb3-contrib, one run; results in benchmarks/results/ (about an hour).
bench: $(VENV)/.bench
	$(BIN)/rlnotes bench --out benchmarks/results

# The course folder for nbgrader (build/nbgrader): every chapter with exercises released (the Chinese ones
# of notebooks/zh/ too, as zh_NN_name); then nbgrader's own commands, inside build/nbgrader (README,
# "For teachers").
assignments: $(VENV)/.test
	$(BIN)/python -m rlnotes.assignments build/nbgrader

# The course as a static website: every notebook executed in fast mode, rendered with nbconvert,
# and an index page (the README's chapter table); open build/site/index.html. The Chinese edition is in
# build/site/zh/ (its pages take the English executions' outputs), with a language switch on every page.
# Executed copies are kept in build/site/executed/ and re-executed only when a notebook or rlnotes changes.
site: $(VENV)/.course
	$(BIN)/python docs/site/build.py --out build/site

clean:
	rm -rf build .pytest_cache
