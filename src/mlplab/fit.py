"""Fitting with Lightning, and what any engine hands back."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mlplab.build import build_datamodule, build_model, optimizer_factory
from mlplab.checkpoint import AtomicCheckpointIO
from mlplab.curves import LossCurve
from mlplab.module import ChunkedMLPModule, MLPModule
from mlplab.progress import TrainingProgress, planned_steps
from mlplab.resume import STATE_KEY, checkpoint_state, restore_rng

# Lightning's advice that does not apply to mlplab, silenced by message while it trains:
IRRELEVANT_WARNINGS = (
    # our loaders serve in-memory tensors, for which worker processes are pure overhead;
    r".*does not have many workers.*",
    # the loss curve is written by mlplab.curves.LossCurve, not by every-n-steps logging;
    r".*smaller than the logging interval.*",
    # mlplab's batch sampler is resumed from the position its checkpoint records (see
    # mlplab.resume), a mechanism Lightning's mid-epoch check cannot see;
    r".*resuming from a checkpoint that ended before the epoch ended.*",
    # Lightning 2.6 calls a torch.utils._pytree API that torch 2.13 deprecated.
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
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


@dataclass
class FitResult:
    """A trained model and what happened on the way; both engines return one."""

    model: nn.Module
    step_losses: Tensor  # (steps,) training loss of each optimizer step, in order
    metrics: dict[str, float]  # "train/loss" (last step), "val/…" (last epoch), "test/…"
    epochs: int  # epochs run, the last one possibly cut short by trainer.max_steps
    steps: int  # optimizer steps taken


class Bookkeeping(L.Callback):
    """What the raw loop does around each step, done for Lightning, in one callback.

    Records the loss curve, advances the progress bar, keeps `last.ckpt` current (after
    every epoch, validation included, and every `every_n_steps` steps within one; never
    when `path` is None), and remembers the latest validation. Each checkpoint carries
    `mlplab.resume.checkpoint_state`, for an exact resume. One callback, not three: each
    callback costs Lightning a dispatch on every hook of every step.
    """

    def __init__(
        self,
        job_dir: Path,
        path: Path | None,
        every_n_steps: int,
        steps_per_epoch: int,
        curve: LossCurve,
        progress: TrainingProgress,
    ) -> None:
        self.job_dir = job_dir
        self.path = path
        self.every_n_steps = every_n_steps if path else 0
        self.steps_per_epoch = steps_per_epoch
        self.curve = curve
        self.progress = progress
        self.validated_at = -1  # the step whose weights `val_metrics` describe
        self.val_metrics: dict[str, float] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.progress.epoch(trainer.current_epoch)  # a mid-epoch resume has no epoch start
        self.progress.start()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.progress.epoch(trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        losses = outputs["loss"]  # the step's loss, or one per step of a `ChunkedMLPModule`
        self.curve.append(losses)
        taken = losses.numel()
        self.progress.step(taken)
        if trainer.global_step == trainer.max_steps and self.mid_epoch(trainer.global_step):
            # max_steps cut an epoch short inside its last iteration (several steps per
            # iteration), which Lightning would validate as the epoch's end. As with one step
            # per iteration, fit_lightning validates the final weights after fit instead.
            trainer.check_val_every_n_epoch = sys.maxsize
        if self.every_n_steps:
            step, n = trainer.global_step, self.every_n_steps
            # A multiple of n reached in this iteration (its last step, with one step per
            # iteration); an epoch's last step is saved at the epoch's end, after validation.
            if step // n > (step - taken) // n and self.mid_epoch(step):
                trainer.save_checkpoint(self.path, weights_only=False)

    def mid_epoch(self, step: int) -> bool:
        """Whether `step` falls inside an epoch rather than at its end."""
        return step % self.steps_per_epoch != 0

    def on_validation_end(self, trainer, pl_module) -> None:
        self.validated_at = trainer.global_step
        metrics = trainer.callback_metrics.items()
        self.val_metrics = {k: float(v) for k, v in metrics if k.startswith("val/")}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.curve.flush()
        if self.path:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_end(self, trainer, pl_module) -> None:
        self.progress.stop()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.progress.stop()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.curve.flush()
        step = trainer.global_step
        state = checkpoint_state(
            step,
            self.steps_per_epoch,
            self.validated_at == step,
            self.curve.last,
            self.job_dir,
            trainer.loggers,
        )
        checkpoint[STATE_KEY] = state | {"val_metrics": self.val_metrics}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        state = checkpoint[STATE_KEY]
        restore_rng(state["rng"])
        if state["position"]["validated"]:
            self.validated_at = state["position"]["step"]
            self.val_metrics = state["val_metrics"]


def fit_lightning(
    cfg: DictConfig,
    loggers: list[Logger],
    checkpoint_dir: Path,
    resume_from: Path | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> FitResult:
    """Train and test with `lightning.Trainer`, configured by `cfg.trainer`.

    With `resume_from` (a checkpoint of this run), training continues from it exactly;
    `callbacks` are added after mlplab's own.
    """
    model = build_model(cfg)
    steps_per_iteration = cfg.steps_per_iteration
    module_class = MLPModule if steps_per_iteration == 1 else ChunkedMLPModule
    module = module_class(model, cfg.data.task, cfg.data.get("num_classes"), optimizer_factory(cfg))
    datamodule = build_datamodule(cfg)
    datamodule.group(steps_per_iteration)
    datamodule.setup("fit")
    position = read_position(resume_from)
    datamodule.resume_at(position["epoch"], position["batch"])
    curve = LossCurve(loggers, first_step=position["step"])
    path = checkpoint_dir / "last.ckpt" if cfg.trainer.enable_checkpointing else None
    progress = TrainingProgress(cfg.trainer.enable_progress_bar, total=0, done=position["step"])
    record = Bookkeeping(
        checkpoint_dir.parent, path, cfg.checkpoint.every_n_steps, 1, curve, progress
    )
    trainer_options = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_options["enable_checkpointing"] = False  # Bookkeeping writes the checkpoints
    trainer_options["enable_progress_bar"] = False  # Bookkeeping shows a lighter one
    with lightning_quiet(), curve:
        trainer = L.Trainer(
            **trainer_options,
            logger=loggers or False,
            callbacks=[record, *callbacks],
            plugins=[AtomicCheckpointIO()],
            use_distributed_sampler=False,  # EpochBatchSampler shards the data itself
            default_root_dir=checkpoint_dir.parent,
        )
        if trainer.world_size > 1:
            datamodule.shard(trainer.world_size, trainer.global_rank)
            curve.reduce = lambda losses: trainer.strategy.reduce(losses, reduce_op="mean")
            progress.enabled &= trainer.is_global_zero
        record.steps_per_epoch = datamodule.steps_per_epoch()
        progress.total(
            planned_steps(cfg.trainer.max_epochs, cfg.trainer.max_steps, record.steps_per_epoch)
        )
        # The loaders, not the DataModule: with a DataModule attached, Lightning asks on every
        # batch whether it overrides each batch-transfer hook (~10 calls per step).
        loaders = {
            "train_dataloaders": datamodule.train_dataloader(),
            "val_dataloaders": datamodule.val_dataloader(),
        }
        trainer.fit(module, **loaders, ckpt_path=resume_from, weights_only=True)
        if record.validated_at != trainer.global_step:
            # trainer.max_steps cut the last epoch short, and Lightning validates only after
            # whole epochs: validate the final weights, so val/* describes the returned model.
            trainer.validate(module, dataloaders=loaders["val_dataloaders"], verbose=False)
        steps, epochs = trainer.global_step, trainer.current_epoch
        (test,) = trainer.test(module, dataloaders=datamodule.test_dataloader(), verbose=False)
        losses = curve.values()
    last_loss = curve.last if curve.last is not None else position["last_loss"]
    return FitResult(
        model=model,
        step_losses=losses,
        metrics={"train/loss": last_loss, **record.val_metrics, **test},
        epochs=epochs,
        steps=steps,
    )


def read_position(checkpoint_path: Path | None) -> dict:
    """Where a run resumes: the "position" a checkpoint recorded, or the very start."""
    if checkpoint_path is None:
        return {"step": 0, "epoch": 0, "batch": 0, "last_loss": None}
    checkpoint = torch.load(checkpoint_path, weights_only=True, map_location="cpu")
    return checkpoint[STATE_KEY]["position"]
