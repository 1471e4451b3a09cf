"""`resume=<sweep dir>` finishes a sweep; `resume=<job dir>` works for a sweep's jobs as typed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from mlplab.cli import (
    ConfigError,
    quoted_resume,
    relocated,
    resumed_config,
    resumed_sweep_arguments,
)
from mlplab.hparams import EVENTS_SUFFIX
from mlplab.train import train

from . import forked
from .conftest import ROOT, TINY
from .test_cli import jobs_of, run_train, tensorboard_runs
from .test_resume import RESUMABLE, Crash, assert_same_run, crash_at


@pytest.mark.parametrize(
    "job_dir",
    [
        "outputs/sweeps/x/1_optimizer=sgd,activation=tanh",
        "outputs/sweeps/x/0_callbacks=[default,step_checkpoint],seed=1",
        "outputs/sweeps/it's/2_a=b",
        "outputs/runs/2026-11-25_18-30-00",
    ],
)
def test_a_job_directory_reaches_hydra_as_one_resume_value(job_dir) -> None:
    (override,) = OverridesParser.create().parse_overrides([quoted_resume(f"resume={job_dir}")])
    assert override.key_or_group == "resume" and override.value() == job_dir


def test_resume_null_and_other_arguments_are_left_as_typed() -> None:
    for argument in ("resume=null", "optimizer=sgd,adam", "resume='a=b'"):
        assert quoted_resume(argument) == argument


BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # as multirun.yaml names it


def saved_sweep(sweep_dir: Path, sweeper: str) -> Path:
    """A sweep directory with only the multirun.yaml a `sweeper` would have left."""
    sweep_dir.mkdir()
    saved = {
        "hydra": {
            "sweeper": {"_target_": sweeper, "params": None},
            "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": ["optimizer=sgd,adam"]},
        }
    }
    OmegaConf.save(saved, sweep_dir / "multirun.yaml")
    return sweep_dir


def test_a_sweep_is_resumed_with_the_overrides_it_was_started_with(tmp_path) -> None:
    sweep = saved_sweep(
        tmp_path / "sweep", "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    )
    arguments = resumed_sweep_arguments(sweep, [f"resume={sweep}"])
    assert "optimizer=sgd,adam" in arguments and f"hydra.sweep.dir='{sweep}'" in arguments
    assert arguments[-1] == "-m" and arguments.count("hydra.mode=MULTIRUN") == 0


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "expected the directory of a job (outputs/runs/<date_time>) or of a sweep"),
        ("jobs without multirun.yaml", "cannot be resumed as one sweep"),
        ("optuna", "its sweeper (OptunaSweeper) chooses each job as it goes"),
        ("other overrides", "drop the other arguments (optimizer=adam)"),
    ],
)
def test_resume_refuses_a_directory_that_is_neither_a_job_nor_a_whole_sweep(
    tmp_path, case, message
) -> None:
    target, extra = tmp_path / "target", []
    if case == "empty":
        target.mkdir()
    elif case == "jobs without multirun.yaml":
        (target / "0_seed=1").mkdir(parents=True)
        (target / "0_seed=1" / "metrics.json").write_text('{"status": "completed"}')
    elif case == "optuna":
        saved_sweep(target, "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper")
    else:
        saved_sweep(target, BASIC)
        extra = ["optimizer=adam"]
    with pytest.raises(ConfigError) as refused:
        if (target / "multirun.yaml").exists():
            resumed_sweep_arguments(target, [f"resume={target}", *extra])
        else:
            resumed_config(target, [])
    assert message in str(refused.value) and "\n" not in str(refused.value)


# Three jobs of 48 steps, a checkpoint every 5 steps; `-m` sweeps the activation.
SWEEP = [
    *RESUMABLE,
    "data=classification",
    "extras.print_config=false",
    "activation=relu,tanh,gelu",
]


def files_of(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory` (hidden ones too): its bytes and modification time."""
    return {
        str(path.relative_to(directory)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in directory.rglob("*")
        if path.is_file()
    }


@pytest.mark.slow
def test_resume_finishes_a_sweep_keeping_completed_jobs_resuming_killed_ones(
    tmp_path, monkeypatch
) -> None:
    straight, sweep = tmp_path / "straight", tmp_path / "sweep"
    run_train(*SWEEP, f"hydra.sweep.dir={straight}", "-m")
    shutil.copytree(straight, sweep)
    for report in ("summary.csv", "summary.md", "loss_curves.png"):
        (sweep / report).unlink()
    completed, killed, never_started = jobs_of(sweep)

    # The second job trained to step 17 (last checkpoint at 15), then was killed: a kill -9
    # leaves metrics.json saying "running". The third never started.
    shutil.rmtree(killed / "checkpoints")
    shutil.rmtree(killed / "tensorboard")
    cfg = relocated(OmegaConf.load(killed / "config.yaml"), killed)
    overrides = json.loads((straight / killed.name / "metrics.json").read_text())["overrides"]
    with monkeypatch.context() as patch:
        crash_at(patch, 17)
        with pytest.raises(Crash):
            train(cfg, overrides=overrides)
    summary = json.loads((killed / "metrics.json").read_text())
    (killed / "metrics.json").write_text(json.dumps(summary | {"status": "running"}))
    shutil.rmtree(never_started)
    kept = files_of(completed)

    run_train(f"resume={sweep}")
    assert files_of(completed) == kept  # not trained again, not a byte or a timestamp changed
    assert_same_run(straight / killed.name, killed)  # resumed exactly
    assert_same_run(straight / never_started.name, never_started)  # run, where Hydra puts it
    assert (sweep / "summary.md").read_text().count("| completed |") == 3
    for job in jobs_of(sweep):  # one TensorBoard run per job, each step in it once
        steps = tensorboard_runs(sweep)[f"{job.name}/tensorboard"]["train/loss"]
        assert steps == list(range(48))

    finished = files_of(sweep)
    run_train(f"resume={sweep}")  # a finished sweep: every job kept, the report written again
    reports = ("summary.csv", "summary.md", "loss_curves.png", "multirun.yaml")

    def kept(files: dict) -> dict:  # all but the report (its HParams experiment is renamed)
        return {
            k: v for k, v in files.items() if k not in reports and not k.endswith(EVENTS_SUFFIX)
        }

    assert kept(files_of(sweep)) == kept(finished)


@pytest.fixture(scope="module")
def one_job_sweep(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("sweep")
    run_train(*TINY, "optimizer=sgd", "activation=tanh", f"hydra.sweep.dir={sweep_dir}", "-m")
    return sweep_dir


@pytest.mark.slow
def test_one_job_of_a_sweep_resumes_without_hydra_quoting(one_job_sweep) -> None:
    (job,) = jobs_of(one_job_sweep)
    assert "=" in job.name and "," in job.name
    run_train(f"resume={job}", "trainer.max_steps=16")  # as a shell passes resume=<job dir>
    assert json.loads((job / "metrics.json").read_text())["steps"] == 16


def refusal(*arguments: str) -> str:
    """The one line `python train.py <arguments>` is refused with (exit code 2)."""
    done = forked.run(ROOT, "train.py", *arguments)
    header, *problems = done.stderr.strip().splitlines()
    assert done.returncode == 2 and header == "mlplab: config refused, nothing was run:", (
        done.stderr
    )
    assert len(problems) == 1, done.stderr
    return problems[0]


@pytest.mark.slow
def test_a_new_sweep_into_a_sweeps_directory_is_refused(one_job_sweep) -> None:
    problem = refusal(*TINY, f"hydra.sweep.dir={one_job_sweep}", "-m")
    assert f"already holds a sweep; finish it with resume={one_job_sweep}" in problem


@pytest.mark.slow
def test_resume_of_a_directory_that_is_neither_a_job_nor_a_sweep_is_one_line(tmp_path) -> None:
    assert "or of a sweep (outputs/sweeps/<date_time>)" in refusal(f"resume={tmp_path}")
