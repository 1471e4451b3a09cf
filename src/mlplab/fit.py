"""Fitting with Lightning, and what any engine hands back."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mlplab.build import build_datamodule, build_model, optimizer_factory
from mlplab.curves import LossCurve, LossCurveCallback
from mlplab.module import MLPModule

# Lightning's advice that does not apply to mlplab, silenced by message while it trains:
IRRELEVANT_WARNINGS = (
    # our loaders serve in-memory tensors, for which worker processes are pure overhead;
    r".*does not have many workers.*",
    # the loss curve is written by LossCurveCallback, not by Lightning's every-n-steps logging;
    r".*smaller than the logging interval.*",
    # Lightning 2.6 calls a torch.utils._pytree API that torch 2.13 deprecated.
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)
# Lightning's start-up notes (device availability, product tips) would repeat on every job of
# a sweep; the job's first log line names the device instead. Warnings still come through.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


@contextmanager
def lightning_quiet() -> Iterator[None]:
    """Hide `IRRELEVANT_WARNINGS` (only those) for the duration of the block."""
    with warnings.catch_warnings():
        for pattern in IRRELEVANT_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


@dataclass
class FitResult:
    """A trained model and what happened on the way; both engines return one."""

    model: nn.Module
    step_losses: Tensor  # (steps,) training loss of each optimizer step, in order
    metrics: dict[str, float]  # "train/loss" (last step), "val/…" (last epoch), "test/…"
    epochs: int  # epochs run, the last one possibly cut short by trainer.max_steps
    steps: int  # optimizer steps taken


def fit_lightning(cfg: DictConfig, loggers: list[Logger], checkpoint_dir: Path) -> FitResult:
    """Train and test with `lightning.Trainer`, configured by `cfg.trainer`."""
    model = build_model(cfg)
    module = MLPModule(model, cfg.data.task, cfg.data.get("num_classes"), optimizer_factory(cfg))
    datamodule = build_datamodule(cfg)
    curve = LossCurve(loggers)
    callbacks: list[L.Callback] = [LossCurveCallback(curve)]
    if cfg.trainer.enable_progress_bar:
        callbacks.append(RichProgressBar())
    if cfg.trainer.enable_checkpointing:
        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir, save_top_k=0, save_last=True))
    with lightning_quiet():
        trainer = L.Trainer(
            **OmegaConf.to_container(cfg.trainer, resolve=True),
            logger=loggers or False,
            callbacks=callbacks,
            default_root_dir=checkpoint_dir.parent,
        )
        trainer.fit(module, datamodule=datamodule)
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # trainer.max_steps cut the last epoch short, and Lightning validates only after
            # whole epochs: validate the final weights, so val/* describes the returned model.
            trainer.validate(module, datamodule=datamodule, verbose=False)
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        steps, epochs = trainer.global_step, trainer.current_epoch
        (test,) = trainer.test(module, datamodule=datamodule, verbose=False)
    losses = curve.values()
    return FitResult(
        model=model,
        step_losses=losses,
        metrics={"train/loss": float(losses[-1]), **val, **test},
        epochs=epochs,
        steps=steps,
    )
