"""Bad input: refused at once, with one short message naming the key, and nothing written."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from mlplab.cli import (
    CONFIG_DIR,
    bad_values,
    checked_config,
    missing_plugins,
    new_directory,
    run,
    unknown_options,
)
from mlplab.config import COMMON, ConfigError, problems

from .conftest import ROOT, compose_config, option_names

# (overrides, what the message must name, exit code): 2 is mlplab's refusal, 1 Hydra's own.
BAD_INPUTS = [
    (["model.hidden=0"], "model.hidden=0", 2),
    (["model.hidden=abc"], "model.hidden=abc", 2),
    (["model.hidden=3.5"], "model.hidden=3.5", 2),
    (["model.num_hidden_layers=0"], "model.num_hidden_layers=0", 2),
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1", 2),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0", 2),
    (["trainer.max_steps=0"], "trainer.max_steps=0", 2),
    (["data.batch_size=0"], "data.batch_size=0", 2),
    (["data.num_samples=-5"], "data.num_samples=-5", 2),
    (["data.noise=-1"], "data.noise=-1", 2),
    (["data.num_workers=-2"], "data.num_workers=-2", 2),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5", 2),
    (["data.val_fraction=0.5", "data.test_fraction=0.5"], "data.val_fraction=0.5", 2),
    (["data=classification", "data.num_classes=1"], "data.num_classes=1", 2),
    (["data=binary", "data.in_features=1"], "data.in_features=1", 2),
    (["+data.num_classes=3"], "data.num_classes", 2),  # regression has no classes
    (["optimizer.lr=-1"], "optimizer.lr=-1", 2),
    (["optimizer.lr=0"], "optimizer.lr=0", 2),
    (["optimizer.eps=0"], "optimizer.eps=0", 2),
    (["optimizer.betas=[0.9,1.5]"], "optimizer.betas", 2),
    (["optimizer=sgd", "optimizer.momentum=-0.5"], "optimizer.momentum=-0.5", 2),
    (["optimizer=sgd", "optimizer.nesterov=true"], "optimizer.nesterov", 2),
    (["+activation.negative_slope=0.1"], "activation.negative_slope", 2),  # relu has none
    (["+trainer.max_epoch=3"], "did you mean trainer.max_epochs?", 2),
    (["seed=-1"], "seed=-1", 2),
    (["engine=jax"], "engine=jax", 2),
    (["engine=raw", "trainer.precision=bf16-mixed"], "trainer.precision=bf16-mixed", 2),
    (["trainer.accelerator=tpu"], "trainer.accelerator=tpu", 2),
    (["checkpoint.every_n_steps=-1"], "checkpoint.every_n_steps=-1", 2),
    (["steps_per_iteration=0"], "steps_per_iteration=0", 2),
    (["resume=no/such/run"], "resume=no/such/run", 2),
    (["optimizer=adma"], "optimizer=adma: there is no such option", 2),
    (["trainer.max_epoch=3"], "trainer.max_epoch", 1),  # Hydra: a new key needs "+"
]
if not torch.cuda.is_available():
    BAD_INPUTS.append((["accelerator=gpu"], "no CUDA GPU was found", 2))


def train_in(cwd: Path, *arguments: str) -> subprocess.CompletedProcess:
    """`python <repo>/train.py …` run from `cwd`, so any output directory would land there."""
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def refusal_in_process(arguments: list[str], output_dir: Path) -> str:
    """What mlplab refuses `arguments` with, checked in-process (the fast twin of the CLI)."""
    if found := unknown_options(arguments) + missing_plugins(arguments) or bad_values(arguments):
        return "\n".join(found)
    try:
        checked_config(compose_config(arguments, output_dir), arguments)
    except ConfigError as error:
        return str(error)
    except Exception as error:  # Hydra's own refusals (e.g. a new key without "+")
        return f"hydra: {error}"
    return ""


@pytest.mark.parametrize(
    ("arguments", "key", "code"), BAD_INPUTS, ids=[" ".join(a) for a, _, _ in BAD_INPUTS]
)
def test_bad_input_is_refused_naming_the_key(tmp_path, arguments, key, code) -> None:
    message = refusal_in_process(arguments, tmp_path)
    assert key in message
    assert message.startswith("hydra: ") == (code == 1)


@pytest.fixture(scope="module")
def refusals(
    tmp_path_factory,
) -> list[tuple[list[str], str, int, subprocess.CompletedProcess, Path]]:
    """Every bad input, each run in its own empty directory (two at a time: one per core)."""
    cases = [(args, key, code, tmp_path_factory.mktemp("bad")) for args, key, code in BAD_INPUTS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda case: train_in(case[3], *case[0]), cases))
    return [
        (args, key, code, result, cwd)
        for (args, key, code, cwd), result in zip(cases, results, strict=True)
    ]


def full_check(arguments: list[str], output_dir: Path) -> list[str]:
    """The problems the check of the composed config finds (what Hydra's callback runs)."""
    return problems(compose_config(arguments, output_dir))


@pytest.mark.parametrize(
    "arguments",
    [a for a, _, code in BAD_INPUTS if code == 2 and not unknown_options(a)],
    ids=" ".join,
)
def test_values_refused_early_are_refused_by_the_full_check_in_the_same_words(
    tmp_path, arguments
) -> None:
    early = bad_values(arguments)
    if early:
        assert set(early) <= set(full_check(arguments, tmp_path))
    key = arguments[-1].split("=")[0]
    if len(arguments) == 1 and key in COMMON and key != "resume":  # wrong in any config
        assert early, "refused only after composing"


def test_a_bad_value_of_a_known_key_is_refused_before_hydra_composes(monkeypatch) -> None:
    assert bad_values(["model.hidden=0", "data.batch_size=abc", "optimizer=sgd"]) == [
        "model.hidden=0 is not allowed: expected an integer ≥ 1",
        "data.batch_size=abc is not allowed: expected an integer ≥ 1",
    ]
    monkeypatch.setattr("sys.argv", ["train.py", "model.hidden=0"])
    monkeypatch.setattr("mlplab.cli.main", lambda: pytest.fail("Hydra was started"))
    with pytest.raises(SystemExit) as exit_:
        run()
    assert exit_.value.code == 2


@pytest.mark.parametrize(
    "arguments",
    [
        ["model.hidden=8", "trainer.precision=32", "seed=3"],  # good values
        ["model.hidden=0,8", "-m"],  # a sweep: each job is checked when the sweep starts
        ["model.hidden=${seed}"],  # an interpolation: only the composed config has its value
        ["+model.hidden=0"],  # Hydra refuses adding a key that exists
        ["resume=outputs/x", "model.hidden=0"],  # judged against the resumed run's config
        ["model.hidden=0", "--cfg", "job"],  # --cfg shows the config asked for
        ["model.hidden=[1"],  # bad syntax: Hydra says so
        ["optimizer.momentum=-1"],  # not a key of every config (only some optimizers')
    ],
    ids=" ".join,
)
def test_early_check_leaves_alone_what_it_cannot_judge_alone(arguments) -> None:
    assert bad_values(arguments) == []


def test_a_search_without_its_plugin_is_refused_with_the_command_that_installs_it(
    monkeypatch,
) -> None:
    arguments = ["hparams_search=optuna", "-m"]
    assert missing_plugins(arguments) == []  # the test environment has the optuna extra
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)
    assert missing_plugins(arguments) == [
        "hparams_search=optuna: Hydra's plugin for it is not installed here; install it with "
        ".venv/bin/pip install -e '.[optuna]' (`make test` installs it too)"
    ]


