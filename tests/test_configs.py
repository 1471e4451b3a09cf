"""Every option of every config group composes, and builds the objects it promises."""

from __future__ import annotations

import re
import subprocess
import sys

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import OmegaConf

from mlplab.build import build_datamodule, build_model, optimizer_factory
from mlplab.cli import CONFIG_DIR, job_name
from mlplab.fit import raw_device
from mlplab.model import MLP
from mlplab.train import build_loggers

from .conftest import ROOT, option_names

GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")
MISSING_KEY = object()
CASES = [(group, option) for group in GROUPS for option in option_names(group)]


def test_the_groups_the_readme_promises_exist() -> None:
    assert set(GROUPS) >= {
        "optimizer",
        "activation",
        "accelerator",
        "data",
        "trainer",
        "logger",
        "model",
    }
    assert set(option_names("optimizer")) == {
        "sgd",
        "sgd_momentum",
        "adam",
        "adamw",
        "rmsprop",
        "adagrad",
    }
    assert set(option_names("activation")) == {
        "relu",
        "tanh",
        "gelu",
        "sigmoid",
        "silu",
        "leaky_relu",
    }
    assert set(option_names("accelerator")) == {"cpu", "gpu", "mps", "auto", "ddp_cpu", "ddp"}
    assert set(option_names("data")) == {"regression", "classification", "binary"}
    assert set(option_names("logger")) == {"tensorboard", "csv", "none"}


def test_the_keys_later_work_relies_on(make_cfg) -> None:
    cfg = make_cfg(tiny=False)
    for key in (
        "seed",
        "engine",
        "trainer.max_epochs",
        "data.batch_size",
        "data.num_samples",
        "model.hidden",
        "optimizer.lr",
    ):
        assert OmegaConf.select(cfg, key, default=MISSING_KEY) is not MISSING_KEY, key
    assert cfg.engine == "lightning" and cfg.data.task == "regression"
    assert (
        cfg.optimizer._target_ == "torch.optim.Adam" and cfg.activation._target_ == "torch.nn.ReLU"
    )
    assert cfg.trainer.accelerator == "cpu"


@pytest.mark.parametrize(("group", "option"), CASES)
def test_option_composes_and_instantiates(make_cfg, tmp_path, group, option) -> None:
    cfg = make_cfg(f"{group}={option}")
    assert cfg.paths.output_dir == str(tmp_path / "job")
    model = build_model(cfg)
    assert isinstance(model, MLP)
    optimizer = optimizer_factory(cfg)(model.parameters())
    assert type(optimizer).__name__.lower() == cfg.optimizer._target_.rsplit(".", 1)[1].lower()
    assert isinstance(instantiate(cfg.activation), torch.nn.Module)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    x, y = next(iter(datamodule.train_dataloader()))
    assert model(x).shape[0] == y.shape[0] == cfg.data.batch_size
    loggers = build_loggers(cfg)
    expected = {"tensorboard": [TensorBoardLogger], "csv": [CSVLogger], "none": []}
    chosen = option if group == "logger" else "tensorboard"
    assert [type(logger) for logger in loggers] == expected[chosen]
    accelerator = cfg.trainer.accelerator
    available = {
        "cpu": True,
        "auto": True,
        "gpu": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    single_process = cfg.trainer.strategy == "auto"
    if available[accelerator]:  # a Trainer refuses accelerators the machine lacks
        trainer = L.Trainer(**cfg.trainer, logger=False, default_root_dir=tmp_path)
        if not cfg.trainer.fast_dev_run:  # which runs one batch, one epoch
            assert trainer.max_epochs == cfg.trainer.max_epochs
        assert trainer.world_size == (1 if single_process else cfg.trainer.devices)
    if single_process:  # the raw engine runs where Lightning would, on one device
        expected = {"cpu": {"cpu"}, "auto": {"cpu", "cuda", "mps"}, "gpu": {"cuda"}, "mps": {"mps"}}
        assert raw_device(cfg.trainer).type in expected[accelerator]


def test_sweep_jobs_are_named_by_their_overrides_in_command_line_order() -> None:
    assert job_name(["optimizer=sgd", "activation=tanh"]) == "optimizer=sgd,activation=tanh"
    assert job_name(["data.root=/a/b"]) == "data.root=_a_b"  # never a nested directory
    assert job_name([]) == "defaults"
    long = job_name(["+note=" + "😀" * 70])  # 286 bytes: over the file system's 255 a name
    assert len(long.encode()) <= 120 and long.startswith("+note=😀")


def test_help_lists_every_group_and_option() -> None:
    out = subprocess.run(
        [sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    for group in GROUPS:
        line = next(line for line in out.stdout.splitlines() if line.startswith(f"{group}: "))
        assert line == f"{group}: " + ", ".join(option_names(group))


def test_cfg_job_prints_the_composed_config(tmp_path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--cfg",
            "job",
            "optimizer=sgd",
            "activation=tanh",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "_target_: torch.optim.SGD" in out.stdout and "_target_: torch.nn.Tanh" in out.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("experiment", "params"),
    [
        ("optimizers", {"optimizer": "sgd,adam"}),
        ("activations", {"activation": "relu,tanh,gelu"}),
        ("homework", {"optimizer": "sgd,adam", "activation": "relu,tanh,gelu"}),
    ],
)
def test_experiments_declare_their_own_sweep(experiment, params) -> None:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == params
    assert cfg.data.task == "regression"
    # what is compared (over seeds) is the only thing that differs: the rest is pinned; each
    # configuration runs seeds 0-4 as the replicas of one job
    assert cfg.trainer.max_epochs == 40 and cfg.data.seed == 0 and cfg.engine == "lightning"
    assert cfg.replicas == 5 and cfg.seed == 0


def readme_groups() -> dict[str, list[str]]:
    """README "Configuration": each group's row and the options it lists (in backticks)."""
    text = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| `")]
    return {row[1].strip().strip("`"): re.findall(r"`([^`]+)`", row[2]) for row in rows}


def test_the_readme_configuration_table_lists_every_group_and_option() -> None:
    listed = readme_groups()
    launchers = listed.pop("hydra/launcher")
    assert sorted(listed) == GROUPS
    for group, options in listed.items():
        assert sorted(options) == option_names(group), f"README row of {group}"
    assert set(option_names("hydra/launcher")) <= set(launchers)


def test_the_readme_configuration_section_names_every_top_level_key() -> None:
    text = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    train = OmegaConf.load(CONFIG_DIR / "train.yaml")
    keys = [key for key in train if key != "defaults" and not OmegaConf.is_dict(train[key])]
    assert "replicas" in keys
    for key in keys:
        assert f"`{key}`" in text, key
