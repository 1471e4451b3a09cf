"""`replicas=R`: one job trains R seeds of its configuration at once, as one batched model.

Replica r is the run that a separate job with `seed=seed+r` would be: its initial weights and
batch order come from that seed (the dataset, `data.seed`, is shared), and it has a directory
of its own, `<job dir>/replica_<r>/`, that every reader takes for a job's: `metrics.json`,
`curves.csv`, TensorBoard's events, `config.yaml` and `checkpoints/last.ckpt` (its plain
weights). The job's own directory keeps the job's config, status and Lightning checkpoint
(what `resume=` continues).

The R models are stacked (`mlplab.stacked.StackedModels`) and trained by one LightningModule
with automatic optimization. The loss is the sum of the replicas' own mean losses, so each
replica's weights get exactly their own gradient; the optimizers offered update element by
element, so each replica follows the trajectory it would follow alone. A replica whose loss
stops being finite is marked diverged at that step: its loss counts for nothing from then on
and its weights are put back after every step, so the others train on untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.regression import MeanSquaredError, R2Score

from mlplab.build import build_datamodule, build_model, optimizer_factory, scheduler_config
from mlplab.config import relocated
from mlplab.fit import Diverged, FitResult, TrainingRecord, run_trainer
from mlplab.module import MLPModule
from mlplab.stacked import StackedModels
from mlplab.tasks import loss_function

PREFIX = "replica_"  # replica r's directory, and the prefix of what it logs: replica_3/val/loss
CONFIG_FILE = "config.yaml"  # each run's resolved config, as mlplab.train writes it


# ---- configs: replica r is the job with seed + r, in its own directory ----


def replica_dir(job_dir: Path, r: int) -> Path:
    """Where replica r of the job in `job_dir` writes, as a job of its own."""
    return Path(job_dir) / f"{PREFIX}{r}"


def replica_configs(cfg: DictConfig, resume: bool = False) -> list[DictConfig]:
    """Each replica's config: the job's with `seed + r`, `replicas: 1`, its own directory.

    Derived from the job's config before it is resolved, so whatever follows `${seed}` (the
    batch order, `data.shuffle_seed`) or `${paths.output_dir}` (the loggers) follows the
    replica's. A resumed job's replicas continue with the configs they saved when they
    started, trained as far as the job now says (`trainer.max_epochs`, `max_steps`).
    """
    job_dir = Path(cfg.paths.output_dir)
    configs = []
    for r in range(cfg.replicas):
        saved = replica_dir(job_dir, r) / CONFIG_FILE
        if resume and saved.is_file():
            replica = relocated(OmegaConf.load(saved), saved.parent)
            for key in ("max_epochs", "max_steps"):
                replica.trainer[key] = cfg.trainer[key]
        else:
            replica = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
            replica.seed, replica.replicas = cfg.seed + r, 1
            replica.paths.output_dir = str(saved.parent)
        configs.append(replica)
    return configs


def replica_overrides(overrides: Sequence[str], seed: int) -> list[str]:
    """A replica's overrides: the job's, without `replicas=` and with its own `seed=`.

    So the sweep report groups the replicas of a job as it groups `seed=0,1,2 -m` jobs.
    """
    kept = [o for o in overrides if o.lstrip("+~").partition("=")[0] not in ("replicas", "seed")]
    return [*kept, f"seed={seed}"]


# ---- data: each replica its own batches, stacked ----


class ReplicaSamplers:
    """What Lightning calls `set_epoch` on at each epoch: every replica loader's samplers."""

    def __init__(self, loaders: Sequence[Any]) -> None:
        self.loaders = loaders

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            batch_sampler = getattr(loader, "batch_sampler", None)
            samplers = {getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)}
            for sampler in samplers:
                if callable(getattr(sampler, "set_epoch", None)):
                    sampler.set_epoch(epoch)


