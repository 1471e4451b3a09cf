"""The LightningModule trains exactly like the textbook loop: same losses, same weights.

Both engines build model, optimizer, scheduler, loss and batches from the same functions;
this file holds them to it, bit for bit, for every optimizer × activation × task (the fast
run covers each pair of optimizer and activation, and each task; CI runs them all), and for
the Trainer options that change the maths: schedulers, clipping, accumulation. Then it
shows the comparison has teeth: a loop that forgets `zero_grad`, reshuffles wrongly, or
skips the clipping, is caught.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import mlplab.reference
from mlplab.build import build_datamodule, build_model
from mlplab.data import EpochOrder
from mlplab.fit import FitResult, build_callbacks, fit_lightning, fit_raw

from .conftest import TINY_STEPS_PER_EPOCH, option_names

FAST = ["logger=none", "trainer.enable_checkpointing=false"]


def fit_both(cfg) -> tuple[FitResult, FitResult]:
    return fit_lightning(cfg, [], build_callbacks(cfg)), fit_raw(cfg, [])


def state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def assert_same_training(lightning: FitResult, raw: FitResult, steps: int) -> None:
    assert lightning.steps == raw.steps == steps
    assert lightning.epochs == raw.epochs
    assert lightning.step_losses.shape == (steps,)
    # CPU float32, the same kernels in the same order: no tolerance is needed.
    assert torch.equal(lightning.step_losses, raw.step_losses)
    assert state_dicts_equal(lightning.model, raw.model)
    assert lightning.metrics == raw.metrics


def test_tiny_run_covers_a_partial_batch_and_a_second_shuffled_epoch(make_cfg) -> None:
    datamodule = build_datamodule(make_cfg())
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    sizes = [len(x) for x, _ in loader]
    assert len(sizes) == TINY_STEPS_PER_EPOCH and sizes[-1] < sizes[0]
    order = loader.batch_sampler.sampler
    first = order.order()
    order.set_epoch(1)
    assert not torch.equal(first, torch.arange(len(first)))
    assert not torch.equal(first, order.order())
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
def test_lightning_equals_reference_loop(make_cfg, optimizer, activation, task) -> None:
    cfg = make_cfg(f"optimizer={optimizer}", f"activation={activation}", f"data={task}", *FAST)
    assert state_dicts_equal(build_model(cfg), build_model(cfg))  # same starting point
    assert_same_training(*fit_both(cfg), steps=cfg.trainer.max_steps)


# 8 batches an epoch, 12 steps: epoch schedulers step once, step schedulers 12 times.
SCHEDULES = {
    "step": ["scheduler=step", "scheduler.scheduler.step_size=1"],
    "cosine": ["scheduler=cosine"],
    "onecycle": ["scheduler=onecycle"],
    # plateau needs whole epochs: 4 of them, with no patience, so the lr drops at least once
    "plateau": [
        "scheduler=plateau",
        "scheduler.scheduler.patience=0",
        "trainer.max_steps=-1",
        "trainer.max_epochs=4",
    ],
    "step-every-3-batches": ["scheduler=onecycle", "scheduler.frequency=3"],
}


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_schedulers_step_alike_in_both_engines(make_cfg, schedule, optimizer) -> None:
    cfg = make_cfg(f"optimizer={optimizer}", *SCHEDULES[schedule], *FAST)
    lightning, raw = fit_both(cfg)
    assert_same_training(lightning, raw, steps=lightning.steps)


@pytest.mark.parametrize(
    "options",
    [
        ["trainer.gradient_clip_val=0.05", "optimizer.lr=0.5"],
        ["trainer.gradient_clip_val=0.001", "trainer.gradient_clip_algorithm=value"],
    ],
    ids=["norm", "value"],
)
def test_gradient_clipping_equals_the_raw_loop_and_changes_the_weights(make_cfg, options):
    cfg = make_cfg("optimizer=sgd", *options, *FAST)
    lightning, raw = fit_both(cfg)
    assert_same_training(lightning, raw, steps=cfg.trainer.max_steps)
    unclipped = fit_raw(make_cfg("optimizer=sgd", *options[1:], *FAST), [])
    assert not state_dicts_equal(lightning.model, unclipped.model)  # clipping had an effect


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_accumulation_equals_the_raw_loop(make_cfg, optimizer) -> None:
    # 8 batches an epoch in windows of 3: 3 steps an epoch, the last from 2 batches
    cfg = make_cfg(f"optimizer={optimizer}", "trainer.accumulate_grad_batches=3", *FAST)
    lightning = fit_lightning(cfg, [], build_callbacks(cfg))
    raw = fit_raw(cfg, [])
    assert lightning.steps == raw.steps == cfg.trainer.max_steps
    assert state_dicts_equal(lightning.model, raw.model)
    assert lightning.metrics["val/loss"] == raw.metrics["val/loss"]


def test_accumulating_2_batches_of_b_equals_one_batch_of_2b(make_cfg) -> None:
    """SGD on a mean loss: the mean of two half-batch gradients is the whole batch's."""
    steps = ["trainer.max_steps=-1", "trainer.max_epochs=2", "data.num_samples=320", *FAST]
    halves = fit_lightning(
        make_cfg("optimizer=sgd", "data.batch_size=8", "trainer.accumulate_grad_batches=2", *steps),
        [],
    )
    whole = fit_lightning(make_cfg("optimizer=sgd", "data.batch_size=16", *steps), [])
    assert halves.steps == whole.steps == 24  # 192 training samples / 16, twice
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(halves.model.state_dict()[name], value, rtol=1e-6, atol=1e-6)


