# The README's commands. `make run` sets everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: setup run test test-all lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# pip (not uv/poetry): the pinned torch/torchvision wheels are found on local disk
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/clframe run -m experiment=quickstart strategy=naive,replay

test: setup
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

test-all: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

# every benchmark in short mode, one table (run it on a quiet machine)
bench: setup
	$(BIN)/python benchmarks/bench_all.py

clean:
	rm -rf runs multirun outputs wandb .pytest_cache
