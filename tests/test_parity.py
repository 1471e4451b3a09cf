"""The Lightning engine trains exactly like the textbook loop: same losses, same weights.

Both engines build model, optimizer, loss and batches from the same functions; this file
holds them to it, bit for bit, for every optimizer × activation × task (the fast run covers
each pair of optimizer and activation, and each task; CI runs them all). Then it shows the
comparison has teeth: a loop that forgets `zero_grad`, or reshuffles wrongly, is caught.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import mlplab.reference
from mlplab.build import build_datamodule, build_model
from mlplab.data import EpochBatchSampler
from mlplab.fit import FitResult, fit_lightning
from mlplab.reference import fit_reference

from .conftest import TINY_STEPS_PER_EPOCH, option_names

FAST = ["logger=none", "trainer.enable_checkpointing=false"]


def fit_both(cfg, tmp_path: Path) -> tuple[FitResult, FitResult]:
    lightning = fit_lightning(cfg, [], tmp_path / "lightning")
    raw = fit_reference(cfg, [], tmp_path / "raw")
    return lightning, raw


def state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_run_covers_a_partial_batch_and_a_second_shuffled_epoch(make_cfg) -> None:
    datamodule = build_datamodule(make_cfg())
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    sizes = [len(x) for x, _ in loader]
    assert len(sizes) == TINY_STEPS_PER_EPOCH and sizes[-1] < sizes[0]
    sampler = loader.sampler
    first = sampler.order()
    sampler.set_epoch(1)
    assert not torch.equal(first, torch.arange(len(first)))
    assert not torch.equal(first, sampler.order())
    assert make_cfg().trainer.max_steps > TINY_STEPS_PER_EPOCH


def every_optimizer_activation_and_task() -> list:
    """Every optimizer × activation × task. The default (fast) run takes the ones where each
    optimizer meets each activation, the tasks taking turns; the rest run with the slow tests,
    in CI."""
    pairs = itertools.product(option_names("optimizer"), option_names("activation"))
    tasks = option_names("data")
    return [
        pytest.param(
            optimizer,
            activation,
            task,
            marks=() if t == i % len(tasks) else pytest.mark.slow,
            id=f"{optimizer}-{activation}-{task}",
        )
        for i, (optimizer, activation) in enumerate(pairs)
        for t, task in enumerate(tasks)
    ]


@pytest.mark.parametrize(("optimizer", "activation", "task"), every_optimizer_activation_and_task())
def test_lightning_equals_reference_loop(make_cfg, tmp_path, optimizer, activation, task) -> None:
    cfg = make_cfg(f"optimizer={optimizer}", f"activation={activation}", f"data={task}", *FAST)
    assert state_dicts_equal(build_model(cfg), build_model(cfg))  # same starting point
    lightning, raw = fit_both(cfg, tmp_path)
    assert lightning.steps == raw.steps == cfg.trainer.max_steps
    assert lightning.step_losses.shape == (cfg.trainer.max_steps,)
    # CPU float32, the same kernels in the same order: no tolerance is needed.
    assert torch.equal(lightning.step_losses, raw.step_losses)
    assert state_dicts_equal(lightning.model, raw.model)
    assert lightning.metrics == raw.metrics


# 8 batches an epoch, 12 steps: iterations of 3 cut the run inside an iteration mid-epoch;
# of 5, a shorter last iteration per epoch; of 100 (whole epochs), a cut in the epoch's last.
@pytest.mark.parametrize("steps_per_iteration", [1, 3, 5, 100])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_several_steps_per_iteration_train_exactly_like_one(
    make_cfg, tmp_path, optimizer, steps_per_iteration
) -> None:
    cfg = make_cfg(f"optimizer={optimizer}", f"steps_per_iteration={steps_per_iteration}", *FAST)
    lightning, raw = fit_both(cfg, tmp_path)
    assert lightning.steps == raw.steps == cfg.trainer.max_steps
    assert torch.equal(lightning.step_losses, raw.step_losses)
    assert state_dicts_equal(lightning.model, raw.model)
    assert lightning.metrics == raw.metrics


def test_the_default_takes_several_steps_per_iteration(make_cfg) -> None:
    """So the big parity matrix above covers the default, manual-optimization path."""
    assert make_cfg().steps_per_iteration > 1


def step_without_zero_grad(model, optimizer, loss_fn, x, y):
    """The seed's question: the textbook step, minus `optimizer.zero_grad()`."""
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_parity_catches_a_loop_without_zero_grad(make_cfg, tmp_path, monkeypatch, optimizer):
    cfg = make_cfg(f"optimizer={optimizer}", *FAST)
    lightning = fit_lightning(cfg, [], tmp_path / "lightning")
    monkeypatch.setattr(mlplab.reference, "reference_step", step_without_zero_grad)
    raw = fit_reference(cfg, [], tmp_path / "raw")
    # Steps 0 and 1 still agree (no stale gradient has been added yet); from step 2 on the
    # accumulated gradients change every update.
    assert torch.equal(lightning.step_losses[:2], raw.step_losses[:2])
    assert not torch.equal(lightning.step_losses[2:], raw.step_losses[2:])
    assert not state_dicts_equal(lightning.model, raw.model)


def test_parity_catches_a_loop_that_repeats_the_first_epoch_order(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(*FAST)
    lightning = fit_lightning(cfg, [], tmp_path / "lightning")
    monkeypatch.setattr(EpochBatchSampler, "set_epoch", lambda self, epoch: None)
    raw = fit_reference(cfg, [], tmp_path / "raw")
    first_epoch = slice(0, TINY_STEPS_PER_EPOCH)
    assert torch.equal(lightning.step_losses[first_epoch], raw.step_losses[first_epoch])
    assert not torch.equal(lightning.step_losses, raw.step_losses)
    assert not state_dicts_equal(lightning.model, raw.model)