class ReplicaLoader:
    """R loaders as one: batch i is `(x, y)` of shapes (R, batch, …), replica r's from loader r.

    Resumable mid-epoch when its loaders are (`state_dict`/`load_state_dict`, as Lightning
    saves a loader's position). Lightning reads a loader's `sampler` and `batch_sampler` as
    torch's DataLoader has them: it sets the epoch through `sampler.set_epoch`.
    """

    def __init__(self, loaders: Sequence[Any]) -> None:
        self.loaders = list(loaders)
        self.sampler, self.batch_sampler = ReplicaSamplers(self.loaders), None

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batches in zip(*self.loaders, strict=True):
            xs, ys = zip(*batches, strict=True)
            yield torch.stack(xs), torch.stack(ys)

    def state_dict(self) -> dict[str, Any]:
        """Each loader's position (none for loaders that cannot say)."""
        return {"loaders": [getattr(loader, "state_dict", dict)() for loader in self.loaders]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for loader, own in zip(self.loaders, state["loaders"], strict=True):
            if own:
                loader.load_state_dict(own)


class ReplicaData(L.LightningDataModule):
    """The replicas' DataModules (one per replica config) served as one, batches stacked.

    mlplab's synthetic data are generated once for all of them (`mlplab.data.generate_splits`);
    each replica's training order is its own seed's.
    """

    def __init__(self, datamodules: Sequence[L.LightningDataModule]) -> None:
        super().__init__()
        self.datamodules = list(datamodules)

    def prepare_data(self) -> None:
        for datamodule in self.datamodules:
            datamodule.prepare_data()

    def setup(self, stage: str) -> None:
        for datamodule in self.datamodules:
            datamodule.trainer = self.trainer  # as Lightning does for the DataModule it is given
            datamodule.setup(stage)

    def train_dataloader(self) -> ReplicaLoader:
        return ReplicaLoader([dm.train_dataloader() for dm in self.datamodules])

    def val_dataloader(self) -> ReplicaLoader:
        return ReplicaLoader([dm.val_dataloader() for dm in self.datamodules])

    def test_dataloader(self) -> ReplicaLoader:
        return ReplicaLoader([dm.test_dataloader() for dm in self.datamodules])


# ---- the LightningModule ----


def replica_losses(loss_fn: Any, outputs: Tensor, targets: Tensor) -> Tensor:
    """(R,): each replica's mean loss, the task's loss of outputs[r] against targets[r]."""
    per_sample = loss_fn(outputs.flatten(0, 1), targets.flatten(0, 1), reduction="none")
    return per_sample.reshape(outputs.shape[0], -1).mean(1)


class ReplicaSums(Metric):
    """Per-replica sums over an epoch, and how many samples they cover: `compute()` is the
    (R,) mean. What `MeanMetric` does for one run (the same arithmetic), for R at once."""

    full_state_update = False

    def __init__(self, replicas: int) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(replicas), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, sums: Tensor, count: int) -> None:
        self.total += sums
        self.count += count

    def compute(self) -> Tensor:
        return self.total / self.count


class ReplicaMetrics(nn.Module):
    """`mlplab.tasks.EpochMetrics` for R replicas at once: one update per batch, not R.

    The loss (sample-weighted, as for one run), then MSE and R² (torchmetrics, with the
    replicas as outputs) for regression, accuracy (correct over seen) for classifiers.
    """

    def __init__(self, task: str, replicas: int, prefix: str) -> None:
        super().__init__()
        self.task, self.prefix = task, prefix
        self.loss_fn = loss_function(task)
        self.loss = ReplicaSums(replicas)
        self.scores = nn.ModuleDict(
            {"mse": MeanSquaredError(num_outputs=replicas), "r2": R2Score(multioutput="raw_values")}
            if task == "regression"
            else {"acc": ReplicaSums(replicas)}
        )

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        """Add one batch of every replica: outputs and targets (R, batch, …)."""
        count = targets.shape[1]
        losses = replica_losses(self.loss_fn, outputs, targets)
        # in the state's float32 first, as MeanMetric takes a loss (also under 64-true)
        self.loss.update(losses.to(self.loss.total.dtype) * count, count)
        if self.task == "regression":  # (batch, R): one output column per replica
            outputs, targets = outputs.squeeze(-1).T, targets.squeeze(-1).T
            for score in self.scores.values():
                score.update(outputs, targets)
            return
        if self.task == "binary":  # as BinaryAccuracy on the probabilities, threshold 0.5
            right = (outputs.sigmoid() > 0.5) == targets.bool()
        else:
            right = outputs.argmax(-1) == targets
        self.scores["acc"].update(right.flatten(1).sum(1), count)

    def compute(self) -> list[dict[str, Tensor]]:
        """Each replica's values, `{"val/loss": …, "val/r2": …}`."""
        values = {"loss": self.loss.compute()} | {k: m.compute() for k, m in self.scores.items()}
        return [
            {f"{self.prefix}/{name}": value[r] for name, value in values.items()}
            for r in range(len(values["loss"]))
        ]

    def reset(self) -> None:
        self.loss.reset()
        for score in self.scores.values():
            score.reset()