def step_without_zero_grad(model, optimizer, *args, **kwargs):
    """The seed's question: the textbook loop, minus `optimizer.zero_grad()`."""
    optimizer.zero_grad = lambda *a, **k: None
    return original_train(model, optimizer, *args, **kwargs)


original_train = mlplab.reference.train


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_parity_catches_a_loop_without_zero_grad(make_cfg, monkeypatch, optimizer):
    cfg = make_cfg(f"optimizer={optimizer}", *FAST)
    lightning = fit_lightning(cfg, [])
    monkeypatch.setattr(mlplab.reference, "train", step_without_zero_grad)
    raw = fit_raw(cfg, [])
    # Steps 0 and 1 still agree (no stale gradient has been added yet); from step 2 on the
    # accumulated gradients change every update.
    assert torch.equal(lightning.step_losses[:2], raw.step_losses[:2])
    assert not torch.equal(lightning.step_losses[2:], raw.step_losses[2:])
    assert not state_dicts_equal(lightning.model, raw.model)


def test_parity_catches_a_loop_that_repeats_the_first_epoch_order(make_cfg, monkeypatch):
    cfg = make_cfg(*FAST)
    lightning = fit_lightning(cfg, [])
    monkeypatch.setattr(EpochOrder, "set_epoch", lambda self, epoch: None)
    raw = fit_raw(cfg, [])
    first_epoch = slice(0, TINY_STEPS_PER_EPOCH)
    assert torch.equal(lightning.step_losses[first_epoch], raw.step_losses[first_epoch])
    assert not torch.equal(lightning.step_losses, raw.step_losses)
    assert not state_dicts_equal(lightning.model, raw.model)


def test_parity_catches_a_loop_that_forgets_to_clip(make_cfg, monkeypatch):
    cfg = make_cfg("optimizer=sgd", "optimizer.lr=0.5", "trainer.gradient_clip_val=0.05", *FAST)
    lightning = fit_lightning(cfg, [])
    monkeypatch.setattr(mlplab.reference, "clip_gradients", lambda *args: None)
    raw = fit_raw(cfg, [])
    assert torch.equal(lightning.step_losses[:1], raw.step_losses[:1])
    assert not state_dicts_equal(lightning.model, raw.model)


def test_reference_loop_imports_no_lightning() -> None:
    """The textbook page is plain PyTorch: importing it loads no Lightning at all."""
    import subprocess
    import sys

    code = "import sys, mlplab.reference; print('lightning' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
