"""Your own parts, each one YAML (plus its class) in a config directory of your own.

`tests/fixtures/custom/` is what a user adds, outside `src/mlplab`: a residual MLP with
dropout and a DataModule reading a CSV file (`parts.py`), and `configs/` with them,
`optimizer/nadam.yaml` and `activation/elu.yaml`. Hydra finds that directory through
`hydra.searchpath`; nothing in mlplab names any of them.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import random
from pathlib import Path

import pytest
import torch
from hydra import initialize_config_dir

from mlplab.build import build_datamodule, build_model, optimizer_factory
from mlplab.cli import CONFIG_DIR, checked_jobs, unknown_options
from mlplab.config import problems
from mlplab.fit import fit_lightning, fit_raw

from . import forked
from .conftest import ROOT, compose_config
from .fixtures.custom.parts import CSVDataModule, ResMLP

CUSTOM = Path(__file__).parent / "fixtures" / "custom" / "configs"
SEARCH = f"hydra.searchpath=[file://{CUSTOM}]"
OWN_PARTS = ["model=resmlp", "data=mycsv", "optimizer=nadam", "activation=elu"]
ROWS = 300  # 240 for training: 8 batches of 32 (the last one of 16)


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory) -> Path:
    """y = a·b + c/2 + noise, from three Gaussian columns."""
    path = tmp_path_factory.mktemp("data") / "table.csv"
    rng = random.Random(0)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["a", "b", "c", "y"])
        for _ in range(ROWS):
            a, b, c = (rng.gauss(0, 1) for _ in range(3))
            writer.writerow([a, b, c, a * b + c / 2 + rng.gauss(0, 0.1)])
    return path


def own_config(tmp_path: Path, csv_file: Path, *overrides: str):
    return compose_config(
        [SEARCH, *OWN_PARTS, f"data.path={csv_file}", "trainer.max_epochs=2", *overrides],
        tmp_path / "job",
    )


def test_each_own_part_is_built_from_its_yaml(tmp_path, csv_file) -> None:
    cfg = own_config(tmp_path, csv_file)
    assert problems(cfg) == []
    model = build_model(cfg)
    assert isinstance(model, ResMLP) and model.stem.in_features == 3
    assert [type(m).__name__ for m in model.blocks[0]] == ["Linear", "ELU", "Dropout"]
    assert isinstance(build_datamodule(cfg), CSVDataModule)
    assert isinstance(optimizer_factory(cfg)(model.parameters()), torch.optim.NAdam)


def test_own_parts_train_reproducibly_with_both_engines(tmp_path, csv_file) -> None:
    cfg = own_config(tmp_path, csv_file, "logger=none", "callbacks=none")
    first = fit_lightning(cfg, loggers=[])
    torch.rand(100)  # whatever ran before, the dropout masks are the seed's
    again = fit_lightning(cfg, loggers=[])
    assert first.steps == 2 * math.ceil(240 / 32) == len(first.step_losses)
    assert torch.equal(first.step_losses, again.step_losses)
    raw = fit_raw(cfg, loggers=[])
    assert raw.steps == first.steps and torch.isfinite(raw.step_losses).all()
    # Dropout is on while training: without it, the same run learns something else.
    plain = fit_lightning(
        own_config(tmp_path, csv_file, "logger=none", "callbacks=none", "model.dropout=0"),
        loggers=[],
    )
    assert not torch.equal(first.step_losses, plain.step_losses)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+model.droput=0.2"],
            "unknown key model.droput (=0.2): ResMLP takes in_features, out_features, "
            "activation, width, depth, dropout; did you mean model.dropout?",
        ),
        (["model.dropout=nan"], "model.dropout=nan is not allowed: expected a finite number"),
        (["data.path=???"], "data.path is missing: give it on the command line, data.path=<value>"),
        (
            ["data.out_features=2"],
            "data.out_features=2 is not allowed for data.task=regression: expected 1 "
            "(one output per sample)",
        ),
    ],
    ids=lambda case: " ".join(case) if isinstance(case, list) else "",
)
def test_a_mistake_with_an_own_part_is_answered_from_its_class(
    tmp_path, csv_file, overrides, message
) -> None:
    assert problems(own_config(tmp_path, csv_file, *overrides)) == [message]


def test_a_sweep_over_own_options_is_checked_in_its_own_config_directory() -> None:
    jobs = [["data=mycsv", f"data.path=table{k}.csv", "optimizer=nadam"] for k in range(2)]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        checked = list(checked_jobs("train", jobs, [f"file://{CUSTOM}"], check=copy.deepcopy))
    assert [cfg.data.path for _, cfg in checked] == ["table0.csv", "table1.csv"]  # was ???
    assert all(cfg.optimizer._target_ == "torch.optim.NAdam" for _, cfg in checked)


def test_options_of_an_own_config_directory_are_known_to_the_early_check() -> None:
    assert unknown_options([SEARCH, "model=resmlp", "optimizer=nadam,adam"]) == []
    assert unknown_options([SEARCH, "model=resmpl"]) == [
        "model=resmpl: there is no such option; choose one of mlp, resmlp"
    ]
    assert unknown_options(["model=resmlp"]) == [
        "model=resmlp: there is no such option; choose one of mlp"
    ]


@pytest.mark.slow
def test_a_sweep_over_own_parts_trains_reports_and_logs(tmp_path, csv_file) -> None:
    from .test_cli import tensorboard_runs

    sweep = tmp_path / "sweep"
    done = forked.run(
        ROOT,
        "train.py",
        SEARCH,
        "model=resmlp",
        "data=mycsv",
        f"data.path={csv_file}",
        "optimizer=nadam,adam",
        "activation=elu,relu",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "extras.print_config=false",
        f"hydra.sweep.dir={sweep}",
        "-m",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with open(sweep / "summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(row["optimizer"], row["activation"]) for row in rows] == [
        (o, a) for o in ("nadam", "adam") for a in ("elu", "relu")
    ]
    assert {row["status"] for row in rows} == {"completed"}
    assert (sweep / "loss_curves.png").stat().st_size > 10_000
    runs = tensorboard_runs(sweep)
    assert len(runs) == 4
    assert all(steps["train/loss"] == list(range(16)) for steps in runs.values())
    job = next(p for p in sweep.iterdir() if p.name.startswith("0_"))
    assert json.loads((job / "metrics.json").read_text())["steps"] == 16
    checkpoint = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
    assert "model.blocks.1.0.weight" in checkpoint["state_dict"]  # the residual MLP's
    assert "mu_product" in checkpoint["optimizer_states"][0]["state"][0]  # NAdam's own state
