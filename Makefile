# Everything a fresh machine with Python 3, pip and make needs.
# `make test` and `make demo` create (or reuse) the virtualenv in .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv test lint typing docs demo sandbox clean chromium postgresql screenshots

help:
	@echo "make demo     sign up in the example app; a worker sends the email (KEEP=1 keeps it up)"
	@echo "make test     lint, type-check, build the docs and run the whole suite"
	@echo "make sandbox  run the local PostStack sandbox on http://127.0.0.1:8025"
	@echo "make docs     build the HTML docs into docs/_build/html"
	@echo "make postgresql   install Debian's PostgreSQL for tests/db when missing"
	@echo "make screenshots  regenerate the inbox and preview screenshots in docs/_static"
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

# The browser tests (tests/browser) drive Debian's Chromium through
# Playwright's Python package; the browser is installed here when missing
# (as root, or through sudo), never downloaded by Playwright itself.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@test -x $(CHROMIUM) || \
		($(SUDO) apt-get update -q && \
		 DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium)

# tests/db also run the outbox against a real PostgreSQL server (a throwaway
# cluster per test process, tests/postgres.py): Debian's package, installed
# here when missing, like Chromium.
PG_INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
postgresql:
	@test -n "$(PG_INITDB)" || \
		($(SUDO) apt-get update -q && \
		 DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q postgresql)

screenshots: $(STAMP) chromium
	$(BIN)/python -m tests.browser.screenshots docs/_static

# Most tests wait on real processes (Redis, workers, the sandbox), so the
# main run (two pytest-xdist workers) and the two compat runs go side by
# side: together they use the two cores about as fully as the main run alone
# would, which keeps `make test` under 5 minutes. Every test picks its own ports.
test: lint typing docs chromium postgresql
	$(MAKE) -j3 --output-sync=target pytest compat

.PHONY: pytest
PYTEST_WORKERS ?= 2
pytest: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS)

# The oldest rq we support (2.8) and the newest 2.x (2.12) differ from 3.x in
# the worker API, so the tests that run workers also run against each, in a
# venv of its own (about 40 s each).
COMPAT_TESTS := tests/test_worker.py tests/test_tasks.py tests/test_client.py \
	tests/test_queueing.py tests/test_status.py tests/test_pipeline.py tests/test_scheduler.py \
	tests/e2e/test_delivery.py tests/test_testing.py tests/test_cancel.py \
	tests/test_threadpool.py tests/e2e/test_concurrency.py tests/test_taking.py \
	tests/test_coalesce.py tests/test_finishing.py
COMPAT_VENVS := .venv-rq28 .venv-rq212

.venv-rq28/.installed: RQ_PIN := rq==2.8.*
.venv-rq212/.installed: RQ_PIN := rq==2.12.*
$(addsuffix /.installed,$(COMPAT_VENVS)): pyproject.toml
	$(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet --upgrade pip
	$(@D)/bin/python -m pip install --quiet -e '.[test]' '$(RQ_PIN)'
	@touch $@

.PHONY: compat compat-rq28 compat-rq212
compat: compat-rq28 compat-rq212

compat-rq28: .venv-rq28/.installed
	.venv-rq28/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS)

compat-rq212: .venv-rq212/.installed
	.venv-rq212/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS)

demo: $(STAMP)
	$(BIN)/python -m example_app.demo $(if $(KEEP),--keep)

sandbox: $(STAMP)
	$(BIN)/python -m flask_poststack.sandbox --port 8025

clean:
	rm -rf $(VENV) $(COMPAT_VENVS) docs/_build .mypy_cache .ruff_cache .pytest_cache

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
