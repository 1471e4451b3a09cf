"""`train(cfg)`: one training job, start to finish, for any engine. Returns the final metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from mlplab.checkpoint import write_json
from mlplab.fit import fit_lightning
from mlplab.reference import fit_reference

ENGINES = {"lightning": fit_lightning, "raw": fit_reference}


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The experiment loggers of the `logger/` group (none for `logger=none`)."""
    return [instantiate(options) for options in (cfg.get("logger") or {}).values()]


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Train, validate and test as `cfg` says; write `<paths.output_dir>/metrics.json`.

    `overrides` (the command-line overrides of this job) are recorded in metrics.json so a
    sweep's results can be told apart without parsing directory names.
    """
    output_dir = Path(cfg.paths.output_dir)
    loggers = build_loggers(cfg)
    started = time.perf_counter()
    result = ENGINES[cfg.engine](cfg, loggers, output_dir / "checkpoints")
    for logger in loggers:
        logger.finalize("success")
    summary = {
        "status": "completed",
        "engine": cfg.engine,
        "overrides": list(overrides),
        "metrics": result.metrics,
        "epochs": result.epochs,
        "steps": result.steps,
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    write_json(summary, output_dir / "metrics.json")
    return result.metrics
