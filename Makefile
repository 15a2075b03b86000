# Everything a fresh machine with Python 3, pip and make needs.
# `make test` and `make demo` create (or reuse) the virtualenv in .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv test lint typing docs demo sandbox clean

help:
	@echo "make demo     sign up in the example app; a worker sends the email (KEEP=1 keeps it up)"
	@echo "make test     lint, type-check, build the docs and run the whole suite"
	@echo "make sandbox  run the local PostStack sandbox on http://127.0.0.1:8025"
	@echo "make docs     build the HTML docs into docs/_build/html"
	@echo "make bench    run every benchmark and draw the plots (QUICK=1 for a fast pass)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,docs,dev]'
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typing: $(STAMP)
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

test: lint typing docs
	$(BIN)/pytest
	$(MAKE) compat

# The oldest rq we support (2.8) differs from 3.x in the worker API, so the
# tests that run workers also run against it, in a venv of its own.
COMPAT := .venv-rq28
$(COMPAT)/.installed: pyproject.toml
	$(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/python -m pip install --quiet --upgrade pip
	$(COMPAT)/bin/python -m pip install --quiet -e '.[test]' 'rq==2.8.*'
	@touch $@

.PHONY: compat
compat: $(COMPAT)/.installed
	$(COMPAT)/bin/python -m pytest -q -p no:cacheprovider tests/test_worker.py tests/test_tasks.py tests/test_client.py \
		tests/test_queueing.py tests/test_status.py tests/e2e/test_delivery.py tests/test_testing.py

demo: $(STAMP)
	$(BIN)/python -m example_app.demo $(if $(KEEP),--keep)

sandbox: $(STAMP)
	$(BIN)/python -m flask_poststack.sandbox --port 8025

clean:
	rm -rf $(VENV) $(COMPAT) docs/_build .mypy_cache .ruff_cache .pytest_cache

.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/run_all.py $(if $(QUICK),--quick)

# Soak: 5,000 emails through faults and SIGKILLed workers (docs/reliability.md).
SOAK_SECONDS ?= 120
SOAK_EMAILS ?= 5000
.PHONY: soak
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --seconds $(SOAK_SECONDS) --emails $(SOAK_EMAILS)
