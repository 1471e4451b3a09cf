"""Beyond one process, on the real engines: torch.distributed (gloo) DDP on this CPU. Slow."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mlplab.build import build_datamodule, build_model, optimizer_factory
from mlplab.tasks import loss_function

from . import forked
from .conftest import ROOT, children_of, compose_config
from .test_cli import jobs_of
from .test_engines import scalars

pytestmark = pytest.mark.slow

QUIET = ["extras.print_config=false", "trainer.enable_progress_bar=false"]
# 500 samples → 300 for training: 15 global batches of 20, none partial.
SMALL = ["data.num_samples=500", "trainer.max_epochs=3", "trainer.log_every_n_steps=1", *QUIET]


def train(cwd: Path, *arguments: str) -> str:
    done = forked.run(cwd, str(ROOT / "train.py"), *arguments)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def assert_two_processes_with_batch_b_equal_one_with_batch_2b(ddp: Path, single: Path) -> None:
    """DDP averages the two processes' gradients of their halves of each global batch: the
    gradient of the whole batch, summed in another order. So the weights agree to float32
    rounding (~1e-7 relative), not bit for bit."""
    ddp_checkpoint, single_checkpoint = (
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True) for run in (ddp, single)
    )
    assert ddp_checkpoint["global_step"] == single_checkpoint["global_step"] == 45
    for name, expected in single_checkpoint["state_dict"].items():
        torch.testing.assert_close(
            ddp_checkpoint["state_dict"][name], expected, rtol=1e-6, atol=1e-7
        )
    # the logged curve is the loss of the whole global batch, averaged over the processes
    ddp_curve, single_curve = (
        torch.tensor([v for _, v in scalars(run)["train/loss"]]) for run in (ddp, single)
    )
    torch.testing.assert_close(ddp_curve, single_curve, rtol=1e-6, atol=1e-7)


def test_a_ddp_sweep_writes_one_directory_per_job_each_equal_to_one_process_with_batch_2b(
    tmp_path,
) -> None:
    """One sweep for both checks: each DDP job starts a new interpreter for its second
    process (~5 s of imports)."""
    workdir = tmp_path / "ddp"
    workdir.mkdir()
    output = train(
        workdir, "optimizer=sgd,adam", "accelerator=ddp_cpu", "data.batch_size=10", *SMALL, "-m"
    )
    (sweep,) = (workdir / "outputs" / "sweeps").iterdir()
    assert sorted(p.name for p in workdir.iterdir()) == ["outputs"]  # no stray directories
    assert sorted(p.name for p in (workdir / "outputs").iterdir()) == ["sweeps"]
    jobs = jobs_of(sweep)
    assert len(jobs) == 2
    assert jobs[0].name.startswith("0_optimizer=sgd,accelerator=ddp_cpu,")
    assert jobs[1].name.startswith("1_optimizer=adam,accelerator=ddp_cpu,")
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
        assert len(list((job / "tensorboard").glob("events.out.tfevents.*"))) >= 1
        assert [s for s, _ in scalars(job)["train/loss"]] == list(range(45))  # one run, once each
    assert output.count("final metrics") == 2  # two jobs ran, not four, nor a sweep per child

    train(
        tmp_path, "optimizer=sgd,adam", "data.batch_size=20", *SMALL, "hydra.sweep.dir=single", "-m"
    )
    for ddp, single in zip(jobs, jobs_of(tmp_path / "single"), strict=True):
        assert ddp.name.split(",")[0] == single.name.split(",")[0]  # the same optimizer
        assert_two_processes_with_batch_b_equal_one_with_batch_2b(ddp, single)


def test_submitit_local_runs_the_sweep_through_submitit(tmp_path) -> None:
    """submitit's local executor: the code path of hydra/launcher=slurm, minus SLURM."""
    train(
        tmp_path,
        "optimizer=sgd,adam",
        "data.num_samples=300",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        *QUIET,
        "hydra/launcher=submitit_local",
        "hydra.sweep.dir=sweep",
        "-m",
    )
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(jobs) == 2
    for job in jobs:
        summary = json.loads((job / "metrics.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == 3  # 180 samples / 64
    assert list((tmp_path / "sweep" / ".submitit").iterdir())  # submitit really ran them
    assert (tmp_path / "sweep" / "summary.csv").exists()


def test_optuna_search_runs_trials_and_reports_them(tmp_path) -> None:
    output = train(
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "data.num_samples=300",
        *QUIET,
        "hydra.sweep.dir=search",
        "-m",
    )
    assert "Best value" in output
    best = (tmp_path / "search" / "optimization_results.yaml").read_text()
    jobs = [p for p in (tmp_path / "search").iterdir() if p.is_dir() and p.name[0].isdigit()]
    val_losses = [
        json.loads((job / "metrics.json").read_text())["metrics"]["val/loss"] for job in jobs
    ]
    assert len(jobs) == 3 and f"best_value: {min(val_losses)}" in best  # it minimised val/loss
    assert "optimizer.lr" in (tmp_path / "search" / "summary.csv").read_text().splitlines()[0]


def test_processes_started_by_torchrun_leave_the_writing_to_rank_0(tmp_path) -> None:
    """What a multi-node launch looks like on one node: torchrun starts every process."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            str(ROOT / "train.py"),
            "accelerator=ddp_cpu",
            *SMALL,
            "hydra.run.dir=run",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["status"] == "completed"
    files = (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*")
    assert len({file.name.split(".")[-2] for file in files}) == 1  # one writer: a single pid
    assert [s for s, _ in scalars(tmp_path / "run")["train/loss"]] == list(range(summary["steps"]))


# Targets with noise 6e18: their squares come near float32's largest number (3.4e38), so a
# batch's MSE overflows to inf now and then; with 4 samples per process, one process's does
# while the other's does not (checked below, by `first_non_finite_loss`).
OVERFLOWING = [
    "data.noise=6e18",
    "data.batch_size=4",
    "data.num_samples=512",
    "trainer.log_every_n_steps=1",
]


def first_non_finite_loss(overrides: list[str], tmp_path: Path) -> tuple[int, list[bool]]:
    """The first step at which a process's loss is not finite, and which processes' are,
    found by a plain loop that trains two shards the way DDP does (on their mean loss)."""
    cfg = compose_config(overrides, tmp_path)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    shards = [datamodule.loader("train", shuffle=True, world_size=2, rank=rank) for rank in (0, 1)]
    model, loss_fn = build_model(cfg), loss_function(cfg.data.task)
    optimizer = optimizer_factory(cfg)(model.parameters())
    step = 0
    for epoch in range(cfg.trainer.max_epochs):
        for loader in shards:
            loader.batch_sampler.set_epoch(epoch)
        for batches in zip(*shards, strict=True):
            losses = [loss_fn(model(x), y) for x, y in batches]
            finite = [math.isfinite(loss.item()) for loss in losses]
            if not all(finite):
                return step, finite
            (sum(losses) / 2).backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
    raise AssertionError("no loss overflowed")


def test_a_loss_overflowing_in_one_process_stops_every_process_at_that_step(tmp_path) -> None:
    """Deciding alone, the process whose loss overflowed stopped while the other waited for
    it in an all-reduce, forever (even SIGTERM could not end it): now every process stops."""
    step, finite = first_non_finite_loss(OVERFLOWING, tmp_path)
    assert sorted(finite) == [False, True]  # one process only: the case that used to hang
    arguments = [*OVERFLOWING, "accelerator=ddp_cpu"]
    process = forked.start(
        tmp_path,
        str(ROOT / "train.py"),
        *arguments,
        *QUIET,
        "hydra.run.dir=run",
        merge_output=True,
        new_session=True,  # its DDP worker too, so a hang can be ended below
    )
    try:
        process.wait(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    output = process.output()
    assert process.returncode == 3, output  # diverged
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_at_step"] == step
    curve = scalars(tmp_path / "run")["train/loss"]
    assert [s for s, _ in curve] == list(range(step + 1))
    assert all(math.isfinite(v) for _, v in curve[:-1]) and not math.isfinite(curve[-1][1])


def listening_addresses(pids: list[int]) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp* gives them) these processes listen on."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(fields[1].rsplit(":", 1)[0])
    return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


def test_data_parallel_processes_listen_on_the_loopback_only(tmp_path) -> None:
    process = forked.start(
        tmp_path,
        str(ROOT / "train.py"),
        "accelerator=ddp_cpu",
        "trainer.max_epochs=300",
        *QUIET,
        "hydra.run.dir=run",
        new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "run").glob("tensorboard/events.*")):  # training began
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(2)
        pids = [process.pid, *children_of(process.pid)]
        addresses = listening_addresses(pids)
        assert addresses  # the rendezvous store and gloo's sockets, at least
        assert set(addresses) <= LOOPBACK, addresses
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
