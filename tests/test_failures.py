"""Jobs that go wrong: a diverged job is named as such, a failed one leaves its traceback,
and a sweep runs on, reports them, and says so in its exit code."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mlplab.fit import Diverged
from mlplab.train import failure_summary, stopped_by, train

from . import forked
from .conftest import ROOT
from .test_engines import scalars

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_non_finite_loss_stops_the_job_at_that_step(make_cfg, tmp_path) -> None:
    cfg = make_cfg(
        "optimizer=sgd", "optimizer.lr=1000", "trainer.max_steps=-1", "trainer.max_epochs=3"
    )
    with pytest.raises(Diverged) as diverged:
        train(cfg)
    summary = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert summary["status"] == "diverged"
    assert summary["diverged_at_step"] == diverged.value.step < 3 * 8  # well before the end
    losses = scalars(tmp_path / "job")["train/loss"]
    assert [step for step, _ in losses] == list(range(diverged.value.step + 1))  # stopped there
    assert not torch.isfinite(torch.tensor(losses[-1][1]))
    assert all(torch.isfinite(torch.tensor(value)) for _, value in losses[:-1])


def test_a_failing_job_records_its_error_and_traceback(make_cfg, tmp_path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("something broke")

    monkeypatch.setattr("mlplab.train.fit_lightning", broken)
    with pytest.raises(RuntimeError):
        train(make_cfg())
    summary = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: something broke"
    traceback = (tmp_path / "job" / "error.txt").read_text()
    assert traceback.startswith("Traceback") and "in broken" in traceback


def run_train(cwd: Path, *arguments: str, bug: bool = False) -> subprocess.CompletedProcess:
    if not bug:
        return forked.run(cwd, str(ROOT / "train.py"), *arguments)
    return subprocess.run(  # a new interpreter: PYTHONPATH is read at start-up
        [sys.executable, str(ROOT / "train.py"), *arguments],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(FIXTURES)),
        capture_output=True,
        text=True,
        timeout=600,
    )


QUICK = [
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "data.num_samples=500",
    "extras.print_config=false",
    "trainer.enable_progress_bar=false",
]


@pytest.mark.slow
def test_a_sweep_runs_on_past_failed_and_diverged_jobs(tmp_path) -> None:
    result = run_train(
        tmp_path,
        "model.hidden=8,13",
        "optimizer=sgd",
        "optimizer.lr=0.05,1000",
        *QUICK,
        f"hydra.sweep.dir={tmp_path}/sweep",
        "-m",
        bug=True,
    )
    assert result.returncode == 1, result.stderr  # a job failed: the worst outcome wins
    with open(tmp_path / "sweep" / "summary.csv") as f:
        rows = {(row["model.hidden"], row["optimizer.lr"]): row for row in csv.DictReader(f)}
    assert {key: row["status"] for key, row in rows.items()} == {
        ("8", "0.05"): "completed",
        ("8", "1000"): "diverged",
        ("13", "0.05"): "failed",
        ("13", "1000"): "failed",
    }
    failed = tmp_path / "sweep" / rows[("13", "0.05")]["run"]
    assert "injected bug: model.hidden=13" in (failed / "error.txt").read_text()
    assert json.loads((failed / "metrics.json").read_text())["error"].endswith("model.hidden=13")
    assert "failed" in (tmp_path / "sweep" / "summary.md").read_text()


@pytest.mark.slow
def test_exit_codes_of_single_runs(tmp_path) -> None:
    diverged = run_train(tmp_path, "optimizer=sgd", "optimizer.lr=1000", *QUICK, "hydra.run.dir=d")
    assert diverged.returncode == 3 and "diverged" in diverged.stdout + diverged.stderr
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["status"] == "diverged"
    failed = run_train(tmp_path, "model.hidden=13", *QUICK, "hydra.run.dir=f", bug=True)
    assert failed.returncode == 1 and "Traceback" not in failed.stdout + failed.stderr
    assert "error.txt" in failed.stdout + failed.stderr


@pytest.mark.slow
def test_two_sweeps_started_together_get_their_own_directories(tmp_path) -> None:
    arguments = [
        ROOT / "train.py",
        "optimizer=sgd",
        *QUICK,
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "hydra.sweep.dir=${mlplab.new_dir:outputs/sweeps/same-second}",
        "-m",
    ]
    processes = [forked.start(tmp_path, *arguments) for _ in range(2)]
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    sweeps = sorted(p.name for p in (tmp_path / "outputs" / "sweeps").iterdir())
    assert sweeps == ["same-second", "same-second_2"]
    for sweep in sweeps:
        (job,) = [p for p in (tmp_path / "outputs" / "sweeps" / sweep).iterdir() if p.is_dir()]
        assert json.loads((job / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_run_directory_is_trained_by_one_process_at_a_time(tmp_path) -> None:
    """A second process in the same job directory is refused while the first trains; a new
    run never goes into a directory that already holds one."""
    small = ["data.num_samples=300", "extras.print_config=false"]
    run = [*small, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}/run"]
    assert run_train(tmp_path, *run).returncode == 0
    again = run_train(tmp_path, *run)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    long = [*small, "trainer.max_epochs=100000", f"hydra.run.dir={tmp_path}/long"]
    first = forked.start(tmp_path, ROOT / "train.py", *long)
    try:
        while not (tmp_path / "long" / "metrics.json").exists():  # it has started training
            assert first.poll() is None
            time.sleep(0.05)
        second = run_train(tmp_path, f"resume={tmp_path}/long", "trainer.max_epochs=300")
        assert second.returncode == 2 and "being trained by another process" in second.stderr
    finally:
        first.kill()
        first.wait()
    status = json.loads((tmp_path / "long" / "metrics.json").read_text())["status"]
    assert status == "running"  # the refused resume wrote nothing


# A job that claims its directory, forks a child that lives on (as a DataLoader worker
# outlives a `kill -9` of its job by up to 5 s), prints the child's pid and is killed.
CLAIM_FORK_AND_DIE = """
import os, signal, sys, time
from pathlib import Path
from mlplab.cli import claim_job_directory
claim_job_directory(Path(sys.argv[1]), resume=False)
child = os.fork()
if child == 0:
    for fd in (1, 2):  # not the test's pipes: it reads them to their end
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    time.sleep(120)
    os._exit(0)
