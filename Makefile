# Tasks of the template repository itself (the generated project has its own Makefile).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help test test-fast lint lock bench mutations

help: ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

test: $(STAMP) ## Run every test of the template: renderings, generated suites, images (needs Docker)
	$(VENV)/bin/pytest

test-fast: $(STAMP) ## Run the fast tests only (seconds; no installs, no Docker)
	$(VENV)/bin/pytest -n auto -m "not slow and not docker"

mutations: $(STAMP) ## Break the template on purpose (tests/mutations.yml) and check the tests catch each breakage
	$(VENV)/bin/python scripts/mutations.py

lint: $(STAMP) ## Lint and format-check the template's own Python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lock: $(STAMP) ## Refresh the hash-pinned locks (this repo's and each generated variant's)
	$(VENV)/bin/uv pip compile pyproject.toml --group dev --universal --generate-hashes \
		--python-version 3.11 --quiet --output-file requirements-dev.txt
	$(VENV)/bin/python scripts/lock.py

bench: $(STAMP) ## Measure build, size, start-up, memory and throughput (needs Docker)
	$(VENV)/bin/python bench/run.py
