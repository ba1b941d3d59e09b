# The user interface of the project. Every target makes the environment and the data it needs.
#   make reproduce [ARGS="train.epochs=20 ..."]   the three models at the paper's defaults
#   make test                                     lint, then the test suite (under 5 minutes on 2 cores, after set-up)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL ?= cerebral_lstm
ARGS ?=
RUNS ?= results/runs
EXPERIMENT ?= seeds
TASK ?= digits
TASK_MODELS ?= single_lstm,stacked_lstm,cerebral_lstm,novo_lstm
TASK_SEEDS ?= 0,1,2

.PHONY: setup data train reproduce plan figures compare study task bench gpu-check lint test test-slow clean

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

# A study beyond the paper (conf/experiment/): its Hydra sweep, then its figures and report in
# results/studies/$(EXPERIMENT), e.g. make study EXPERIMENT=seeds ARGS="seed=0,1,2 train.epochs=5"
study: data
	$(PY) -m cerebral.train -m experiment=$(EXPERIMENT) $(ARGS)
	$(MAKE) --no-print-directory figures compare RUNS=results/studies/$(EXPERIMENT)

# Sequence classification (conf/task/): every core and seed on TASK, then the accuracy table and
# figures in results/tasks/$(TASK), e.g. make task TASK=mnist1d (mnist, imdb, japanese_vowels download into data/)
task: data
	$(PY) -m cerebral.train -m task=$(TASK) model=$(TASK_MODELS) seed=$(TASK_SEEDS) $(ARGS)
	$(MAKE) --no-print-directory figures compare RUNS=results/tasks/$(TASK)

# Training-step speed side by side (stop background training first); BENCH_ARGS=--quick for < 1 minute.
bench: setup
	$(PY) scripts/bench.py $(BENCH_ARGS)

# One prepared check for a CUDA machine (scripts/gpu_check.py): tests that need CUDA, the benchmark with
# cuDNN rows, 3 epochs of each model in fp32 and bf16. Uses GPU_PYTHON as it is and installs nothing;
# GPU_ARGS="--device cpu --tiny" runs its CPU form in seconds.
GPU_PYTHON ?= python3
DATA_DIR ?= data
GPU_OUT ?= results/gpu-check
gpu-check:
	$(GPU_PYTHON) scripts/gpu_check.py --data $(DATA_DIR) --out $(GPU_OUT) $(GPU_ARGS)

# ruff (pinned in requirements.txt, rules in pyproject.toml); make test runs it first.
lint: setup
	$(PY) -m ruff check .

# One pytest-xdist worker per core, each on one thread (tests/conftest.py).
test: data lint
	$(PY) -m pytest -n auto

# The checks that take minutes at paper size (e.g. the first epochs against the published curves).
test-slow: data
	$(PY) -m pytest -m slow

clean:
	rm -rf results/runs outputs multirun .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
