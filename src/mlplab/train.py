"""`train(cfg)`: one training job, start to finish, for any engine. Returns the final metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from mlplab.checkpoint import write_json
from mlplab.fit import fit_lightning
from mlplab.reference import fit_reference
from mlplab.tasks import SCORE_NAMES

ENGINES = {"lightning": fit_lightning, "raw": fit_reference}


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The experiment loggers of the `logger/` group (none for `logger=none`)."""
    return [instantiate(options) for options in (cfg.get("logger") or {}).values()]


def hyperparameters(cfg: DictConfig) -> dict[str, str | int | float | bool]:
    """What distinguishes this run, flat: chosen options by name, then every value they set."""
    choices = {
        "engine": cfg.engine,
        "data": cfg.data.task,
        "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1],
        "activation": cfg.activation._target_.rsplit(".", 1)[-1],
        "seed": cfg.seed,
    }
    values = {}
    for group in ("data", "model", "optimizer", "activation", "trainer"):
        for key, value in OmegaConf.to_container(cfg[group], resolve=True).items():
            if not key.startswith("_"):  # TensorBoard takes numbers, booleans and strings
                plain = isinstance(value, int | float | bool)
                values[f"{group}.{key}"] = value if plain else str(value)
    return {**choices, **values}


def log_hyperparameters(loggers: list[Logger], cfg: DictConfig) -> None:
    """Record the run's hyperparameters, so TensorBoard's HParams tab can compare runs.

    The HParams tab shows, for each run, the last value of the metric tags named here: the
    real final val/test losses and scores. Nothing is logged under a placeholder such as
    Lightning's default `hp_metric`.
    """
    params = hyperparameters(cfg)
    score = SCORE_NAMES[cfg.data.task]
    metrics = {tag: 0.0 for tag in ("val/loss", f"val/{score}", "test/loss", f"test/{score}")}
    for logger in loggers:
        logger.log_hyperparams(params)  # hparams.yaml; no metrics, so no extra scalar points
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment._get_file_writer()  # as Lightning's own log_hyperparams
            for summary in hparams(params, metrics):  # values unused: only the tag names count
                writer.add_summary(summary)


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Train, validate and test as `cfg` says; write `<paths.output_dir>/metrics.json`.

    `overrides` (the command-line overrides of this job) are recorded in metrics.json so a
    sweep's results can be told apart without parsing directory names.
    """
    output_dir = Path(cfg.paths.output_dir)
    loggers = build_loggers(cfg)
    log_hyperparameters(loggers, cfg)
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
