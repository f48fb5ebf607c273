# Two entry points (README): `make quickstart` and `make test`. Both create .venv if needed.
# torch 2.13.0 is installed first and on its own: an unpinned torch requirement can pull a
# multi-GB CUDA build, while 2.13.0 resolves to the CPU build available here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet
INSTALLED := $(VENV)/.installed
DEV_INSTALLED := $(VENV)/.dev-installed

.PHONY: install quickstart test bench clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) "torch==2.13.0"
	$(PIP) -e .
	touch $@

# Tools and peer libraries (test oracles, benchmark baselines); peers go in with --no-deps so
# their own torch pins cannot replace the CPU build.
$(DEV_INSTALLED): $(INSTALLED) requirements/peers.txt
	$(PIP) -e ".[dev]"
	$(PIP) --no-deps -r requirements/peers.txt
	test ! -f requirements/peers-deps.txt || $(PIP) -r requirements/peers-deps.txt
	touch $@

install: $(DEV_INSTALLED)

quickstart: $(INSTALLED)
	$(BIN)/robustlab run configs/quickstart.yaml
	$(BIN)/robustlab report runs/quickstart

test: $(DEV_INSTALLED)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: $(DEV_INSTALLED)
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/attacks.py
	$(BIN)/python benchmarks/evaluator.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
