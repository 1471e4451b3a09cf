"""The two engines, config in, trained model out: Lightning's Trainer, and the raw loop.

Both build the model, optimizer, scheduler, loss and data with `mlplab.build`, so that the
only difference between them is who runs the loop: `lightning.Trainer` or
`mlplab.reference.train`, the textbook page.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mlplab import reference
from mlplab.build import (
    build_datamodule,
    build_model,
    build_scheduler,
    optimizer_factory,
    scheduler_config,
)
from mlplab.checkpoint import AtomicCheckpointIO, replace_atomically
from mlplab.module import MLPModule
from mlplab.resume import ExactResume
from mlplab.tasks import EpochMetrics, loss_function

# Lightning's advice that does not apply to mlplab, silenced by message while it trains:
IRRELEVANT_WARNINGS = (
    # our loaders serve in-memory tensors, for which worker processes are pure overhead;
    r".*does not have many workers.*",
    # Lightning 2.6 calls a torch.utils._pytree API that torch 2.13 deprecated.
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    # a resumed run's checkpoint directory holds its own last.ckpt, by design.
    r".*Checkpoint directory .* exists and is not empty.*",
)
# Lightning's start-up notes (device availability, product tips) would repeat on every job of
# a sweep; the job's first log line names the device instead. Warnings still come through.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


@contextmanager
def lightning_quiet() -> Iterator[None]:
    """Hide `IRRELEVANT_WARNINGS` (only those) for the duration of the block."""
    with warnings.catch_warnings():
        for pattern in IRRELEVANT_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


class Diverged(ArithmeticError):
    """The training loss stopped being a finite number."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training loss became {loss} at step {step}")
        self.step, self.loss = step, loss


@dataclass
class FitResult:
    """A trained model and what happened on the way; both engines return one."""

    model: nn.Module
    step_losses: Tensor  # (steps,) training loss of each optimizer step, in order
    metrics: dict[str, float]  # "train/loss" (last step), "val/…" (last validation), "test/…"
    epochs: int  # epochs run, the last one possibly cut short by trainer.max_steps
    steps: int  # optimizer steps taken


