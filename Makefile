# Two entry points (README): `make quickstart` and `make test`. Both create .venv if needed.
# torch 2.13.0 is installed first and on its own: an unpinned torch requirement can pull a
# multi-GB CUDA build, while 2.13.0 resolves to the CPU build available here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet
INSTALLED := $(VENV)/.installed
DEV_INSTALLED := $(VENV)/.dev-installed

.PHONY: install quickstart test test-fhe bench bench-fhe clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) "torch==2.13.0"
	$(PIP) -e .
	touch $@

# Tools and peer libraries (test oracles, benchmark baselines); peers go in with --no-deps so
# their own torch pins cannot replace the CPU build.
$(DEV_INSTALLED): $(INSTALLED) requirements/peers.txt
	$(PIP) -e ".[dev,ray]"
	$(PIP) --no-deps -r requirements/peers.txt
	test ! -f requirements/peers-deps.txt || $(PIP) -r requirements/peers-deps.txt
	touch $@

# Encrypted inference runs in its own environment: concrete-python 2.11 needs numpy < 2.
FHE_VENV ?= .venv-fhe
FHE_BIN := $(FHE_VENV)/bin
FHE_INSTALLED := $(FHE_VENV)/.installed
FHE_TESTS := tests/test_crypto.py tests/test_crypto_fhe.py tests/test_crypto_service.py tests/test_crypto_service_policy.py

$(FHE_INSTALLED): pyproject.toml
	test -x $(FHE_BIN)/python || $(PYTHON) -m venv $(FHE_VENV)
	$(FHE_BIN)/python -m pip install --quiet "torch==2.13.0"
	$(FHE_BIN)/python -m pip install --quiet -e ".[fhe]" "pytest>=8.0"
	touch $@

install: $(DEV_INSTALLED)

quickstart: $(INSTALLED)
	$(BIN)/robustlab run configs/quickstart.yaml
	$(BIN)/robustlab report runs/quickstart

test: $(DEV_INSTALLED) $(FHE_INSTALLED)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	$(FHE_BIN)/python -m pytest -q $(FHE_TESTS)

# The encrypted-inference tests alone, with concrete-python (they skip in .venv).
test-fhe: $(FHE_INSTALLED)
	$(FHE_BIN)/python -m pytest -q $(FHE_TESTS)

bench: $(DEV_INSTALLED)
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/attacks.py
	$(BIN)/python benchmarks/evaluator.py
	$(BIN)/python benchmarks/evaluator.py --grid --threads 1
	$(BIN)/python benchmarks/forward_views.py
	$(BIN)/python benchmarks/executors.py

bench-fhe: $(FHE_INSTALLED)
	$(FHE_BIN)/python benchmarks/fhe.py
	$(FHE_BIN)/python benchmarks/fhe_service_load.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
