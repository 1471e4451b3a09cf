"""The LightningModule: wires the MLP to its task's loss, an optimizer and metrics. No maths."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn

from mlplab.build import OptimizerFactory
from mlplab.tasks import EpochMetrics, loss_function


class MLPModule(L.LightningModule):
    """Trains `model` on `task` with the optimizer that `optimizer` builds.

    The training loss is returned, not `self.log`-ged: the loss curve is recorded by
    `mlplab.fit.Bookkeeping` (`mlplab.curves.LossCurve`), at a fraction of `self.log`'s cost.
    """

    def __init__(
        self, model: nn.Module, task: str, num_classes: int | None, optimizer: OptimizerFactory
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_function(task)
        self.optimizer_factory = optimizer
        self.val_metrics = EpochMetrics(task, num_classes, prefix="val")
        self.test_metrics = EpochMetrics(task, num_classes, prefix="test")

    def __setattr__(self, name: str, value: object) -> None:
        # Lightning sets `_current_fx_name` before and after every hook it calls, ~20 times
        # per optimizer step. nn.Module.__setattr__ first looks for a parameter, buffer or
        # submodule of that name (~2 µs each here); for this plain string it then does what
        # object.__setattr__ does, so go there directly.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.loss_fn(self.model(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_metrics.update(self.model(x), y)

    def on_validation_epoch_end(self) -> None:
        # torchmetrics has already combined all processes' states in compute(); sync_dist
        # only averages those equal values again (and keeps Lightning from warning).
        self.log_dict(self.val_metrics.compute(), sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_metrics.update(self.model(x), y)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.model.parameters())


class ChunkedMLPModule(MLPModule):
    """`MLPModule` taking several optimizer steps per Lightning iteration: the fast path.

    Each training item is a list of consecutive batches (`SyntheticDataModule.group`), and
    `training_step` takes the textbook step on each, in order, through Lightning's manual
    optimization: `manual_backward` and the wrapped optimizer still apply the precision
    plugin and, under DDP, the gradient all-reduce. Same batches, same kernels, same order:
    the weights are bit-equal to one step per iteration. What it saves is Lightning's fixed
    cost per iteration (its loop, hooks and batch transfer, ~0.8 ms on a 2-core CPU), paid
    once per list. What it costs: a callback's `on_train_batch_end` sees one call per list
    (mlplab's own bookkeeping reads every step's loss from `outputs["loss"]`, one per step).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def training_step(self, batch: list[tuple[Tensor, Tensor]], batch_idx: int) -> dict:
        optimizer = self.optimizers()
        trainer = self.trainer
        if trainer.max_steps >= 0:  # trainer.max_steps may cut the list short (-1: no limit)
            batch = batch[: trainer.max_steps - trainer.global_step]
        losses = []
        for x, y in batch:
            loss = self.loss_fn(self.model(x), y)
            self.manual_backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.detach())
        # Lightning steps its loggers' x-axis once per iteration (it will add the 1); keep it
        # counting optimizer steps, as with automatic optimization, so that val/* and test/*
        # are logged at trainer.global_step whatever the steps per iteration.
        trainer.fit_loop.epoch_loop._batches_that_stepped += len(losses) - 1
        return {"loss": torch.stack(losses)}
