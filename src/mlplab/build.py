"""Config → objects. Each thing both engines use is built here, once, from the same config."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

if TYPE_CHECKING:
    import lightning as L

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def build_model(cfg: DictConfig) -> nn.Module:
    """The `model/` group's network, initialised from `cfg.seed` alone (or `cfg.init_from`).

    The global RNG is forked, seeded and restored around construction, so both engines
    start from bit-identical weights whatever ran before them.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = instantiate(cfg.model)
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


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The `data/` group's LightningDataModule."""
    return instantiate(cfg.data)
