# The two commands of the quick start are `make demo` and `make test`; both set up
# .venv first. Everything the project needs is installed from here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIPELINE ?= fraud
PYTEST_ARGS ?=

.PHONY: all venv demo test lint bench clean

all: test

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "streamscore needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever the project's metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamscore demo $(PIPELINE)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check stream features scorers schemas benchmarks tests
	$(BIN)/mypy
	$(BIN)/hadolint --config deploy/.hadolint.yaml deploy/Dockerfile

bench: $(STAMP)
	$(BIN)/streamscore bench all --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info .streamscore
