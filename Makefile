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

demo: $(STAMP)
	$(BIN)/python -m example_app.demo $(if $(KEEP),--keep)

sandbox: $(STAMP)
	$(BIN)/python -m flask_poststack.sandbox --port 8025

clean:
	rm -rf $(VENV) docs/_build .mypy_cache .ruff_cache .pytest_cache
