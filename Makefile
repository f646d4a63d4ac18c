# dipo — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch is enough for the demo and the tests; any torch in [2.4, 2.14.1] works.
TORCH  ?= torch==2.13.0
EXTRAS ?= trl,verl,tasks,plots,progress,dev

.PHONY: setup demo test lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)" || $(PIP) install -q "torch>=2.4,<=2.14.1"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

demo: setup
	$(PY) -m dipo.cli.main demo

test: setup
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

format: setup
	$(PY) -m ruff format src tests benchmarks
	$(PY) -m ruff check --fix src tests benchmarks

bench: setup
	$(PY) benchmarks/core_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
