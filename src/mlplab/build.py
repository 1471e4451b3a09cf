"""Config → objects. Each thing both engines use is built here, once, from the same config."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mlplab.data import SyntheticDataModule
from mlplab.model import MLP
from mlplab.tasks import out_features

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def build_model(cfg: DictConfig) -> MLP:
    """The MLP of `cfg`, initialised from `cfg.seed` alone (or from `cfg.init_from`'s weights).

    The global RNG is forked, seeded and restored around construction, so both engines
    start from bit-identical weights whatever ran before them.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = MLP(
            in_features=cfg.data.in_features,
            hidden=cfg.model.hidden,
            out_features=out_features(cfg.data.task, cfg.data.get("num_classes")),
            activation=instantiate(cfg.activation),
            num_hidden_layers=cfg.model.num_hidden_layers,
        )
    if cfg.get("init_from"):
        model.load_state_dict(checkpoint_weights(Path(cfg.init_from)))
    return model


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model's weights in a checkpoint of either engine (keys without the "model." prefix)."""
    state = torch.load(path, weights_only=True, map_location="cpu")["state_dict"]
    return {name.removeprefix("model."): tensor for name, tensor in state.items()}


def optimizer_factory(cfg: DictConfig) -> OptimizerFactory:
    """`params -> optimizer` as configured by the `optimizer/` group.

    `_convert_="all"` turns lists such as Adam's betas into plain Python values, so the
    optimizer's state dict (and every checkpoint) holds no OmegaConf objects.
    """
    return instantiate(cfg.optimizer, _convert_="all")


def scheduler_config(cfg: DictConfig) -> dict[str, Any] | None:
    """The `scheduler/` group as Lightning's lr_scheduler dict, its "scheduler" a factory.

    None for `scheduler=none`.
    """
    if not cfg.get("scheduler"):
        return None
    config = OmegaConf.to_container(cfg.scheduler, resolve=True)
    config["scheduler"] = instantiate(cfg.scheduler.scheduler, _convert_="all")
    return config


def build_scheduler(
    config: dict[str, Any], optimizer: torch.optim.Optimizer, total_steps: int
) -> dict[str, Any]:
    """Lightning's lr_scheduler dict with the scheduler built for `optimizer`.

    A `total_steps: null` in the config (OneCycleLR's) becomes the run's optimizer steps.
    """
    factory = config["scheduler"]
    if (
        "total_steps" in getattr(factory, "keywords", {})
        and factory.keywords["total_steps"] is None
    ):
        return {**config, "scheduler": factory(optimizer, total_steps=total_steps)}
    return {**config, "scheduler": factory(optimizer)}


def build_datamodule(cfg: DictConfig) -> SyntheticDataModule:
    """The DataModule for the `data/` group's task and sizes."""
    d = cfg.data
    return SyntheticDataModule(
        task=d.task,
        num_samples=d.num_samples,
        in_features=d.in_features,
        noise=d.noise,
        num_classes=d.get("num_classes"),
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        batch_size=d.batch_size,
        num_workers=d.num_workers,
        seed=d.seed,
    )
