"""Config → objects. Each thing both engines use is built here, once, from the same config."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from mlplab.data import SyntheticDataModule
from mlplab.model import MLP
from mlplab.tasks import out_features

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def build_model(cfg: DictConfig) -> MLP:
    """The MLP of `cfg`, initialised from `cfg.seed` alone.

    The global RNG is forked, seeded and restored around construction, so both engines
    start from bit-identical weights whatever ran before them.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return MLP(
            in_features=cfg.data.in_features,
            hidden=cfg.model.hidden,
            out_features=out_features(cfg.data.task, cfg.data.get("num_classes")),
            activation=instantiate(cfg.activation),
            num_hidden_layers=cfg.model.num_hidden_layers,
        )


def optimizer_factory(cfg: DictConfig) -> OptimizerFactory:
    """`params -> optimizer` as configured by the `optimizer/` group.

    `_convert_="all"` turns lists such as Adam's betas into plain Python values, so the
    optimizer's state dict (and every checkpoint) holds no OmegaConf objects.
    """
    return instantiate(cfg.optimizer, _convert_="all")


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
