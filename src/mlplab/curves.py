"""Every job's curves in its own directory, whatever `logger=` chose: `curves.csv`.

`CurveLogger` is a Lightning logger that `train()` adds to the configured ones. Both engines
log to their loggers the same tags at the same steps, so the file holds what TensorBoard
shows (train/loss every `trainer.log_every_n_steps` steps, val/* per epoch, test/* at the end),
as `step,tag,value` rows: the sweep report reads its curves from it, not from a logger's files.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from mlplab.checkpoint import replace_atomically
from mlplab.report import CURVES_FILE, read_curve_rows

RECORDED = ("train/", "val/", "test/")  # not "epoch", learning rates and the like


class CurveLogger(Logger):
    """Appends the logged train/, val/ and test/ scalars to `<job_dir>/curves.csv`.

    Rows are appended at each `save()` (Lightning calls it after every log), so a killed job
    keeps what it logged. A resumed job passes its checkpoint's step as `purge_step`: the rows
    from that step on are dropped first (it logs them again), as TensorBoard's `purge_step`
    hides them; a new run passes 0 and starts an empty file.
    """

    def __init__(self, job_dir: Path, purge_step: int = 0) -> None:
        super().__init__()
        self.path = Path(job_dir) / CURVES_FILE
        self.pending: list[tuple[int, str, float]] = []
        if rank_zero_only.rank == 0:
            kept = [row for row in read_curve_rows(self.path) if int(row[0]) < purge_step]
            lines = "".join(",".join(row) + "\n" for row in [["step", "tag", "value"], *kept])
            replace_atomically(self.path, lambda file: file.write(lines.encode()))

    @property
    def name(self) -> str:
        return "curves"

    @property
    def version(self) -> str:
        return ""  # as the tensorboard and csv configs: nothing added to the progress bar

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: the job's config.yaml already holds them."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for tag, value in metrics.items():
            if tag.startswith(RECORDED):
                self.pending.append((int(step or 0), tag, float(value)))

    @rank_zero_only
    def save(self) -> None:
        if self.pending:
            with self.path.open("a", newline="") as file:
                csv.writer(file).writerows(self.pending)  # floats print in full (repr)
            self.pending.clear()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()
