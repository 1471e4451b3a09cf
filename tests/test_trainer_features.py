"""Lightning's own features, from the command line, under the default config: each one shows
its effect (early stopping stops early, a scheduler moves the logged lr, …), not just exit 0."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from mlplab.train import train

from .test_engines import scalars

# 300 samples → 180 for training → 12 batches of 16 an epoch.
SMALL = [
    "data.num_samples=300",
    "data.batch_size=16",
    "model.hidden=8",
    "trainer.max_steps=-1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]


def summary(tmp_path, name: str = "job") -> dict:
    return json.loads((tmp_path / name / "metrics.json").read_text())


def test_early_stopping_stops_before_max_epochs_on_a_plateau(make_cfg, tmp_path) -> None:
    # lr 0: val/loss never improves, so patience 2 stops the run after 3 validations
    cfg = make_cfg(
        *SMALL,
        "trainer.max_epochs=20",
        "optimizer=sgd",
        "optimizer.lr=1e-12",
        "callbacks=[default,early_stopping]",
        "callbacks.early_stopping.patience=2",
        "callbacks.early_stopping.min_delta=0.01",
        tiny=False,
    )
    train(cfg)
    done = summary(tmp_path)
    assert done["status"] == "completed" and done["epochs"] == 3 < 20
    assert len(scalars(tmp_path / "job")["val/loss"]) == 3


def test_best_k_checkpoints_keep_the_lowest_val_losses(make_cfg, tmp_path) -> None:
    cfg = make_cfg(
        *SMALL, "trainer.max_epochs=5", "callbacks=[default,best_checkpoint]", tiny=False
    )
    train(cfg)
    directory = tmp_path / "job" / "checkpoints"
    best = sorted(p.name for p in directory.glob("best-*.ckpt"))
    assert len(best) == 3 and (directory / "last.ckpt").exists()
    val = sorted(value for _, value in scalars(tmp_path / "job")["val/loss"])
    kept = sorted(float(name.split("val_loss")[1].removesuffix(".ckpt")) for name in best)
    assert kept == pytest.approx(val[:3], abs=1e-4)  # the 3 lowest of the 5


def test_a_scheduler_moves_the_logged_learning_rate(make_cfg, tmp_path) -> None:
    cfg = make_cfg(
        *SMALL,
        "trainer.max_epochs=3",
        "optimizer=sgd",
        "optimizer.lr=0.1",
        "scheduler=step",
        "scheduler.scheduler.step_size=1",
        "scheduler.scheduler.gamma=0.5",
        "callbacks=[default,lr_monitor]",
        tiny=False,
    )
    train(cfg)
    lr = scalars(tmp_path / "job")["lr-SGD"]
    assert [step for step, _ in lr] == list(range(36))  # every optimizer step
    by_epoch = [lr[i][1] for i in (0, 12, 24)]
    assert by_epoch == pytest.approx([0.1, 0.05, 0.025])


def test_fast_dev_run_trains_validates_and_tests_one_batch(make_cfg, tmp_path) -> None:
    train(make_cfg(*SMALL, "debug=fdr", tiny=False))
    done = summary(tmp_path)
    assert done["status"] == "completed" and done["steps"] == 1
    metrics = done["metrics"]
    assert math.isfinite(metrics["val/loss"]) and math.isfinite(metrics["test/loss"])


def test_limit_train_batches_counts_optimizer_steps(make_cfg, tmp_path) -> None:
    train(make_cfg(*SMALL, "trainer.max_epochs=2", "trainer.limit_train_batches=5", tiny=False))
    assert summary(tmp_path)["steps"] == 10
    assert [s for s, _ in scalars(tmp_path / "job")["train/loss"]] == list(range(10))


@pytest.mark.slow
def test_overfit_batches_drives_the_training_loss_towards_zero(make_cfg, tmp_path) -> None:
    cfg = make_cfg(*SMALL, "debug=overfit", "trainer.max_epochs=150", "model.hidden=64", tiny=False)
    train(cfg)
    losses = [value for _, value in scalars(tmp_path / "job")["train/loss"]]
    assert len(losses) == 150  # one batch per epoch
    assert losses[-1] < 0.05 * losses[0]  # the same batch, learnt by heart


def test_val_check_interval_validates_twice_an_epoch(make_cfg, tmp_path) -> None:
    train(make_cfg(*SMALL, "trainer.max_epochs=2", "trainer.val_check_interval=0.5", tiny=False))
    assert [step for step, _ in scalars(tmp_path / "job")["val/loss"]] == [5, 11, 17, 23]


def test_profiler_reports_where_the_time_goes(make_cfg, caplog) -> None:
    with caplog.at_level(logging.INFO):
        train(make_cfg(*SMALL, "debug=profiler", tiny=False))
    assert "run_training_batch" in caplog.text  # the profiler's report, through logging


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_runs_repeat_bit_for_bit(make_cfg, tmp_path, deterministic) -> None:
    for name in ("a", "b"):
        train(make_cfg(f"trainer.deterministic={deterministic}", name=name))
    weights = [
        torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for name in ("a", "b")
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    torch.use_deterministic_algorithms(False)
