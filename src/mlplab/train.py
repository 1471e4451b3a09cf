"""`train(cfg)`: one training job, start to finish, for any engine. Returns the final metrics."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from mlplab import ddp
from mlplab.checkpoint import remove_stale_temporaries, replace_atomically, write_json
from mlplab.curves import CurveLogger
from mlplab.fit import Diverged, FitResult, build_callbacks, fit_lightning, fit_raw
from mlplab.replicas import ReplicaResult, fit_replicas, replica_configs, replica_overrides
from mlplab.resume import checkpoint_step, roll_back_csv, wait_for_a_new_second

CONFIG_FILE = "config.yaml"  # the job's resolved config, beside its metrics.json (see evaluate.py)


def run_engine(
    cfg: DictConfig, loggers: Sequence[Logger], ckpt_path: Path | None = None
) -> FitResult:
    """Train `cfg` with its engine (`engine=lightning` or `engine=raw`)."""
    if cfg.engine == "raw":
        return fit_raw(cfg, loggers)
    return fit_lightning(cfg, loggers, build_callbacks(cfg), ckpt_path)


def build_loggers(cfg: DictConfig, purge_step: int | None = None) -> list[Logger]:
    """The experiment loggers of the `logger/` group (none for `logger=none`).

    With `purge_step`, TensorBoard hides what the run logged from that step on before it
    stopped (a resumed run logs it again). A new run passes 0: its file opens with the session
    start that TensorBoard's server takes as a run's beginning; only a later one, a resume's,
    counts as a restart that hides what came after it.
    """
    loggers = []
    for options in (cfg.get("logger") or {}).values():
        tensorboard = issubclass(get_class(options._target_), TensorBoardLogger)
        extra = {"purge_step": purge_step} if tensorboard and purge_step is not None else {}
        loggers.append(instantiate(options, **extra))
    return loggers


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
            if not key.startswith("_") and value is not None:  # TensorBoard: numbers, bools, text
                plain = isinstance(value, int | float | bool)
                values[f"{group}.{key}"] = value if plain else str(value)
    return {**choices, **values}


def log_hyperparameters(loggers: Sequence[Logger], cfg: DictConfig) -> None:
    """Record the run's hyperparameters, so TensorBoard's HParams tab can compare runs.

    A run logs its own values only (a session start and end), not an experiment summary: given
    several, TensorBoard takes one run's arbitrarily, hiding what the others set and what differs
    between them. A sweep writes one for all its runs at its end (`mlplab.hparams`); for a lone
    run or a sweep still running, TensorBoard builds one from the runs' values and scalar tags.
    Nothing is logged under a placeholder such as Lightning's default `hp_metric`.
    """
    params = hyperparameters(cfg)
    for logger in loggers:
        logger.log_hyperparams(params)  # hparams.yaml; no metrics, so no extra scalar points
        if isinstance(logger, TensorBoardLogger):
            _, session_start, session_end = hparams(params, {})  # the experiment: see above
            for summary in (session_start, session_end):
                logger.experiment.file_writer.add_summary(summary)


def train(cfg: DictConfig, overrides: Sequence[str] = (), resume: bool = False) -> dict[str, float]:
    """Train, validate and test as `cfg` says; keep `<paths.output_dir>/metrics.json` current.

    metrics.json says "running" while the job runs, then "completed", "diverged" (a
    non-finite loss stopped it; the step is recorded), "failed" (any other error; the
    traceback goes to error.txt beside it) or "interrupted" (Ctrl-C). Errors are re-raised
    after recording. With `resume`, the run in `cfg.paths.output_dir` continues from its last
    checkpoint (to a larger `trainer.max_epochs`, too). `overrides` (the job's command-line
    overrides) are recorded so a sweep's runs can be told apart without parsing names.
    """
    if cfg.get("replicas", 1) > 1:  # several seeds at once, each a run of its own
        return train_replicas(cfg, overrides, resume)
    output_dir = Path(cfg.paths.output_dir)
    checkpoint = output_dir / "checkpoints" / "last.ckpt"
    if rank_zero_only.rank > 0:
        # A data-parallel rank started by torchrun or SLURM, not by us: train, write nothing.
        ckpt_path = checkpoint if resume and checkpoint.exists() else None
        return run_engine(cfg, build_loggers(cfg), ckpt_path).metrics
    ckpt_path, purge_step = None, 0  # 0: a new run's logs begin with a session start
    if resume:
        remove_stale_temporaries(checkpoint.parent)
        ckpt_path = checkpoint if checkpoint.exists() else None
        purge_step = checkpoint_step(checkpoint) if ckpt_path else 0  # 0: start over
        wait_for_a_new_second(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    yaml = OmegaConf.to_yaml(cfg, resolve=True)  # for resume= and eval.py
    replace_atomically(output_dir / CONFIG_FILE, lambda file: file.write(yaml.encode()))
    summary: dict = {
        "status": "running",
        "engine": cfg.engine,
        "overrides": list(overrides),
        "torch_threads": torch.get_num_threads(),  # results can depend on it (summation order)
    }
    write_json(summary, output_dir / "metrics.json")
    # Whatever logger= chose, curves.csv records the curves too: the sweep report reads them.
    loggers = [*build_loggers(cfg, purge_step), CurveLogger(output_dir, purge_step)]
    if resume:
        for logger in loggers:
            if isinstance(logger, CSVLogger):
                roll_back_csv(logger, purge_step)
    if not purge_step:  # a new run, or one started over: its hparams are not in the logs
        log_hyperparameters(loggers, cfg)
    started = time.perf_counter()
    try:
        with ddp.workers(cfg, output_dir, ckpt_path):  # data-parallel ranks 1…n-1, if any
            result = run_engine(cfg, loggers, ckpt_path)
    except BaseException as raised:
        error = stopped_by(raised)
        summary |= failure_summary(error, output_dir)
        summary["wall_time_s"] = round(time.perf_counter() - started, 3)
        write_json(summary, output_dir / "metrics.json")
        for logger in loggers:
            logger.finalize("failed")
        if error is raised:
            raise
        raise error from None
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


def stopped_by(error: BaseException) -> BaseException:
    """The Ctrl-C behind `error` if it was raised while one was being handled, else `error`.

    A Ctrl-C that lands inside `torch.save` makes the cut-short save raise its own error
    (a RuntimeError from the zip writer): the job was interrupted all the same.
    """
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        cause = cause.__context__
    return error


def failure_summary(error: BaseException, output_dir: Path) -> dict:
    """What metrics.json records about a job that did not complete."""
    if isinstance(error, Diverged):
        return {"status": "diverged", "diverged_at_step": error.step, "error": str(error)}
    if isinstance(error, KeyboardInterrupt | SystemExit):
        return {"status": "interrupted", "error": type(error).__name__}
    (output_dir / "error.txt").write_text("".join(traceback.format_exception(error)))
    return {"status": "failed", "error": f"{type(error).__name__}: {error}"}


def train_replicas(
    cfg: DictConfig, overrides: Sequence[str] = (), resume: bool = False
) -> dict[str, float]:
    """`mlplab.train.train` for `replicas > 1`: the job's files, then each replica's.

    Returns the mean over the completed replicas of each final metric (what a sweeper such as
    Optuna minimises). Raises `Diverged` after writing everything if any replica diverged.
    """
    job_dir = Path(cfg.paths.output_dir)
    checkpoint = job_dir / "checkpoints" / "last.ckpt"
    ckpt_path, purge_step = None, 0  # 0: new runs' logs begin with a session start
    if resume:
        remove_stale_temporaries(checkpoint.parent)
        ckpt_path = checkpoint if checkpoint.exists() else None
        purge_step = checkpoint_step(checkpoint) if ckpt_path else 0
        wait_for_a_new_second(job_dir)
    configs = replica_configs(cfg, resume)
    dirs = [Path(replica.paths.output_dir) for replica in configs]
    for directory, config in [(job_dir, cfg), *zip(dirs, configs, strict=True)]:
        directory.mkdir(parents=True, exist_ok=True)
        yaml = OmegaConf.to_yaml(config, resolve=True).encode()
        replace_atomically(directory / CONFIG_FILE, lambda file, text=yaml: file.write(text))
    common = {"engine": cfg.engine, "torch_threads": torch.get_num_threads()}
    job = {"status": "running", **common, "overrides": list(overrides)}
    job["replica_dirs"] = [directory.name for directory in dirs]  # the runs (the report's rows)
    summaries = [
        {
            "status": "running",
            **common,
            "overrides": replica_overrides(overrides, config.seed),
            "replica": r,  # one of a job's replicas: resume the job, not it
        }
        for r, config in enumerate(configs)
    ]
    write_summaries(job_dir, job, dirs, summaries)
    loggers = []
    for config, directory in zip(configs, dirs, strict=True):
        own = [*build_loggers(config, purge_step), CurveLogger(directory, purge_step)]
        for logger in own:
            if resume and isinstance(logger, CSVLogger):
                roll_back_csv(logger, purge_step)
        if not purge_step:
            log_hyperparameters(own, config)
        loggers.append(own)
    started = time.perf_counter()
    try:
        results = fit_replicas(cfg, configs, loggers, build_callbacks(cfg), ckpt_path)
    except BaseException as raised:
        error = stopped_by(raised)
        job |= failure_summary(error, job_dir)
        job["wall_time_s"] = round(time.perf_counter() - started, 3)
        for summary in summaries:
            summary |= {k: v for k, v in job.items() if k in ("status", "error", "wall_time_s")}
        write_summaries(job_dir, job, dirs, summaries)
        for logger in (logger for own in loggers for logger in own):
            logger.finalize("failed")
        if error is raised:
            raise
        raise error from None
    for logger in (logger for own in loggers for logger in own):
        logger.finalize("success")
    wall_time = round(time.perf_counter() - started, 3)
    for result, summary, directory in zip(results, summaries, dirs, strict=True):
        summary |= replica_summary(result, wall_time)
        if cfg.trainer.get("enable_checkpointing", True):
            save_weights(result, directory / "checkpoints" / "last.ckpt")
    diverged = [result for result in results if result.diverged_at is not None]
    job |= {"status": "diverged" if diverged else "completed", "wall_time_s": wall_time}
    write_summaries(job_dir, job, dirs, summaries)
    if diverged:  # the job's exit code, as a sweep's: 3 if any of its runs diverged
        first = min(diverged, key=lambda result: result.diverged_at)
        raise Diverged(first.diverged_at, first.step_losses[-1].item())
    return mean_metrics([result.metrics for result in results])


def replica_summary(result: ReplicaResult, wall_time: float) -> dict[str, Any]:
    """What a replica's metrics.json records when the job ends (its wall time: the job's)."""
    if result.diverged_at is not None:
        loss = result.step_losses[-1].item()
        error = f"training loss became {loss} at step {result.diverged_at}"
        return {"status": "diverged", "diverged_at_step": result.diverged_at, "error": error}
    return {
        "status": "completed",
        "metrics": result.metrics,
        "epochs": result.epochs,
        "steps": result.steps,
        "wall_time_s": wall_time,
    }


def write_summaries(
    job_dir: Path, job: dict[str, Any], dirs: Sequence[Path], summaries: Sequence[dict[str, Any]]
) -> None:
    """The job's metrics.json and each replica's."""
    for directory, summary in zip(dirs, summaries, strict=True):
        write_json(summary, directory / "metrics.json")
    write_json(job, job_dir / "metrics.json")


def save_weights(result: FitResult, path: Path) -> None:
    """A replica's final weights as `checkpoints/last.ckpt`, as the raw engine writes them."""
    weights = {f"model.{k}": v for k, v in result.model.state_dict().items()}
    payload = {"state_dict": weights, "global_step": result.steps, "epoch": result.epochs}
    replace_atomically(path, lambda file: torch.save(payload, file))


def mean_metrics(metrics: Sequence[dict[str, float]]) -> dict[str, float]:
    """The mean over the replicas that have it of each metric (diverged ones have none)."""
    names = list(dict.fromkeys(name for values in metrics for name in values))
    return {
        name: sum(values[name] for values in metrics if name in values)
        / sum(name in values for values in metrics)
        for name in names
    }


def worker(job_dir: Path, ckpt_path: Path | None) -> None:
    """One data-parallel worker (rank > 0, started by `mlplab.ddp.workers`): train the job's
    saved config, write nothing.

    It builds the same callbacks as rank 0 (ModelCheckpoint, EarlyStopping, … take part in
    collective calls); its loggers are inert off rank 0, as Lightning makes them.
    """
    import torch.distributed as dist

    cfg = OmegaConf.load(job_dir / CONFIG_FILE)
    code = 0
    try:
        run_engine(cfg, build_loggers(cfg), ckpt_path)
    except Diverged:  # rank 0 stops at the same step and reports it
        code = 3
    finally:
        # Leave the process group before exiting: a gloo group still alive at interpreter
        # exit can abort the process ("terminate called without an active exception").
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    sys.exit(code)


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