print(child, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
CLAIM = "import sys; from pathlib import Path; from mlplab.cli import claim_job_directory; "
CLAIM += "claim_job_directory(Path(sys.argv[1]), resume=True)"


def test_a_killed_jobs_forked_children_do_not_keep_its_directory_claimed(tmp_path) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", CLAIM_FORK_AND_DIE, str(tmp_path)], capture_output=True, text=True
    )
    orphan = int(killed.stdout)
    try:
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert Path(f"/proc/{orphan}").exists()  # still alive, with the job's open files
        again = subprocess.run(
            [sys.executable, "-c", CLAIM, str(tmp_path)], capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr  # the resume may claim the directory
    finally:
        os.kill(orphan, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04torn"])
def test_a_run_with_an_unreadable_checkpoint_is_refused_in_one_line(tmp_path, content) -> None:
    run = [
        "data.num_samples=300",
        "trainer.max_epochs=1",
        "extras.print_config=false",
        f"hydra.run.dir={tmp_path}/run",
    ]
    assert run_train(tmp_path, *run).returncode == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint.write_bytes(content)
    before = (tmp_path / "run" / "metrics.json").read_text()
    done = run_train(tmp_path, f"resume={tmp_path}/run", "trainer.max_epochs=2")
    assert done.returncode == 2 and "cannot be read" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3 and "Traceback" not in done.stderr
    assert (tmp_path / "run" / "metrics.json").read_text() == before  # nothing changed


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["lightning", "raw"])
def test_ctrl_c_stops_the_job_with_a_status_and_one_line(tmp_path, engine) -> None:
    run = [f"engine={engine}", "trainer.max_epochs=500", "extras.print_config=false"]
    process = forked.start(
        tmp_path, ROOT / "train.py", *run, f"hydra.run.dir={tmp_path}/run", merge_output=True
    )
    summary = tmp_path / "run" / "metrics.json"
    while not summary.exists() or not list((tmp_path / "run").glob("tensorboard/events.*")):
        assert process.poll() is None, process.output()
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the training loop
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    output = process.output()
    assert process.returncode == 130, output
    assert json.loads(summary.read_text())["status"] == "interrupted"
    assert "interrupted (Ctrl-C); continue it with resume=" in output
    assert "Traceback" not in output


def test_a_ctrl_c_that_cuts_a_save_short_is_an_interruption_not_a_failure(tmp_path) -> None:
    def save_cut_short() -> None:
        try:
            raise KeyboardInterrupt  # Ctrl-C, in the middle of torch.save
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from None

    with pytest.raises(RuntimeError) as raised:
        save_cut_short()
    assert isinstance(stopped_by(raised.value), KeyboardInterrupt)
    assert failure_summary(stopped_by(raised.value), tmp_path)["status"] == "interrupted"
    other = ValueError("a real failure")
    assert stopped_by(other) is other
    assert failure_summary(other, tmp_path)["status"] == "failed"
