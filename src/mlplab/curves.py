"""The per-step training-loss curve, recorded by both engines and written to the loggers.

Calling a logger (or Lightning's `self.log`) on every step costs more than a small model's
whole training step. So losses stay on the device as detached tensors and are written in
one batch every `flush_every` steps and at the end of each epoch: one device→host copy, the
same `train/loss` tag and step numbers as per-step logging, a fraction of its cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from torch import Tensor


class LossCurve:
    """Step → training loss; `values()` returns every loss recorded, in step order."""

    def __init__(self, loggers: Sequence[Logger], flush_every: int = 256) -> None:
        self.loggers = list(loggers)
        self.flush_every = flush_every
        self.pending: list[Tensor] = []
        self.written: list[float] = []

    def append(self, loss: Tensor) -> None:
        """Record the loss of the optimizer step just taken (step = number of earlier steps)."""
        self.pending.append(loss.detach())
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Copy pending losses to the host and write them as `train/loss`."""
        if not self.pending:
            return
        values = torch.stack(self.pending).tolist()
        first = len(self.written)
        for logger in self.loggers:
            for offset, value in enumerate(values):
                logger.log_metrics({"train/loss": value}, step=first + offset)
        self.written += values
        self.pending.clear()

    def values(self) -> Tensor:
        """All recorded losses as a float32 tensor of shape (steps,)."""
        self.flush()
        return torch.tensor(self.written, dtype=torch.float32)


class LossCurveCallback(L.Callback):
    """Feeds a `LossCurve` from Lightning's training loop."""

    def __init__(self, curve: LossCurve) -> None:
        self.curve = curve

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.curve.append(outputs["loss"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.curve.flush()
