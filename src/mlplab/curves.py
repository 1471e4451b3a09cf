"""The per-step training-loss curve, recorded by both engines and written to the loggers.

Calling a logger (or Lightning's `self.log`) on every step costs more than a small model's
whole training step. So each loss is read once (to stop a diverging run at once) and kept;
the curve is written in one go every `flush_every` steps, at the end of each epoch and
before each checkpoint: the same `train/loss` tag and steps as per-step logging, at a
fraction of its cost.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import google_crc32c
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor


class Diverged(ArithmeticError):
    """The training loss stopped being a finite number."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training loss became {loss} at step {step}")
        self.step, self.loss = step, loss


def masked_crc32c(data: bytes) -> int:
    """The checksum TensorBoard's record format uses (CRC-32C, rotated and offset)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(event: Event) -> bytes:
    """One TFRecord: length, its checksum, the serialized event, its checksum."""
    data = event.SerializeToString()
    header = struct.pack("<Q", len(data))
    return (
        header
        + struct.pack("<I", masked_crc32c(header))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


class EventCurveFile:
    """An event file of our own in a TensorBoard run directory, appended in batches of points.

    TensorBoard merges every `*tfevents*` file of a run directory, so the curve shows in the
    same run as the logger's own events. Going through the logger's writer instead costs
    ~100 µs a point here (a thread hand-off and a pure-Python checksum per point); this
    writes a batch of points with one write call, at a few microseconds each.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.curve"
        self.path = Path(run_dir) / name
        self.file = None

    def write(self, tag: str, first_step: int, values: Sequence[float]) -> None:
        """Append `values` as the points `first_step`, `first_step + 1`, … of `tag`."""
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "ab")  # noqa: SIM115 (kept open; closed by close())
            self.file.write(record(Event(wall_time=time.time(), file_version="brain.Event:2")))
        now = time.time()
        self.file.write(
            b"".join(
                record(
                    Event(
                        wall_time=now,
                        step=first_step + i,
                        summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)]),
                    )
                )
                for i, value in enumerate(values)
            )
        )
        self.file.flush()  # whole records reach the OS before any checkpoint records our size

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class LossCurve:
    """Step → training loss; `values()` returns every loss recorded, in step order.

    A resumed run starts its curve at `first_step`, the step its checkpoint was taken at.
    """

    def __init__(
        self, loggers: Sequence[Logger], first_step: int = 0, flush_every: int = 256
    ) -> None:
        # A TensorBoard run gets an event file of its own; any other logger, log_metrics.
        tensorboard = [lg for lg in loggers if isinstance(lg, TensorBoardLogger)]
        self.event_files = [EventCurveFile(lg.log_dir) for lg in tensorboard]
        self.loggers = [lg for lg in loggers if lg not in tensorboard]
        self.first_step = first_step
        self.flush_every = flush_every
        # Data-parallel: turns this process's losses of an iteration's steps into their means
        # over the processes (the losses of the global batches); see `append`.
        self.reduce: Callable[[Tensor], Tensor] | None = None
        self.pending: list[float] = []
        self.written: list[float] = []

    def append(self, losses: Tensor) -> None:
        """Record the loss of the step just taken (a 0-d tensor), or of the steps just taken
        (1-d, in order); raise `Diverged` at the first that is not finite.

        Data-parallel, the losses are first averaged over the processes: every process then
        records the same values and stops at the same step. (Deciding on its own losses, one
        process would stop while the others wait for it in their next all-reduce, forever.)
        """
        losses = losses.detach().reshape(-1)
        if self.reduce is not None:
            losses = self.reduce(losses.clone())  # in place, on a copy
        for value in losses.tolist():
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
        for event_file in self.event_files:
            event_file.write("train/loss", first, values)
        for logger in self.loggers:
            for offset, value in enumerate(values):
                logger.log_metrics({"train/loss": value}, step=first + offset)
        self.written += values
        self.pending = []

    def values(self) -> Tensor:
        """The losses recorded in this process, as a float32 tensor of shape (steps,)."""
        self.flush()
        return torch.tensor(self.written, dtype=torch.float32)

    def __enter__(self) -> LossCurve:
        return self

    def __exit__(self, *exception: object) -> None:
        """Write what is pending (up to a divergence or crash, too) and close the event files."""
        self.flush()
        for event_file in self.event_files:
            event_file.close()
