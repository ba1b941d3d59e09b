# The user interface of the project. Every target makes the environment and the data it needs.
#   make reproduce [ARGS="train.epochs=20 ..."]   the three models at the paper's defaults
#   make test                                     the test suite (about a minute on 2 cores, after set-up)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL ?= cerebral_lstm
ARGS ?=
RUNS ?= results/runs

.PHONY: setup data train reproduce plan figures compare bench test test-slow clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Fetches the upstream files into data/ (CEREBRAL_DATA_MIRROR=DIR copies from a local checkout).
data: setup
	$(PY) -m cerebral.data

train: data
	$(PY) -m cerebral.train model=$(MODEL) $(ARGS)

plan: data
	$(PY) scripts/reproduce.py --plan-only $(ARGS)

# data -> the three models -> figures -> claims report (results/REPORT.md), ending with the claims table.
reproduce: data
	$(PY) scripts/reproduce.py $(ARGS)
	$(MAKE) --no-print-directory figures compare

# Figs. 12-14 and an overview (linear and log loss axis) from the published curves and the runs in RUNS.
figures: data
	$(PY) scripts/plot.py --runs $(RUNS)
	$(PY) scripts/plot.py --runs $(RUNS) --logy

# The paper's claims on the published curves and on the runs in RUNS; REPORT.md beside them.
compare: data
	$(PY) scripts/compare.py --runs $(RUNS)

# Training-step speed side by side (stop background training first); BENCH_ARGS=--quick for < 1 minute.
bench: setup
	$(PY) scripts/bench.py $(BENCH_ARGS)

test: data
	$(PY) -m pytest

# The checks that take minutes at paper size (e.g. the first epochs against the published curves).
test-slow: data
	$(PY) -m pytest -m slow

clean:
	rm -rf results/runs outputs multirun .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
