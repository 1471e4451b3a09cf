# mlplab's two set-up commands: `make train` and `make test`. Each builds .venv first when it is
# missing or older than pyproject.toml, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch (a wheel of it lies on this kind of machine's disk). A GPU user installs
# their CUDA build into .venv before the first `make`, and it is kept (see README.md).
TORCH ?= torch==2.13.0
ARGS ?=

.PHONY: train test test-fast lint format clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[dev]"
	touch $@

train: $(VENV)/.installed  ## train with the default config (or: make train ARGS="optimizer=sgd")
	$(BIN)/python train.py $(ARGS)

test: $(VENV)/.installed  ## the whole suite, slow end-to-end runs included (what CI runs)
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(VENV)/.installed  ## everything but the tests marked slow
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## remove the virtual environment (outputs/ is yours: never removed here)
	rm -rf $(VENV)
