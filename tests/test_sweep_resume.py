"""`resume=<job dir>` works for a sweep's jobs as typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from mlplab.cli import quoted_resume

from .conftest import TINY
from .test_cli import jobs_of, run_train


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
