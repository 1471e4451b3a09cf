"""eval.py: a trained run's test metrics, recomputed, equal the ones recorded in training."""

from __future__ import annotations

import json

import pytest

from mlplab.evaluate import evaluate_checkpoint
from mlplab.train import train

from . import forked
from .conftest import ROOT


@pytest.mark.parametrize("engine", ["lightning", "raw"])
@pytest.mark.parametrize("task", ["regression", "classification", "binary"])
def test_evaluation_equals_the_recorded_test_metrics(make_cfg, tmp_path, engine, task) -> None:
    train(make_cfg(f"engine={engine}", f"data={task}"))
    recorded = json.loads((tmp_path / "job" / "metrics.json").read_text())["metrics"]
    measured = evaluate_checkpoint(tmp_path / "job" / "checkpoints" / "last.ckpt")
    assert measured == {k: v for k, v in recorded.items() if k.startswith("test/")}


@pytest.mark.slow
def test_eval_command(make_cfg, tmp_path) -> None:
    train(make_cfg())
    done = forked.run(ROOT, "eval.py", f"run={tmp_path / 'job'}")
    assert done.returncode == 0, done.stderr
    assert "test/loss" in done.stdout and "equal to the test metrics recorded" in done.stdout
    for bad in ([], ["run=/no/such/run"], ["run=a", "ckpt_path=b"], ["epochs=3"]):
        refused = forked.run(ROOT, "eval.py", *bad)
        assert refused.returncode == 2 and "usage: python eval.py" in refused.stderr
        assert "Traceback" not in refused.stderr
