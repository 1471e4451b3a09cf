"""The reference engine: the textbook training loop in plain PyTorch.

It builds the model, optimizer, loss and batches with the very functions the Lightning
engine uses, so that the two must end with the same weights; `tests/test_parity.py` holds
them to it. It also logs, validates and checkpoints like the Lightning engine, so
`engine=raw` is a real choice, not just a test fixture.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mlplab.build import build_datamodule, build_model, optimizer_factory
from mlplab.checkpoint import CheckpointWriter
from mlplab.curves import LossCurve
from mlplab.fit import FitResult, read_position
from mlplab.progress import TrainingProgress, planned_steps
from mlplab.resume import STATE_KEY, checkpoint_state, restore_rng
from mlplab.tasks import EpochMetrics, loss_function

LossFn = Callable[[Tensor, Tensor], Tensor]


def reference_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, x: Tensor, y: Tensor
) -> Tensor:
    """One optimizer step, as the textbook writes it; returns the (detached) batch loss."""
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()


def reference_device(trainer: DictConfig) -> torch.device:
    """The device that `trainer.accelerator` names, as Lightning would pick it."""
    if trainer.get("devices", 1) not in (1, "1", "auto"):
        raise ValueError("engine=raw trains on one device; use engine=lightning for more")
    if str(trainer.get("precision", "32-true")) not in ("32", "32-true"):
        raise ValueError("engine=raw trains in float32 only (trainer.precision=32-true)")
    accelerator = trainer.accelerator
    if accelerator == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    return torch.device({"gpu": "cuda", "cuda": "cuda"}.get(accelerator, accelerator))


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, metrics: EpochMetrics, device: torch.device
) -> dict[str, float]:
    """One pass over `loader`: the loss and scores, as `{"val/loss": …}`."""
    model.eval()
    for x, y in loader:
        metrics.update(model(x.to(device)), y.to(device))
    values = {name: value.item() for name, value in metrics.compute().items()}
    metrics.reset()
    return values


def log_all(loggers: list[Logger], metrics: dict[str, float], step: int) -> None:
    """Write `metrics` at `step` to every logger."""
    for logger in loggers:
        logger.log_metrics(metrics, step=step)


def fit_reference(
    cfg: DictConfig, loggers: list[Logger], checkpoint_dir: Path, resume_from: Path | None = None
) -> FitResult:
    """Train with the textbook loop for `trainer.max_epochs` (or `max_steps`), then test.

    With `resume_from` (a checkpoint of this run), training continues from it exactly.
    """
    device = reference_device(cfg.trainer)
    task, num_classes = cfg.data.task, cfg.data.get("num_classes")
    model = build_model(cfg).to(device)
    optimizer = optimizer_factory(cfg)(model.parameters())
    loss_fn = loss_function(task)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    steps_per_epoch = datamodule.steps_per_epoch()
    job_dir = checkpoint_dir.parent
    path = checkpoint_dir / "last.ckpt" if cfg.trainer.enable_checkpointing else None

    position, val, validated_at = read_position(resume_from), {}, -1
    if resume_from is not None:
        checkpoint = torch.load(resume_from, weights_only=True, map_location=device)
        model.load_state_dict(
            {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
        )
        optimizer.load_state_dict(checkpoint["optimizer_states"][0])
        restore_rng(checkpoint[STATE_KEY]["rng"])
        if position["validated"]:
            validated_at, val = position["step"], checkpoint[STATE_KEY]["val_metrics"]
    datamodule.resume_at(position["epoch"], position["batch"])
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    val_metrics = EpochMetrics(task, num_classes, prefix="val").to(device)
    curve = LossCurve(loggers, first_step=position["step"])

    def save() -> None:
        curve.flush()
        state = checkpoint_state(
            step, steps_per_epoch, validated_at == step, curve.last, job_dir, loggers
        )
        payload = {
            "epoch": epoch,
            "global_step": step,
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "optimizer_states": [optimizer.state_dict()],
            STATE_KEY: state | {"val_metrics": val},
        }
        writer.save(payload, path)

    max_epochs, max_steps = cfg.trainer.max_epochs, cfg.trainer.max_steps
    total = planned_steps(max_epochs, max_steps, steps_per_epoch)
    progress = TrainingProgress(cfg.trainer.enable_progress_bar, total, done=position["step"])
    step, epoch, batch = position["step"], position["epoch"], position["batch"]
    writer = CheckpointWriter()
    with curve, progress, writer:
        while epoch < max_epochs and step != max_steps:
            train_loader.sampler.set_epoch(epoch)
            model.train()
            progress.epoch(epoch)
            for x, y in train_loader:
                curve.append(reference_step(model, optimizer, loss_fn, x.to(device), y.to(device)))
                step, batch = step + 1, batch + 1
                progress.step()
                every = cfg.checkpoint.every_n_steps
                if path and every and step % every == 0 and batch < steps_per_epoch:
                    save()
                if step == max_steps:
                    break
            curve.flush()
            if batch == steps_per_epoch:
                # Like Lightning: validate after each whole epoch, logged at the epoch's last step.
                val = evaluate(model, val_loader, val_metrics, device)
                log_all(loggers, {**val, "epoch": epoch}, step - 1)
                validated_at = step
            epoch, batch = epoch + 1, 0
            if path:
                save()
    if validated_at != step:
        # max_steps cut the last epoch short: validate the final weights (as fit_lightning does).
        val = evaluate(model, val_loader, val_metrics, device)
        log_all(loggers, {**val, "epoch": epoch}, step)

    test_metrics = EpochMetrics(task, num_classes, prefix="test").to(device)
    test = evaluate(model, datamodule.test_dataloader(), test_metrics, device)
    log_all(loggers, {**test, "epoch": epoch}, step)
    last_loss = curve.last if curve.last is not None else position["last_loss"]
    metrics = {"train/loss": last_loss, **val, **test}
    return FitResult(
        model=model, step_losses=curve.values(), metrics=metrics, epochs=epoch, steps=step
    )
