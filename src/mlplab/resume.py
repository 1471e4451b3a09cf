"""Exact resume: what a checkpoint needs besides Lightning's own state, and the logs' roll-back.

Lightning's checkpoint holds the weights, the optimizer and scheduler, the loops' counters
and (through `mlplab.data.EpochLoader.state_dict`) how far into its epoch the training
loader was. `ExactResume` adds the global random states (a model with dropout draws from
them) and keeps checkpoints and logs in step: a checkpoint is published only after the
loggers were flushed (`mlplab.checkpoint.AtomicCheckpointIO`). On resume from a checkpoint
taken after `step` optimizer steps, whatever the killed run logged at `step` or later is
rolled back: TensorBoard's `purge_step`, and a CSV log's later rows dropped.
"""

from __future__ import annotations

import csv
import random
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from mlplab.checkpoint import AtomicCheckpointIO


def rng_states() -> dict[str, Any]:
    """The global random states, as tensors, ints and lists only (weights_only loads them)."""
    version, internal, gauss = random.getstate()
    # Python's 625-int state as one tensor: pickling 625 ints costs more than the weights.
    python = [version, torch.tensor(internal, dtype=torch.int64), gauss]
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": python}
    if (np := sys.modules.get("numpy")) is not None:  # only if something uses it
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        states["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached]
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    """Put back what `rng_states` recorded."""
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    if "numpy" in states:
        import numpy as np

        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactResume(L.Callback):
    """Random states in every checkpoint; checkpoints published only once the logs hold all
    that came before them (see the module's docstring)."""

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restore_rng(state_dict["rng"])

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        loop_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        self.loader_states = loop_state.get("combined_loader", [])

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning gives a resumable training loader its saved position when it creates the
        # loader, after reading the checkpoint. But a module that asks for
        # `trainer.estimated_stepping_batches` in configure_optimizers (OneCycleLR's total
        # steps) makes Lightning create the loader before that, and the position is then
        # never given (Lightning 2.6). Give it here (again), before the first batch is drawn.
        loader, states = trainer.train_dataloader, getattr(self, "loader_states", [])
        if states and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(states[0])

    def publish(self, trainer: L.Trainer) -> None:
        """Flush the loggers, then give the checkpoints written since their real names."""
        io = trainer.strategy.checkpoint_io
        if isinstance(io, AtomicCheckpointIO) and io.pending:
            for logger in trainer.loggers:
                logger.save()
            io.publish()

    # A checkpoint saved at the end of a batch precedes that batch's log entries (Lightning
    # logs after every callback's on_train_batch_end): publish it at the next hook.
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.publish(trainer)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.publish(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.publish(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.publish(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.publish(trainer)


def checkpoint_step(path: Path) -> int:
    """The optimizer steps a checkpoint was taken after."""
    return torch.load(path, weights_only=True, map_location="cpu")["global_step"]


def wait_for_a_new_second(job_dir: Path) -> None:
    """Wait until the clock has passed the creation second of every event file in `job_dir`.

    TensorBoard reads a run's event files in name order, and a name begins with the second
    the file was created, then host, pid and a counter, compared as text. A resumed run's
    file must sort after the files it purges, so it is not created in the same second.
    """
    seconds = [int(p.name.split(".")[3]) for p in job_dir.rglob("events.out.tfevents.*")]
    while seconds and time.time() < max(seconds) + 1:
        time.sleep(0.05)


def roll_back_csv(logger: CSVLogger, step: int) -> None:
    """Keep only the rows a CSV logger wrote before `step`, before it logs again.

    Lightning's CSV writer deletes an existing metrics.csv when it starts: so the rows are
    read first, then logged again through the logger, which writes them back.
    """
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    with open(path, newline="") as file:
        rows = [row for row in csv.DictReader(file) if int(row["step"]) < step]
    for row in rows:
        values = {key: number(value) for key, value in row.items() if key != "step" and value}
        logger.log_metrics(values, step=int(row["step"]))
    logger.save()


def number(text: str) -> int | float:
    """A CSV cell as the number it was logged as (an epoch is an int, a loss a float)."""
    return int(text) if text.lstrip("-").isdigit() else float(text)
