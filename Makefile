# mlplab's two set-up commands: `make train` and `make test`. Each builds .venv first when it is
# missing or older than pyproject.toml, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch (a wheel of it lies on this kind of machine's disk). A GPU user installs
# their CUDA build into .venv before the first `make`, and it is kept (see README.md).
TORCH ?= torch==2.13.0
ARGS ?=

.PHONY: train test test-fast lint format tensorboard homework lr-tuning clean

# What training needs. The tests' extras come on top (.installed-dev); training does not get
# them for nothing: the optuna extra brings scipy, which torchmetrics then imports into every
# job (the default job took 12-13 s with it, 8-10 s without, on the 2-core CI machine).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -e ".[dev]"
	touch $@

train: $(VENV)/.installed  ## train with the default config (or: make train ARGS="optimizer=sgd")
	$(BIN)/python train.py $(ARGS)

# The suite runs in parallel, one pytest-xdist worker per core: most of its time goes to
# training subprocesses. (A fixture shared by several tests, such as the six-job sweep, is
# built once by whichever worker gets there first; see tests/test_cli.py.)
PYTEST := $(BIN)/python -m pytest -n auto

test: $(VENV)/.installed-dev  ## the whole suite, slow end-to-end runs included (what CI runs)
	$(PYTEST) $(ARGS)

test-fast: $(VENV)/.installed-dev  ## everything but the tests marked slow
	$(PYTEST) -m "not slow" $(ARGS)

# TensorBoard serves one sweep: the latest under $(SWEEPS), or SWEEP=<its name>, or LOGDIR=<any
# directory>. It takes port 6006 or, when that is taken, the next free one; it prints its address.
SWEEPS ?= outputs/sweeps
SWEEP ?= $(notdir $(patsubst %/,%,$(shell ls -td $(SWEEPS)/*/ 2>/dev/null | head -n 1)))
LOGDIR ?= $(if $(SWEEP),$(SWEEPS)/$(SWEEP))

tensorboard: $(VENV)/.installed  ## TensorBoard on 127.0.0.1 for the latest sweep (or SWEEP=<name>, LOGDIR=<dir>)
	@test -n "$(LOGDIR)" || { echo "no sweep in $(SWEEPS) yet: run one (train.py ... -m), or pass LOGDIR=<dir>" >&2; exit 2; }
	@test -d "$(LOGDIR)" || { echo "no directory $(LOGDIR); the sweeps in $(SWEEPS): $$(ls -m $(SWEEPS))" >&2; exit 2; }
	@echo "TensorBoard for $(LOGDIR)"
	$(BIN)/tensorboard --host 127.0.0.1 --logdir "$(LOGDIR)"

homework: $(VENV)/.installed  ## the homework sweep; refreshes the table and picture under docs/
	rm -rf outputs/sweeps/homework
	$(BIN)/python train.py experiment=homework hydra.sweep.dir=outputs/sweeps/homework extras.print_config=false trainer.enable_progress_bar=false -m
	cp outputs/sweeps/homework/loss_curves.png docs/homework_loss_curves.png
	cp outputs/sweeps/homework/summary.md docs/homework_summary.md

lr-tuning: $(VENV)/.installed  ## the tuned SGD vs Adam sweep; refreshes its table and pictures under docs/
	rm -rf outputs/sweeps/lr_tuning
	@# exit 3: some jobs diverged, as some learning rates of the grid do: the report has them
	$(BIN)/python train.py experiment=lr_tuning hydra.sweep.dir=outputs/sweeps/lr_tuning extras.print_config=false trainer.enable_progress_bar=false -m || test $$? -eq 3
	cp outputs/sweeps/lr_tuning/tuning.png docs/lr_tuning.png
	cp outputs/sweeps/lr_tuning/loss_curves.png docs/lr_tuning_loss_curves.png
	cp outputs/sweeps/lr_tuning/summary.md docs/lr_tuning_summary.md

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## remove the virtual environment (outputs/ is yours: never removed here)
	rm -rf $(VENV)
