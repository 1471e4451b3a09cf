"""The README's commands, run as typed (plus where to write), as real subprocesses. Slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

from .conftest import ROOT

pytestmark = pytest.mark.slow


def run_train(*args: str) -> str:
    """`python train.py <args>` from the repository root; returns its console output."""
    done = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def tensorboard_runs(logdir: Path) -> dict[str, dict[str, list[int]]]:
    """run name → tag → logged steps, as the TensorBoard server would list them."""
    multiplexer = EventMultiplexer(tensor_size_guidance={"scalars": 0})  # 0: keep every point
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return {
        run: {tag: [e.step for e in multiplexer.Tensors(run, tag)] for tag in tags}
        for run, tags in multiplexer.PluginRunToTagToContent("scalars").items()
    }


def check_job(job_dir: Path) -> dict:
    """A finished job's directory holds metrics.json, a loadable checkpoint and event files."""
    summary = json.loads((job_dir / "metrics.json").read_text())
    assert summary["status"] == "completed"
    checkpoint = torch.load(job_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == summary["steps"]
    assert list((job_dir / "tensorboard").glob("events.out.tfevents.*"))
    return summary


@pytest.mark.parametrize("engine_args", [[], ["engine=raw"]], ids=["lightning", "raw"])
def test_single_run_with_defaults(tmp_path, engine_args) -> None:
    output = run_train(*engine_args, f"hydra.run.dir={tmp_path}/run")
    summary = check_job(tmp_path / "run")
    assert summary["engine"] == ("raw" if engine_args else "lightning")
    assert summary["epochs"] == 20 and summary["metrics"]["val/r2"] > 0.5  # it learned
    assert "final metrics" in output and "val/loss" in output
    runs = tensorboard_runs(tmp_path / "run")
    assert list(runs) == ["tensorboard"]
    assert runs["tensorboard"]["train/loss"] == list(range(summary["steps"]))


def test_one_job_multirun(tmp_path) -> None:
    run_train("optimizer=sgd", "activation=tanh", f"hydra.sweep.dir={tmp_path}", "-m")
    (job,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name != ".hydra"]
    assert job.name == "0_optimizer=sgd,activation=tanh"
    assert check_job(job)["overrides"] == ["optimizer=sgd", "activation=tanh"]


def test_six_job_sweep_gives_six_separate_tensorboard_runs(tmp_path) -> None:
    run_train(
        "optimizer=sgd,adam",
        "activation=relu,tanh,gelu",
        "trainer.max_epochs=2",
        f"hydra.sweep.dir={tmp_path}",
        "-m",
    )
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(jobs) == 6
    runs = tensorboard_runs(tmp_path)
    assert sorted(runs) == [f"{job.name}/tensorboard" for job in jobs]
    combos = set()
    for job in jobs:
        summary = check_job(job)
        optimizer, activation, _ = summary["overrides"]
        combos.add((optimizer, activation))
        assert job.name.endswith(f"{optimizer},{activation},trainer.max_epochs=2")
        steps = runs[f"{job.name}/tensorboard"]
        # one job per run: each step logged exactly once, as many as the job took
        assert steps["train/loss"] == list(range(summary["steps"]))
        assert len(steps["val/loss"]) == summary["epochs"] == 2
    assert len(combos) == 6