def test_precision_may_be_given_as_a_number(tmp_path) -> None:
    assert full_check(["trainer.precision=32", "engine=raw"], tmp_path) == []
    assert full_check(["trainer.precision=16"], tmp_path) == [
        "trainer.precision=16 is not allowed: expected one of 32-true, 32, 64-true, "
        "16-mixed, bf16-mixed, bf16-true"
    ]


def test_there_are_at_least_20_bad_inputs() -> None:
    assert len(BAD_INPUTS) >= 20


@pytest.mark.slow
@pytest.mark.parametrize(
    "index", range(len(BAD_INPUTS)), ids=[" ".join(a) for a, _, _ in BAD_INPUTS]
)
def test_bad_input_is_refused_briefly_and_writes_nothing(refusals, index) -> None:
    _arguments, key, code, result, cwd = refusals[index]
    message = result.stderr.strip()
    assert result.returncode == code, message
    assert key in message, message
    assert "Traceback" not in message and len(message.splitlines()) <= 7, message
    assert result.stdout == ""
    assert list(cwd.iterdir()) == []  # no run directory, no outputs/


@pytest.mark.slow
def test_refusal_comes_before_torch_is_even_imported(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "train.py"), "model.hidden=0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "hydra" in imported and not {"torch", "lightning"} & imported


@pytest.mark.slow
def test_every_value_of_a_sweep_is_checked_before_the_first_job(tmp_path) -> None:
    result = train_in(tmp_path, "optimizer=sgd,adam", "optimizer.lr=0.1,-1", "-m")
    assert result.returncode == 2
    assert result.stderr.count("optimizer.lr=-1 is not allowed") == 1, result.stderr
    assert "in the job: optimizer=sgd optimizer.lr=-1" in result.stderr
    assert list(tmp_path.iterdir()) == []  # not even the first, valid, job ran


@pytest.mark.slow
def test_sweep_params_of_an_experiment_are_checked_too(tmp_path) -> None:
    result = train_in(tmp_path, "experiment=homework", "model.hidden=0", "-m")
    assert result.returncode == 2 and "model.hidden=0" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "group", sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")
)
def test_every_shipped_option_passes_the_check(tmp_path, group) -> None:
    for option in option_names(group):
        cfg = compose_config([f"{group}={option}"], tmp_path)
        assert problems(cfg) == [], f"{group}={option}"


def test_new_directories_never_collide(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = new_directory("outputs/sweeps/same-second")
    monkeypatch.setattr("mlplab.cli._created", {})  # as if another process asked
    second = new_directory("outputs/sweeps/same-second")
    assert first == "outputs/sweeps/same-second" and second == "outputs/sweeps/same-second_2"
    assert Path(first).is_dir() and Path(second).is_dir()
