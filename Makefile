# lookalike-live task runner. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SHARED ?= $(abspath ../shared)
export LOOKALIKE_SHARED ?= $(SHARED)

.PHONY: help install test test-fast lint typecheck models app bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/lookalike-live: pyproject.toml scripts/fix_opencv.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,export]'
	$(BIN)/python scripts/fix_opencv.py
	@touch $@

install: $(BIN)/lookalike-live  ## create .venv with the package, dev and export extras

test: install  ## run the whole test suite (the README's test command)
	$(BIN)/python -m pytest

test-fast: install  ## tests without the slow / server / gui ones
	$(BIN)/python -m pytest -m "not slow and not milvus_server and not gui"

lint: install  ## ruff
	$(BIN)/ruff check lookalike_live tests scripts

typecheck: install  ## mypy
	$(BIN)/mypy

models: install  ## install models: from $(SHARED)/models when present, else download
	@if [ -d "$(SHARED)/models" ]; then \
	  $(BIN)/lookalike-live models fetch --from "$(SHARED)/models"; \
	else \
	  $(BIN)/lookalike-live models fetch && $(BIN)/lookalike-live models convert facenet-vggface2; \
	fi

bench: install  ## run the benchmarks, JSON to bench-results/
	$(BIN)/python scripts/bench.py --out bench-results/bench.json

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
