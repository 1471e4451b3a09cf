"""Exact resume: what a checkpoint records besides weights, and how a run's logs roll back to it.

A checkpoint of mlplab holds, under the key "mlplab", everything needed to continue as if
the run had never stopped, in types `torch.load(weights_only=True)` accepts:

- `position`: optimizer steps taken, hence the epoch and the batch within it where training
  resumes (the batch order itself is a function of the data seed and the epoch);
- `rng`: the global torch, Python and NumPy random states;
- `logs`: the size of every log file when the checkpoint was taken, after a flush.

Log files only grow by appending. Cutting each back to its recorded size, and moving aside
the files begun after the checkpoint, leaves exactly the points logged up to the checkpoint:
the resumed run appends the rest, and no step is ever logged twice.
"""

from __future__ import annotations

import random
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger

STATE_KEY = "mlplab"
LOG_DIRS = ("tensorboard", "csv")  # where the loggers of configs/logger/ write, in a job dir


def rng_states() -> dict[str, Any]:
    """The global random states, as tensors, ints and lists only."""
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


def log_sizes(job_dir: Path, loggers: Sequence[Logger]) -> dict[str, int]:
    """Flush every logger, then the size of each of the job's log files, by relative path."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.flush()  # not logger.save(): that rewrites hparams.yaml too
        else:
            logger.save()  # CSV: append the buffered rows
    return {
        str(path.relative_to(job_dir)): path.stat().st_size
        for name in LOG_DIRS
        for path in sorted((job_dir / name).rglob("*"))
        if path.is_file() and (path.name.startswith("events.out.tfevents") or path.suffix == ".csv")
    }


def checkpoint_state(
    step: int,
    steps_per_epoch: int,
    validated: bool,
    last_loss: float | None,
    job_dir: Path,
    loggers: Sequence[Logger],
) -> dict[str, Any]:
    """The "mlplab" entry of a checkpoint taken after `step` optimizer steps.

    `validated` says whether validation already ran on these weights (it has, after a whole
    epoch); `last_loss` is the training loss of step `step`, for the final metrics.
    """
    epoch, batch = divmod(step, steps_per_epoch)
    position = {"step": step, "epoch": epoch, "batch": batch, "steps_per_epoch": steps_per_epoch}
    return {
        "position": position | {"validated": validated, "last_loss": last_loss},
        "rng": rng_states(),
        "logs": log_sizes(job_dir, loggers),
    }


def roll_back_logs(job_dir: Path, sizes: dict[str, int]) -> list[Path]:
    """Cut the job's log files back to `sizes`; move files begun later into `rolled_back/`.

    Returns the files moved aside. A CSV file is moved aside too, cut back first: Lightning's
    CSV writer would otherwise delete it when the resumed run starts a fresh metrics.csv.
    """
    moved = []
    aside = job_dir / "rolled_back"
    for name in LOG_DIRS:
        for path in sorted((job_dir / name).rglob("*")):
            relative = str(path.relative_to(job_dir))
            is_log = path.name.startswith("events.out.tfevents") or path.suffix == ".csv"
            if not path.is_file() or not is_log:
                continue
            if relative in sizes:
                with open(path, "r+b") as file:
                    file.truncate(sizes[relative])
                if path.suffix != ".csv":
                    continue
            target = aside / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target = target.with_name(
                    f"{target.stem}-{len(list(target.parent.iterdir()))}{target.suffix}"
                )
            shutil.move(path, target)
            moved.append(target)
    return moved


def remove_stale_temporaries(directory: Path) -> None:
    """Delete the half-written checkpoints of killed processes (`checkpoint.replace_atomically`)."""
    for path in directory.glob(".*.tmp"):
        path.unlink(missing_ok=True)