class ReplicasModule(MLPModule):
    """`MLPModule` for R stacked models: each replica's loss, metrics and logs are its own.

    One optimizer over the stacked weights; the loss it minimises is the sum of the replicas'
    losses, whose gradient for replica r's weights is replica r's own. Logged as
    `replica_<r>/train/loss`, `replica_<r>/val/loss`, … (`ReplicaLoggers` sends each to that
    replica's loggers, without the prefix).
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        task: str,
        out_features: int,
        optimizer: Any,
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(StackedModels(models), task, out_features, optimizer, scheduler)
        count = len(models)
        self.val_metrics = ReplicaMetrics(task, count, prefix="val")
        self.test_metrics = ReplicaMetrics(task, count, prefix="test")
        # The step at which each replica's loss stopped being finite, -1 while it is: a buffer,
        # so checkpoints (and resume) keep it.
        self.register_buffer("diverged_at", torch.full((count,), -1))
        self.frozen: dict[int, list[Tensor]] = {}  # a diverged replica's weights, kept as they were

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Any]:
        x, y = batch  # (R, batch, …): replica r's own batch
        losses = replica_losses(self.loss_fn, self.model(x), y)
        alive = self.diverged_at < 0
        diverging = alive & ~torch.isfinite(losses.detach())
        newly: list[int] = []
        if diverging.any():
            newly = diverging.nonzero().flatten().tolist()
            self.diverged_at[diverging] = self.global_step
            alive &= ~diverging
            self.freeze_diverged()
        # Lightning sends a step's values to the loggers every log_every_n_steps steps only
        # (every step under fast_dev_run), and a self.log call costs ~0.1 ms: with many
        # replicas, log them only then.
        trainer = self.trainer
        logs = (self.global_step + 1) % trainer.log_every_n_steps == 0
        if logs or trainer.should_stop or trainer.fast_dev_run:
            for r in alive.nonzero().flatten().tolist():
                self.log(f"{PREFIX}{r}/train/loss", losses[r])
        # A diverged replica's loss counts for nothing (its gradient may hold NaN, which stays
        # in its own slice of the weights: the optimizers update element by element).
        loss = torch.where(alive, losses, 0.0).sum()
        self.log("train/loss", loss.detach() / alive.sum(), prog_bar=True, logger=False)
        return {"loss": loss, "losses": losses.detach(), "diverging": newly}

    def on_train_start(self) -> None:
        self.freeze_diverged()  # a resumed job's replicas that had diverged before

    def freeze_diverged(self) -> None:
        """Remember the weights of every diverged replica as they are now (once each)."""
        for r in (self.diverged_at >= 0).nonzero().flatten().tolist():
            if r not in self.frozen:
                self.frozen[r] = [w.detach().clone() for w in self.model.parameter_slices(r)]

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's optimizer step, then the diverged replicas' weights put back."""
        super().optimizer_step(*args, **kwargs)
        with torch.no_grad():
            for r, weights in self.frozen.items():
                for slice_, kept in zip(self.model.parameter_slices(r), weights, strict=True):
                    slice_.copy_(kept)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_metrics.update(self.model(x), y)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.replica_values(self.val_metrics))

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_metrics.update(self.model(x), y)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.replica_values(self.test_metrics))

    def replica_values(self, metrics: ReplicaMetrics) -> dict[str, Tensor]:
        """Each live replica's epoch values as `replica_<r>/val/loss`, …; the metrics reset."""
        values = {}
        for r, replica in enumerate(metrics.compute()):
            if self.diverged_at[r] < 0:
                values |= {f"{PREFIX}{r}/{k}": v for k, v in replica.items()}
        metrics.reset()
        return values


