"""`train(cfg)`: one training job, start to finish, for any engine. Returns the final metrics."""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from mlplab import ddp
from mlplab.checkpoint import write_json
from mlplab.curves import Diverged
from mlplab.fit import fit_lightning
from mlplab.reference import fit_reference
from mlplab.resume import STATE_KEY, remove_stale_temporaries, roll_back_logs
from mlplab.tasks import SCORE_NAMES

ENGINES = {"lightning": fit_lightning, "raw": fit_reference}
CONFIG_FILE = "config.yaml"  # the job's resolved config, beside its metrics.json (see evaluate.py)


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


def train(cfg: DictConfig, overrides: Sequence[str] = (), resume: bool = False) -> dict[str, float]:
    """Train, validate and test as `cfg` says; keep `<paths.output_dir>/metrics.json` current.

    metrics.json says "running" while the job runs, then "completed", "diverged" (a
    non-finite loss stopped it; the step is recorded) or "failed" (any other error; the
    traceback goes to error.txt beside it). Errors are re-raised after recording. With
    `resume`, a killed run continues in its own directory from its last checkpoint.
    `overrides` (the job's command-line overrides) are recorded so a sweep's runs can be
    told apart without parsing directory names.
    """
    output_dir = Path(cfg.paths.output_dir)
    checkpoint = output_dir / "checkpoints" / "last.ckpt"
    if rank_zero_only.rank > 0:
        # A data-parallel rank started by torchrun or SLURM, not by us: train, write nothing.
        resume_from = checkpoint if resume and checkpoint.exists() else None
        return ENGINES[cfg.engine](cfg, [], checkpoint.parent, resume_from).metrics
    resume_from = prepare_resume(output_dir, checkpoint) if resume else None
    if not resume:
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, output_dir / CONFIG_FILE, resolve=True)  # for resume= and eval.py
    summary: dict = {
        "status": "running",
        "engine": cfg.engine,
        "overrides": list(overrides),
        "torch_threads": torch.get_num_threads(),  # results can depend on it (summation order)
    }
    write_json(summary, output_dir / "metrics.json")
    loggers = build_loggers(cfg)
    log_hyperparameters(loggers, cfg)
    started = time.perf_counter()
    try:
        with ddp.workers(cfg, output_dir, resume_from):  # data-parallel ranks 1…n-1, if any
            result = ENGINES[cfg.engine](cfg, loggers, checkpoint.parent, resume_from)
    except BaseException as error:
        summary |= failure_summary(error, output_dir)
        summary["wall_time_s"] = round(time.perf_counter() - started, 3)
        write_json(summary, output_dir / "metrics.json")
        for logger in loggers:
            logger.finalize("failed")
        raise
    for logger in loggers:
        logger.finalize("success")
    summary |= {
        "status": "completed",
        "metrics": result.metrics,
        "epochs": result.epochs,
        "steps": result.steps,
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    write_json(summary, output_dir / "metrics.json")
    return result.metrics


def failure_summary(error: BaseException, output_dir: Path) -> dict:
    """What metrics.json records about a job that did not complete."""
    if isinstance(error, Diverged):
        return {"status": "diverged", "diverged_at_step": error.step, "error": str(error)}
    if isinstance(error, KeyboardInterrupt | SystemExit):
        return {"status": "interrupted", "error": type(error).__name__}
    (output_dir / "error.txt").write_text("".join(traceback.format_exception(error)))
    return {"status": "failed", "error": f"{type(error).__name__}: {error}"}


def prepare_resume(output_dir: Path, checkpoint: Path) -> Path | None:
    """Make a killed run's directory ready to continue; return the checkpoint to resume from.

    The logs are cut back to what they held when the checkpoint was taken; without a
    checkpoint, the run starts again from nothing, its earlier logs moved aside.
    """
    remove_stale_temporaries(checkpoint.parent)
    if not checkpoint.exists():
        roll_back_logs(output_dir, {})
        return None
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")[STATE_KEY]
    roll_back_logs(output_dir, state["logs"])
    return checkpoint
