"""`train(cfg)` end to end, in-process: outputs on disk, both engines alike, runs reproducible."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlplab.train import train

from .conftest import TINY_STEPS_PER_EPOCH


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in a job's TensorBoard directory, read by TensorBoard itself.

    Each series is put in step order, as TensorBoard plots it: it reads a run's event files
    in name order, and names made in one process end in a counter that sorts as text
    (`.10` before `.9`).
    """
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: sorted(((e.step, e.value) for e in events.Scalars(tag)), key=lambda point: point[0])
        for tag in events.Tags()["scalars"]
    }


def checkpoint_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


# 8 batches an epoch; max_steps=12 stops inside epoch 1, 16 at its end.
@pytest.mark.parametrize("max_steps", [12, 16, -1], ids=["cut-mid-epoch", "cut-at-end", "whole"])
@pytest.mark.parametrize("log_every", [1, pytest.param(5, marks=pytest.mark.slow)])
def test_both_engines_write_the_same_outputs(make_cfg, tmp_path, max_steps, log_every) -> None:
    runs = {}
    for engine in ("lightning", "raw"):
        cfg = make_cfg(
            f"engine={engine}",
            f"trainer.max_steps={max_steps}",
            "trainer.max_epochs=2",
            f"trainer.log_every_n_steps={log_every}",
            name=engine,
        )
        metrics = train(cfg, overrides=[f"engine={engine}"])
        run = tmp_path / engine
        summary = json.loads((run / "metrics.json").read_text())
        assert summary["status"] == "completed" and summary["engine"] == engine
        assert summary["overrides"] == [f"engine={engine}"]
        assert summary["metrics"] == metrics
        runs[engine] = (summary, scalars(run), checkpoint_weights(run))
    (l_sum, l_tb, l_ckpt), (r_sum, r_tb, r_ckpt) = runs["lightning"], runs["raw"]
    steps = max_steps if max_steps > 0 else 2 * TINY_STEPS_PER_EPOCH
    assert l_sum["steps"] == r_sum["steps"] == steps and l_sum["epochs"] == r_sum["epochs"] == 2
    assert l_sum["metrics"] == r_sum["metrics"]
    assert {"train/loss", "val/loss", "val/r2", "val/mse", "test/loss", "test/r2"} <= l_tb.keys()
    assert l_tb == r_tb  # same tags, steps and float32 values: the curves overlay exactly
    assert [step for step, _ in l_tb["train/loss"]] == list(range(log_every - 1, steps, log_every))
    if steps % log_every == 0:  # the last step was logged
        assert l_tb["train/loss"][-1][1] == l_sum["metrics"]["train/loss"]
    assert l_tb["val/loss"][-1][1] == pytest.approx(l_sum["metrics"]["val/loss"], rel=1e-7)
    assert l_ckpt.keys() == r_ckpt.keys()
    assert all(torch.equal(l_ckpt[k], r_ckpt[k]) for k in l_ckpt)


@pytest.mark.parametrize("engine", ["lightning", "raw"])
@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_same_config_twice_gives_bit_equal_runs(make_cfg, tmp_path, engine, workers) -> None:
    overrides = [f"engine={engine}", f"data.num_workers={workers}", "data=classification"]
    first, second = (make_cfg(*overrides, name=name) for name in ("first", "second"))
    train(first)
    train(second)
    assert scalars(tmp_path / "first") == scalars(tmp_path / "second")
    a, b = checkpoint_weights(tmp_path / "first"), checkpoint_weights(tmp_path / "second")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_different_seed_gives_a_different_run(make_cfg, tmp_path) -> None:
    train(make_cfg("seed=0", name="s0"))
    train(make_cfg("seed=1", name="s1"))
    assert scalars(tmp_path / "s0")["train/loss"] != scalars(tmp_path / "s1")["train/loss"]


def test_csv_logger_records_the_loss_curve(make_cfg, tmp_path) -> None:
    train(make_cfg("logger=csv"))
    with open(tmp_path / "job" / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    losses = [row for row in rows if row.get("train/loss")]
    assert [int(row["step"]) for row in losses] == list(range(12))
    assert not (tmp_path / "job" / "tensorboard").exists()


def test_without_checkpointing_no_checkpoint_is_written(make_cfg, tmp_path) -> None:
    train(make_cfg("trainer.enable_checkpointing=false", "logger=none"))
    assert (tmp_path / "job" / "metrics.json").exists()
    assert not (tmp_path / "job" / "checkpoints").exists()
