"""Exact resume: a run stopped at any step and resumed equals the run that never stopped.

Here the stop is an exception raised at a chosen step, in-process (fast, every case);
tests/test_kill.py does it for real, with `kill -9` of a training subprocess.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mlplab.build import build_model
from mlplab.fit import TrainingRecord
from mlplab.report import read_curve_rows
from mlplab.train import train

from .test_cli import tensorboard_runs
from .test_engines import scalars

# 300 samples → 180 for training → 12 batches of 16 (the last of 4); 4 epochs = 48 steps.
RESUMABLE = [
    "data.num_samples=300",
    "data.batch_size=16",
    "model.hidden=8",
    "trainer.max_epochs=4",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks=[default,step_checkpoint]",
    "callbacks.step_checkpoint.every_n_train_steps=5",
]


class Crash(RuntimeError):
    """Stands in for a crash."""


def crash_at(monkeypatch, step: int) -> None:
    """Make training raise `Crash` right after optimizer step `step` (counting from 1)."""
    original = TrainingRecord.on_train_batch_end

    def on_train_batch_end(self, trainer, *args) -> None:
        original(self, trainer, *args)
        if trainer.global_step == step:
            raise Crash(f"crash at step {step}")

    monkeypatch.setattr(TrainingRecord, "on_train_batch_end", on_train_batch_end)


def run_state(run: Path) -> tuple[dict, dict, dict]:
    summary = json.loads((run / "metrics.json").read_text())
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return summary, scalars(run), weights


def assert_same_run(a: Path, b: Path) -> None:
    (sa, ta, wa), (sb, tb, wb) = run_state(a), run_state(b)
    assert sb["status"] == "completed"
    assert sa["metrics"] == sb["metrics"] and sa["steps"] == sb["steps"]
    assert ta == tb  # every tag, every step exactly once, every value bit-equal
    # and so is the logger-independent record the report reads
    assert read_curve_rows(a / "curves.csv") == read_curve_rows(b / "curves.csv") != []
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


SLOW = pytest.mark.slow  # the fast run keeps three cases; CI runs all


@pytest.mark.parametrize(
    ("crash", "extra"),
    [
        pytest.param(17, [], id="mid-epoch"),
        pytest.param(24, [], id="right-after-epoch-end", marks=SLOW),
        pytest.param(30, [], id="after-mid-epoch-checkpoint", marks=SLOW),
        pytest.param(17, ["data.num_workers=2"], id="with-workers"),
        pytest.param(2, [], id="before-any-checkpoint", marks=SLOW),
        pytest.param(
            26,
            ["callbacks.step_checkpoint.every_n_train_steps=12"],
            id="step-checkpoint-at-epoch-end",
            marks=SLOW,
        ),
        pytest.param(20, ["scheduler=onecycle", "optimizer=sgd"], id="with-a-scheduler"),
        pytest.param(
            20,
            ["trainer.accumulate_grad_batches=2", "trainer.max_epochs=6"],
            id="accumulating",
            marks=SLOW,
        ),
    ],
)
def test_resumed_run_equals_uninterrupted_run(make_cfg, tmp_path, monkeypatch, crash, extra):
    overrides = [*RESUMABLE, "data=classification", *extra]
    train(make_cfg(*overrides, tiny=False, name="straight"))

    cfg = make_cfg(*overrides, tiny=False, name="resumed")
    with monkeypatch.context() as patch:
        crash_at(patch, crash)
        with pytest.raises(Crash):
            train(cfg, overrides=overrides)
    stopped = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert stopped["status"] == "failed" and "crash at step" in stopped["error"]

    train(cfg, overrides=overrides, resume=True)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")
    # TensorBoard's server (not only its reader above) hides the steps logged after the checkpoint
    assert tensorboard_runs(tmp_path / "resumed") == tensorboard_runs(tmp_path / "straight")
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["overrides"] == overrides


def test_a_completed_run_trained_further_equals_one_trained_that_long(make_cfg, tmp_path):
    train(make_cfg(*RESUMABLE, tiny=False, name="straight"))
    short = make_cfg(*RESUMABLE, "trainer.max_epochs=2", tiny=False, name="continued")
    train(short)
    assert json.loads((tmp_path / "continued" / "metrics.json").read_text())["steps"] == 24
    longer = make_cfg(*RESUMABLE, "trainer.max_epochs=4", tiny=False, name="continued")
    train(longer, resume=True)
    assert_same_run(tmp_path / "straight", tmp_path / "continued")


def test_init_from_starts_a_new_run_from_a_checkpoints_weights(make_cfg, tmp_path):
    train(make_cfg(*RESUMABLE, "trainer.max_epochs=1", tiny=False, name="first"))
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    trained = torch.load(checkpoint, weights_only=True)["state_dict"]
    cfg = make_cfg(*RESUMABLE, f"init_from={checkpoint}", tiny=False, name="second")
    start = build_model(cfg).state_dict()
    assert all(torch.equal(start[k], trained[f"model.{k}"]) for k in start)
    assert not all(
        torch.equal(v, build_model(make_cfg()).state_dict()[k]) for k, v in start.items()
    )
    train(cfg)
    summary = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 48  # a new run: from step 0


def test_every_checkpoint_loads_with_weights_only_and_records_what_resume_needs(make_cfg, tmp_path):
    train(make_cfg(*RESUMABLE, "trainer.max_epochs=1", tiny=False))
    checkpoint = torch.load(tmp_path / "job" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 12
    (rng,) = [state for key, state in checkpoint["callbacks"].items() if "ExactResume" in key]
    assert set(rng["rng"]) >= {"torch", "python"}
    loader = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader == [{"epoch": 0, "batches_served": 12}]
    assert not list((tmp_path / "job" / "checkpoints").glob(".*"))  # no temporary left behind


def test_a_moved_run_resumes_where_it_is_now_and_a_copy_leaves_its_original_alone(
    make_cfg, tmp_path
):
    from mlplab.cli import resumed_config

    train(make_cfg(*RESUMABLE, tiny=False, name="straight"))
    train(make_cfg(*RESUMABLE, "trainer.max_epochs=2", tiny=False, name="first"))
    (tmp_path / "first").rename(tmp_path / "moved")
    shutil.copytree(tmp_path / "moved", tmp_path / "copy")
    before = (tmp_path / "moved" / "metrics.json").read_text()
    train(resumed_config(tmp_path / "copy", ["trainer.max_epochs=4"])[0], resume=True)
    assert (tmp_path / "moved" / "metrics.json").read_text() == before  # the original: as it was
    assert_same_run(tmp_path / "straight", tmp_path / "copy")
    cfg, _ = resumed_config(tmp_path / "moved", ["trainer.max_epochs=4"])
    assert cfg.paths.output_dir == str(tmp_path / "moved")
    assert cfg.callbacks.model_checkpoint.dirpath == str(tmp_path / "moved" / "checkpoints")
    train(cfg, resume=True)
    assert not (tmp_path / "first").exists()  # nothing recreated in the old place
    assert_same_run(tmp_path / "straight", tmp_path / "moved")
