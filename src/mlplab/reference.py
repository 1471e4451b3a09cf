"""The reference engine: the textbook training loop in plain PyTorch. No Lightning here.

Forward, loss, backward, step, zero_grad: the five steps of the course, plus the options a
Trainer offers that change the maths (gradient clipping, accumulation, an lr scheduler), so
that `tests/test_parity.py` can hold the LightningModule to this loop, bit for bit.
The model, optimizer, scheduler, loss and batches come from `mlplab.build`, as for Lightning.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Any

import torch
from torch import Tensor, nn

OnStep = Callable[[int, Tensor], None]  # (optimizer steps taken, the batch loss)
OnEpoch = Callable[[int, int], dict[str, float]]  # (epoch, steps) -> validation metrics


def clip_gradients(model: nn.Module, clip_val: float, algorithm: str = "norm") -> None:
    """Clip the gradients as `trainer.gradient_clip_val/_algorithm` ask Lightning to."""
    if algorithm == "value":
        nn.utils.clip_grad_value_(model.parameters(), clip_val)
    else:
        nn.utils.clip_grad_norm_(model.parameters(), clip_val)


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    loader: Any,
    max_epochs: int,
    max_steps: int = -1,
    scheduler: dict[str, Any] | None = None,
    clip_val: float | None = None,
    clip_algorithm: str = "norm",
    accumulate: int = 1,
    on_step: OnStep = lambda step, loss: None,
    on_epoch: OnEpoch = lambda epoch, step: {},
    device: torch.device | str = "cpu",
) -> tuple[int, int]:
    """Train for `max_epochs` (or `max_steps` optimizer steps); return (steps, epochs begun).

    `scheduler` is Lightning's lr_scheduler dict: the scheduler, its `interval` ("step" or
    "epoch"), `frequency`, and the `monitor`ed metric of ReduceLROnPlateau.
    """
    step, num_batches = 0, len(loader) if isinstance(loader, Sized) else -1
    for epoch in range(max_epochs):
        for sampler in (loader.sampler, loader.batch_sampler):  # as Lightning does:
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)  # this epoch's shuffled order
        model.train()
        for i, (x, y) in enumerate(loader):
            loss = loss_fn(model(x.to(device)), y.to(device))  # 1. forward  2. loss
            (loss / accumulate if accumulate > 1 else loss).backward()  # 3. backward
            if (i + 1) % accumulate != 0 and i + 1 != num_batches:
                continue  # gradients add up over `accumulate` batches, then one step
            if clip_val:
                clip_gradients(model, clip_val, clip_algorithm)
            optimizer.step()  # 4. step
            optimizer.zero_grad()  # 5. zero_grad: the next backward starts from nothing
            step += 1
            if scheduler and scheduler["interval"] == "step":
                step_scheduler(scheduler, i)
            on_step(step, loss.detach())
            if step == max_steps:
                break
        if i + 1 == num_batches:  # a whole epoch: validate, as Lightning does
            metrics = on_epoch(epoch, step)
            if scheduler and scheduler["interval"] == "epoch":
                step_scheduler(scheduler, epoch, metrics)
        if step == max_steps:
            return step, epoch + 1
    return step, max_epochs


def step_scheduler(scheduler: dict[str, Any], index: int, metrics: dict | None = None) -> None:
    """Step the scheduler every `frequency` batches or epochs (`index` counts from 0)."""
    if (index + 1) % scheduler.get("frequency", 1) != 0:
        return
    if isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler["scheduler"].step(metrics[scheduler.get("monitor", "val/loss")])
    else:
        scheduler["scheduler"].step()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, metrics: Any, device: torch.device) -> dict[str, float]:
    """One pass over `loader` in eval mode: the loss and scores, as `{"val/loss": …}`."""
    model.eval()
    for x, y in loader:
        metrics.update(model(x.to(device)), y.to(device))
    values = {name: value.item() for name, value in metrics.compute().items()}
    metrics.reset()
    return values
