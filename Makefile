# Two entry points (README): `make quickstart` and `make test`. Both create .venv if needed.
# torch 2.13.0 is installed first and on its own: an unpinned torch requirement can pull a
# multi-GB CUDA build, while 2.13.0 resolves to the CPU build available here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.robustlab-installed

.PHONY: install quickstart test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/robustlab run configs/quickstart.yaml
	$(BIN)/robustlab eval runs/quickstart/thesis-shallow-s0

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/training.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
