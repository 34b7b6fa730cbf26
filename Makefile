# Tasks of the template repository itself (the generated project has its own Makefile).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# checkov's dependency caps clash with the dev group's: it gets a venv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help project test test-fast lint lock bench mutations

help: ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

project: $(STAMP) ## Generate a project with the default answers: make project DEST=../myapp [ARGS='--data database=sqlite']
	$(if $(DEST),,$(error Set DEST to the directory to generate, e.g. make project DEST=../myapp))
	$(VENV)/bin/copier copy --defaults --vcs-ref HEAD $(ARGS) $(CURDIR) $(DEST)

$(CHECKOV_STAMP): requirements-checkov.txt $(STAMP)
	$(VENV)/bin/uv venv --quiet --allow-existing --python $(PYTHON) $(CHECKOV_VENV)
	$(VENV)/bin/uv pip install --quiet --python $(CHECKOV_VENV)/bin/python --require-hashes \
		-r requirements-checkov.txt
	touch $@

test: $(STAMP) $(CHECKOV_STAMP) ## Run every test of the template: renderings, generated suites, images (needs Docker)
	$(VENV)/bin/pytest

test-fast: $(STAMP) $(CHECKOV_STAMP) ## Run the fast tests only (seconds; no installs, no Docker)
	$(VENV)/bin/pytest -n auto -m "not slow and not docker"

mutations: $(STAMP) ## Break the template on purpose (tests/mutations.yml) and check the tests catch each breakage
	$(VENV)/bin/python scripts/mutations.py

lint: $(STAMP) ## Lint and format-check the template's own Python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lock: $(STAMP) ## Refresh the hash-pinned locks (this repo's and each generated variant's)
	$(VENV)/bin/uv pip compile pyproject.toml --group dev --universal --generate-hashes \
		--python-version 3.11 --quiet --output-file requirements-dev.txt
	$(VENV)/bin/uv pip compile pyproject.toml --group checkov --universal --generate-hashes \
		--python-version 3.11 --quiet --output-file requirements-checkov.txt
	$(VENV)/bin/python scripts/lock.py

bench: $(STAMP) ## Measure build, size, start-up, memory and throughput (needs Docker)
	$(VENV)/bin/python bench/run.py --runs 3 --publish
