"""Resume after a real `kill -9`, and checkpoints that survive being killed mid-write. Slow."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from . import forked
from .conftest import ROOT
from .test_resume import assert_same_run

pytestmark = pytest.mark.slow

# 1800 training samples in batches of 32: 57 steps per epoch, the last batch partial.
LONG = [
    "data.num_samples=3000",
    "data.batch_size=32",
    "trainer.max_epochs=4",
    "model.hidden=32",
    "extras.print_config=false",
    "trainer.enable_progress_bar=false",
]


def start(*arguments: str) -> forked.Job:
    return forked.start(ROOT, ROOT / "train.py", *arguments)


def start_fresh(*arguments: str) -> forked.Job:
    """A new interpreter (its own hash seed and memory layout), unlike the forked jobs: so the
    uninterrupted run is compared with a killed and resumed one across processes that share
    nothing."""
    return forked.start(ROOT, ROOT / "train.py", *arguments, fresh=True)


def checkpoint_step(path: Path) -> int:
    """The step of the checkpoint at `path`, or -1 while there is none."""
    try:
        return torch.load(path, weights_only=True)["global_step"]
    except FileNotFoundError:
        return -1


def kill_when(process: forked.Job, checkpoint: Path, step: int) -> None:
    """SIGKILL `process` as soon as its checkpoint has reached `step`."""
    deadline = time.monotonic() + 300
    while checkpoint_step(checkpoint) < step:
        assert process.poll() is None, f"finished before step {step}: {process.output('stderr')}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def every_n_steps(n: int) -> list[str]:
    """Also checkpoint every n optimizer steps within an epoch."""
    return [
        "callbacks=[default,step_checkpoint]",
        f"callbacks.step_checkpoint.every_n_train_steps={n}",
    ]


@pytest.mark.parametrize("workers", [0, 2])
def test_kill_9_at_a_random_step_then_resume_equals_the_uninterrupted_run(tmp_path, workers):
    run = [*LONG, f"data.num_workers={workers}", *every_n_steps(7)]
    straight = start_fresh(*run, f"hydra.run.dir={tmp_path}/straight")
    assert straight.wait(timeout=600) == 0, straight.output("stderr")

    target = random.randint(20, 200)  # of 228 steps
    killed = start(*run, f"hydra.run.dir={tmp_path}/killed")
    kill_when(killed, tmp_path / "killed" / "checkpoints" / "last.ckpt", target)
    state = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert state["status"] == "running"  # killed: it had no chance to say otherwise
    step = checkpoint_step(tmp_path / "killed" / "checkpoints" / "last.ckpt")

    resumed = start(f"resume={tmp_path}/killed")
    assert resumed.wait(timeout=600) == 0, resumed.output("stderr")
    assert (tmp_path / "killed" / ".hydra" / "overrides.yaml").read_text().count(
        "hydra.run.dir"
    ) == 0
    assert step >= target
    assert_same_run(tmp_path / "straight", tmp_path / "killed")


def test_checkpoints_killed_while_saving_still_load(tmp_path) -> None:
    """Checkpoint every step, SIGKILL at random moments, resume, again: every file on disk loads."""
    run = [*LONG, "trainer.max_epochs=3", *every_n_steps(1)]
    checkpoints = tmp_path / "run" / "checkpoints"
    process = start(*run, f"hydra.run.dir={tmp_path}/run")
    kills = 0
    while kills < 4:
        while checkpoint_step(checkpoints / "last.ckpt") < 0:  # training has begun
            assert process.poll() is None, process.output("stderr")
            time.sleep(0.01)
        time.sleep(random.uniform(0.05, 0.6))
        if process.poll() is not None:
            break  # it finished first
        os.kill(process.pid, signal.SIGKILL)
        if process.wait() != -signal.SIGKILL:
            break  # it finished between poll() and the kill: nothing was killed, nothing to resume
        kills += 1
        for path in checkpoints.iterdir():  # nothing torn: the checkpoint, or a hidden temporary
            if path.name == "last.ckpt":
                assert torch.load(path, weights_only=True)["global_step"] >= 1
            else:
                assert path.name.startswith(".last.ckpt.") and path.name.endswith(".tmp"), path
        process = start(f"resume={tmp_path}/run")
    assert process.wait(timeout=600) == 0, process.output("stderr")
    assert kills >= 2
    assert [p.name for p in checkpoints.iterdir()] == ["last.ckpt"]  # temporaries cleaned up

    straight = start(*run, f"hydra.run.dir={tmp_path}/straight")
    assert straight.wait(timeout=600) == 0
    assert_same_run(tmp_path / "straight", tmp_path / "run")
