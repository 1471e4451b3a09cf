"""The LightningModule: wires the MLP to its task's loss, an optimizer and metrics. No maths.

This is the file to copy: each hook does one textbook thing, and Lightning does the rest
(the loop, backward, optimizer and scheduler steps, clipping, accumulation, logging, devices).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import Tensor, nn

from mlplab.build import OptimizerFactory, build_scheduler
from mlplab.tasks import EpochMetrics, loss_function


class MLPModule(L.LightningModule):
    """Trains `model` on `task` with the optimizer (and, optionally, the scheduler) configured.

    `out_features` is the model's output width (the number of classes, for classification).

    `scheduler` is Lightning's lr_scheduler dict (`interval`, `frequency`, `monitor`, …)
    whose "scheduler" entry builds the scheduler from the optimizer (see `build_scheduler`).
    """

    def __init__(
        self,
        model: nn.Module,
        task: str,
        out_features: int,
        optimizer: OptimizerFactory,
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_function(task)
        self.optimizer_factory = optimizer
        self.scheduler_config = scheduler
        self.val_metrics = EpochMetrics(task, out_features, prefix="val")
        self.test_metrics = EpochMetrics(task, out_features, prefix="test")

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.loss_fn(self.model(x), y)
        # Under DDP, the mean over the processes: the loss of the whole global batch.
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

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

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.model.parameters())
        if not self.scheduler_config:
            return optimizer
        total_steps = self.trainer.estimated_stepping_batches  # for schedules planned per step
        scheduler = build_scheduler(self.scheduler_config, optimizer, int(total_steps))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