class TrainingRecord(L.Callback):
    """Each batch's training loss, in order; a run whose loss is not finite stops at once.

    Under DDP the loss is first averaged over the processes (the global batch's loss), so
    every process sees the same value and all stop at the same step. Also remembers at
    which step validation last ran, so that the final metrics describe the final weights.
    """

    def __init__(self) -> None:
        self.losses: list[Tensor] = []
        self.validated_at = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"].detach()
        if trainer.world_size > 1:
            loss = trainer.strategy.reduce(loss.clone(), reduce_op="mean")
        self.losses.append(loss)
        value = loss.item()  # (a Python float: ~10 times cheaper to test than torch.isfinite)
        if not math.isfinite(value):
            # Logged by hand: Lightning would log this step after the hook we stop it in.
            step = max(trainer.global_step - 1, 0)
            for logger in trainer.loggers:
                logger.log_metrics({"train/loss": value}, step=step)
                logger.save()
            raise Diverged(step, value)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validated_at = trainer.global_step


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The `callbacks/` group's callbacks, less those the trainer's switches turn off.

    `trainer.enable_checkpointing=false` drops the ModelCheckpoints and
    `trainer.enable_progress_bar=false` the progress bars (Lightning would refuse both).
    """
    callbacks = [instantiate(options) for options in (cfg.get("callbacks") or {}).values()]
    if not cfg.trainer.get("enable_checkpointing", True):
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def fit_lightning(
    cfg: DictConfig,
    loggers: Sequence[Logger],
    callbacks: Sequence[L.Callback] = (),
    ckpt_path: Path | None = None,
) -> FitResult:
    """Train, validate and test with `lightning.Trainer(**cfg.trainer)` and `callbacks`.

    With `ckpt_path` (a checkpoint of this run), training continues from it exactly.
    """
    model = build_model(cfg)
    module = MLPModule(
        model,
        cfg.data.task,
        cfg.data.out_features,
        optimizer_factory(cfg),
        scheduler_config(cfg),
    )
    record = TrainingRecord()
    trainer, metrics = run_trainer(
        cfg, module, build_datamodule(cfg), loggers, record, callbacks, ckpt_path
    )
    return FitResult(
        model=model,
        step_losses=torch.stack(record.losses) if record.losses else torch.zeros(0),
        metrics=metrics,
        epochs=trainer.current_epoch,
        steps=trainer.global_step,
    )


def run_trainer(
    cfg: DictConfig,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    loggers: Sequence[Logger],
    record: TrainingRecord,
    callbacks: Sequence[L.Callback] = (),
    ckpt_path: Path | None = None,
) -> tuple[L.Trainer, dict[str, float]]:
    """Fit, validate the final weights, test; return the Trainer and the final metrics.

    The metrics are the last logged `train/…` values, then `val/…` and `test/…` (also under
    a prefix, such as a replica's `replica_0/val/loss`).
    """
    # What a model draws while it trains (dropout masks) comes from the global RNG, seeded
    # here; what it is built from is seeded in `build_model`, and the data by `data.seed`.
    L.seed_everything(cfg.seed, verbose=False)
    with lightning_quiet():
        trainer = L.Trainer(
            **OmegaConf.to_container(cfg.trainer, resolve=True),
            logger=list(loggers) or False,
            callbacks=[ExactResume(), record, *callbacks],
            plugins=[AtomicCheckpointIO()],
            default_root_dir=cfg.paths.output_dir,
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        train = stage_metrics(trainer.callback_metrics, "train")  # each stage starts afresh
        if record.validated_at != trainer.global_step:
            # The last epoch was cut short (trainer.max_steps) and Lightning validates after
            # whole epochs: validate the final weights, so val/* describes the returned model.
            trainer.validate(module, datamodule=datamodule, verbose=False)
        val = stage_metrics(trainer.callback_metrics, "val")
        trainer.test(module, datamodule=datamodule, verbose=False)
        test = stage_metrics(trainer.callback_metrics, "test")
    return trainer, {**train, **val, **test}


def stage_metrics(metrics: dict[str, Tensor], stage: str) -> dict[str, float]:
    """The logged `<stage>/…` values (`train/loss`, or a replica's `replica_0/train/loss`)."""
    return {k: float(v) for k, v in metrics.items() if k.split("/")[-2:-1] == [stage]}


def raw_device(trainer: DictConfig) -> torch.device:
    """The device that `trainer.accelerator` names, as Lightning would pick it."""
    accelerator = trainer.accelerator
    if accelerator == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    return torch.device({"gpu": "cuda"}.get(accelerator, accelerator))


def fit_raw(cfg: DictConfig, loggers: Sequence[Logger]) -> FitResult:
    """Train, validate and test with the textbook loop (`mlplab.reference`).

    It logs the same tags at the same steps as Lightning (`train/loss` every
    `trainer.log_every_n_steps` steps, `val/*` after each epoch at its last step, `test/*`
    at the end) and writes the final weights as `checkpoints/last.ckpt`.
    """
    device = raw_device(cfg.trainer)
    task, out_features, t = cfg.data.task, cfg.data.out_features, cfg.trainer
    model = build_model(cfg).to(device)
    optimizer = optimizer_factory(cfg)(model.parameters())
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    train_loader = datamodule.train_dataloader()
    accumulate = t.get("accumulate_grad_batches") or 1
    max_steps = t.max_steps
    total_steps = t.max_epochs * math.ceil(len(train_loader) / accumulate)
    total_steps = min(total_steps, max_steps) if max_steps > 0 else total_steps
    scheduler = scheduler_config(cfg)
    if scheduler:
        scheduler = build_scheduler(scheduler, optimizer, total_steps)
    L.seed_everything(cfg.seed, verbose=False)  # as fit_lightning: for dropout and the like
    val_metrics = EpochMetrics(task, out_features, prefix="val").to(device)
    losses: list[Tensor] = []
    state = {"val": {}, "validated_at": -1, "epoch": 0}
    log_every = t.get("log_every_n_steps") or 50

    def log(metrics: dict[str, float], step: int) -> None:
        for logger in loggers:
            logger.log_metrics(metrics, step=step)

    def on_step(step: int, loss: Tensor) -> None:
        losses.append(loss)
        value = loss.item()
        if not math.isfinite(value):
            log({"train/loss": value, "epoch": state["epoch"]}, step - 1)
            raise Diverged(step - 1, value)
        if step % log_every == 0:
            log({"train/loss": value, "epoch": state["epoch"]}, step - 1)

    def on_epoch(epoch: int, step: int) -> dict[str, float]:
        state["val"] = reference.evaluate(model, datamodule.val_dataloader(), val_metrics, device)
        state["validated_at"], state["epoch"] = step, epoch + 1
        log({**state["val"], "epoch": epoch}, step - 1)
        return state["val"]

    steps, epochs = reference.train(
        model,
        optimizer,
        loss_function(task),
        train_loader,
        max_epochs=t.max_epochs,
        max_steps=max_steps,
        scheduler=scheduler,
        clip_val=t.get("gradient_clip_val"),
        clip_algorithm=t.get("gradient_clip_algorithm") or "norm",
        accumulate=accumulate,
        on_step=on_step,
        on_epoch=on_epoch,
        device=device,
    )
    if state["validated_at"] != steps:
        state["val"] = reference.evaluate(model, datamodule.val_dataloader(), val_metrics, device)
        log({**state["val"], "epoch": epochs}, steps)
    test_metrics = EpochMetrics(task, out_features, prefix="test").to(device)
    test = reference.evaluate(model, datamodule.test_dataloader(), test_metrics, device)
    log({**test, "epoch": epochs}, steps)
    if t.get("enable_checkpointing", True):
        weights = {f"model.{k}": v for k, v in model.state_dict().items()}
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        payload = {"state_dict": weights, "global_step": steps, "epoch": epochs}
        replace_atomically(path, lambda file: torch.save(payload, file))
    for logger in loggers:
        logger.save()
    last = {"train/loss": losses[-1].item()} if losses else {}
    return FitResult(
        model=model,
        step_losses=torch.stack(losses) if losses else torch.zeros(0),
        metrics={**last, **state["val"], **test},
        epochs=epochs,
        steps=steps,
    )