class ReplicaRecord(TrainingRecord):
    """Each replica's training loss at each batch; a replica that diverges is logged there.

    As for a single run, the non-finite loss is logged at the step it appeared, by hand (the
    module logs live replicas only); the job stops when every replica has diverged.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        losses, accumulate = outputs["losses"], trainer.accumulate_grad_batches
        # as a single run's record, whose outputs["loss"] Lightning divides by the accumulation
        self.losses.append(losses / accumulate if accumulate > 1 else losses)
        for r in outputs["diverging"]:
            step, loss = int(pl_module.diverged_at[r]), losses[r].item()
            for logger in trainer.loggers:
                logger.log_metrics({f"{PREFIX}{r}/train/loss": loss}, step=step)
                logger.save()
        if outputs["diverging"] and bool((pl_module.diverged_at >= 0).all()):
            r = int(pl_module.diverged_at.argmax())
            raise Diverged(int(pl_module.diverged_at[r]), losses[r].item())


class ReplicaLoggers(Logger):
    """The Trainer's logger in a replicas job: it sends `replica_<r>/<tag>` to replica r's
    loggers as `<tag>`, and keys of no replica (`epoch`, a learning rate) to every replica's."""

    def __init__(self, loggers: Sequence[Sequence[Logger]]) -> None:
        super().__init__()
        self.replicas = [list(own) for own in loggers]

    @property
    def name(self) -> str:
        return "replicas"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: each replica's loggers got the replica's own (its seed) when it started."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        shared = {k: v for k, v in metrics.items() if not k.startswith(PREFIX)}
        own: list[dict[str, float]] = [dict(shared) for _ in self.replicas]
        for key, value in metrics.items():
            if key.startswith(PREFIX):
                replica, _, tag = key.partition("/")
                own[int(replica.removeprefix(PREFIX))][tag] = value
        for values, loggers in zip(own, self.replicas, strict=True):
            if values.keys() - {"epoch"}:  # not the epoch alone (a diverged replica's)
                for logger in loggers:
                    logger.log_metrics(values, step)

    @rank_zero_only
    def save(self) -> None:
        for logger in (logger for loggers in self.replicas for logger in loggers):
            logger.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Only flush: `train_replicas` finalizes the replicas' loggers once, at the end.

        Lightning finalizes its loggers after each stage (fit, validate, test), and a
        TensorBoard logger then opens a new events file for the next. R replicas open theirs
        in the same second, so the names' counters (the last part) pass 9, and TensorBoard
        reads a run's files in name order, as text (`.12` before `.3`): a file with the run's
        session start read last would hide the points read before it.
        """
        self.save()


# ---- training ----


@dataclass
class ReplicaResult(FitResult):
    """One replica's `FitResult`, and the step its loss stopped being finite (None: it did not)."""

    diverged_at: int | None = None


def fit_replicas(
    cfg: DictConfig,
    configs: Sequence[DictConfig],
    loggers: Sequence[Sequence[Logger]],
    callbacks: Sequence[L.Callback] = (),
    ckpt_path: Path | None = None,
) -> list[ReplicaResult]:
    """Train, validate and test the replicas of `configs` as one (the job's `cfg` runs the
    Trainer); each replica's result, as `mlplab.fit.fit_lightning` gives a single run's."""
    models = [build_model(replica) for replica in configs]
    module = ReplicasModule(
        models, cfg.data.task, cfg.data.out_features, optimizer_factory(cfg), scheduler_config(cfg)
    )
    datamodule = ReplicaData([build_datamodule(replica) for replica in configs])
    record = ReplicaRecord()
    fanout = [ReplicaLoggers(loggers)] if any(loggers) else []
    try:
        _, metrics = run_trainer(cfg, module, datamodule, fanout, record, callbacks, ckpt_path)
    except Diverged:  # every replica did: each result says where
        metrics = {}
    trainer = module.trainer
    losses = torch.stack(record.losses) if record.losses else torch.zeros(0, len(models))
    results = []
    stacked = next(module.model.parameters())
    for r, model in enumerate(models):
        model.to(stacked).load_state_dict(module.model.replica_state_dict(r))  # dtype, device
        own = losses[:, r]
        diverged_at = int(module.diverged_at[r])
        if diverged_at >= 0:  # its losses end with the first one that was not finite
            own = own[: int((~torch.isfinite(own)).nonzero()[0]) + 1]
        prefix = f"{PREFIX}{r}/"
        final = {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}
        if len(own) and diverged_at < 0:
            final = {"train/loss": own[-1].item(), **final}
        results.append(
            ReplicaResult(
                model=model,
                step_losses=own,
                metrics=final,
                epochs=trainer.current_epoch,
                steps=trainer.global_step,
                diverged_at=diverged_at if diverged_at >= 0 else None,
            )
        )
    return results
