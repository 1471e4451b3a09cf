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
