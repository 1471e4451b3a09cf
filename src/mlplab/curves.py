"""The per-step training-loss curve, recorded by both engines and written to the loggers.

Calling a logger (or Lightning's `self.log`) on every step costs more than a small model's
whole training step. So each loss is read once (to stop a diverging run at once) and kept;
the curve is written in one go every `flush_every` steps, at the end of each epoch and
before each checkpoint: the same `train/loss` tag and steps as per-step logging, at a
fraction of its cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from torch import Tensor


class Diverged(ArithmeticError):
    """The training loss stopped being a finite number."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training loss became {loss} at step {step}")
        self.step, self.loss = step, loss


class LossCurve:
    """Step → training loss; `values()` returns every loss recorded, in step order.

    A resumed run starts its curve at `first_step`, the step its checkpoint was taken at.
    """

    def __init__(
        self, loggers: Sequence[Logger], first_step: int = 0, flush_every: int = 256
    ) -> None:
        self.loggers = list(loggers)
        self.first_step = first_step
        self.flush_every = flush_every
        self.pending: list[float] = []
        self.written: list[float] = []

    def append(self, loss: Tensor) -> None:
        """Record the loss of the step just taken; raise `Diverged` if it is not finite."""
        value = loss.item()
        self.pending.append(value)
        if not math.isfinite(value):
            step = self.first_step + len(self.written) + len(self.pending) - 1
            self.flush()
            raise Diverged(step, value)
        if len(self.pending) >= self.flush_every:
            self.flush()

    @property
    def last(self) -> float | None:
        """The latest loss recorded in this process, if any."""
        if self.pending:
            return self.pending[-1]
        return self.written[-1] if self.written else None

    def flush(self) -> None:
        """Write the pending losses as `train/loss`."""
        if not self.pending:
            return
        values = self.pending
        first = self.first_step + len(self.written)
        for logger in self.loggers:
            for offset, value in enumerate(values):
                logger.log_metrics({"train/loss": value}, step=first + offset)
        self.written += values
        self.pending = []

    def values(self) -> Tensor:
        """The losses recorded in this process, as a float32 tensor of shape (steps,)."""
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
