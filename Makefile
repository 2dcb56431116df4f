# The two commands of the quick start are `make demo` and `make test`; both set up
# .venv first. Everything the project needs is installed from here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIPELINE ?= fraud
PYTEST_ARGS ?=
# The locks: exact versions with hashes. dev.lock (runtime + every extra) is what `make`
# and CI install; runtime.lock is what the image installs. `make lock` refreshes both.
DEV_LOCK     := requirements/dev.lock
RUNTIME_LOCK := requirements/runtime.lock
UV_VERSION   := 0.13.10
LOCK_FLAGS   := --generate-hashes --no-header --quiet --python-version 3.11 \
                --python-platform x86_64-manylinux_2_28

.PHONY: all venv demo test lint bench lock clean

all: test

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "streamscore needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever the lock or the project's metadata changes. Hash-checked, no
# resolution: a fresh clone installs exactly the versions CI tested. pip itself is the one
# the venv comes with (it only installs here, it resolves nothing).
$(STAMP): $(DEV_LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes \
	    --no-deps -r $(DEV_LOCK)
	@# A stale egg-info in the tree (older installs wrote one) would shadow the entry points.
	rm -rf streamscore.egg-info
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
	    --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamscore demo --pipeline $(PIPELINE)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check stream features scorers schemas benchmarks tests
	$(BIN)/mypy
	$(BIN)/hadolint --config deploy/.hadolint.yaml deploy/Dockerfile

bench: $(STAMP)
	$(BIN)/streamscore bench all --quick

# Refresh the locks on purpose (newest versions within pyproject's bounds), then prove
# them with the whole suite: a lock that fails `make test` is not committed.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml requirements/build.in --all-extras $(LOCK_FLAGS) \
	    -o $(DEV_LOCK)
	$(BIN)/uv pip compile pyproject.toml requirements/build.in $(LOCK_FLAGS) -c $(DEV_LOCK) \
	    -o $(RUNTIME_LOCK)
	$(MAKE) test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info .streamscore
