"""Exact resume: a run stopped at any step and resumed equals the run that never stopped.

Here the stop is an exception raised at a chosen step, in-process (fast, every case);
tests/test_kill.py does it for real, with `kill -9` of a training subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mlplab.curves import LossCurve
from mlplab.train import train

from .test_engines import scalars

# 300 samples → 180 for training → 12 batches of 16 (the last of 4); 4 epochs = 48 steps.
RESUMABLE = [
    "data.num_samples=300",
    "data.batch_size=16",
    "model.hidden=8",
    "trainer.max_epochs=4",
    "trainer.max_steps=-1",
    "checkpoint.every_n_steps=5",
]


class Crash(RuntimeError):
    """Stands in for a crash."""


def crash_at(monkeypatch, step: int) -> list[int]:
    """Make training raise `Crash` right after recording the loss of `step`.

    With several steps per iteration the losses arrive a list at a time: it crashes after
    the list that holds `step`. Returns a list that then holds the last step recorded.
    """
    original, crashed = LossCurve.append, []

    def append(self, losses):
        original(self, losses)
        last = self.first_step + len(self.written) + len(self.pending) - 1
        if last >= step and not crashed:
            crashed.append(last)
            raise Crash(f"crash at step {last}")

    monkeypatch.setattr(LossCurve, "append", append)
    return crashed


def run_state(run: Path) -> tuple[dict, dict, dict]:
    summary = json.loads((run / "metrics.json").read_text())
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return summary, scalars(run), weights


def assert_same_run(a: Path, b: Path) -> None:
    (sa, ta, wa), (sb, tb, wb) = run_state(a), run_state(b)
    assert sb["status"] == "completed"
    assert sa["metrics"] == sb["metrics"] and sa["steps"] == sb["steps"]
    assert ta == tb  # every tag, every step exactly once, every value bit-equal
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


ENGINES = {
    "lightning": ["engine=lightning", "steps_per_iteration=1"],
    # 12 batches an epoch in iterations of 5, 5, 2: checkpoints every 5 steps land at the
    # end of the iteration that reaches a multiple of 5 (steps 5, 10, 17, 22, …).
    "lightning-5-per-iteration": ["engine=lightning", "steps_per_iteration=5"],
    "raw": ["engine=raw"],
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("crash", "workers"),
    [(17, 0), (24, 0), (30, 0), (17, 2), (2, 0)],
    ids=[
        "mid-epoch",
        "right-after-epoch-end",
        "after-mid-epoch-checkpoint",
        "with-workers",
        "before-any-checkpoint",
    ],
)
def test_resumed_run_equals_uninterrupted_run(
    make_cfg, tmp_path, monkeypatch, engine, crash, workers
):
    overrides = [
        *RESUMABLE,
        *ENGINES[engine],
        f"data.num_workers={workers}",
        "data=classification",
    ]
    train(make_cfg(*overrides, tiny=False, name="straight"))

    cfg = make_cfg(*overrides, tiny=False, name="resumed")
    with monkeypatch.context() as patch:
        crashed = crash_at(patch, crash)
        with pytest.raises(Crash):
            train(cfg, overrides=overrides)
    stopped = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert stopped["status"] == "failed" and "crash at step" in stopped["error"]
    logged = [step for step, _ in scalars(tmp_path / "resumed").get("train/loss", [])]
    assert max(logged, default=-1) <= crashed[0]  # nothing beyond the crash reached the log...

    train(cfg, overrides=overrides, resume=True)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")  # ...nor twice after it
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["overrides"] == overrides


def test_every_checkpoint_loads_with_weights_only_and_records_its_position(make_cfg, tmp_path):
    train(make_cfg(*RESUMABLE, "trainer.max_epochs=1", tiny=False))
    checkpoint = torch.load(tmp_path / "job" / "checkpoints" / "last.ckpt", weights_only=True)
    position = checkpoint["mlplab"]["position"]
    assert position == {
        "step": 12,
        "epoch": 1,
        "batch": 0,
        "steps_per_epoch": 12,
        "validated": True,
        "last_loss": position["last_loss"],
    }
    assert set(checkpoint["mlplab"]["rng"]) >= {"torch", "python"}
    assert any(name.startswith("tensorboard/events") for name in checkpoint["mlplab"]["logs"])
    assert not list((tmp_path / "job" / "checkpoints").glob(".*"))  # no temporary left behind
