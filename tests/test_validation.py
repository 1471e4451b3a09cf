"""Bad input: refused at once, with one short message naming the key, and nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mlplab.cli import (
    CONFIG_DIR,
    bad_values,
    checked_config,
    checked_jobs,
    composition_problems,
    missing_plugins,
    new_directory,
    run,
    unknown_options,
)
from mlplab.config import COMMON, MANAGED, RAW_HONOURS, ConfigError, problems, render
from mlplab.trainer_arguments import TRAINER_DEFAULTS

from . import forked
from .conftest import ROOT, compose_config, option_names

# (overrides, what the message must name, exit code): 2 is mlplab's refusal, 1 Hydra's own.
BAD_INPUTS = [
    (["model.hidden=0"], "model.hidden=0", 2),
    (["model.hidden=abc"], "model.hidden=abc", 2),
    (["model.hidden=3.5"], "model.hidden=3.5", 2),
    (["model.num_hidden_layers=0"], "model.num_hidden_layers=0", 2),
    (["trainer.max_epochs=-2"], "trainer.max_epochs=-2", 2),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0", 2),
    (["trainer.max_steps=0"], "trainer.max_steps=0", 2),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1", 2),
    (["trainer.gradient_clip_algorithm=clip"], "trainer.gradient_clip_algorithm=clip", 2),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0", 2),
    (["data.batch_size=0"], "data.batch_size=0", 2),
    (["data.num_samples=-5"], "data.num_samples=-5", 2),
    (["data.noise=-1"], "data.noise=-1", 2),
    (["data.noise=inf"], "data.noise=inf", 2),
    (["data.num_workers=-2"], "data.num_workers=-2", 2),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5", 2),
    (["data.val_fraction=0.5", "data.test_fraction=0.5"], "data.val_fraction=0.5", 2),
    (["data=classification", "data.out_features=1"], "data.out_features=1", 2),
    (["data=binary", "data.in_features=1"], "data.in_features=1", 2),
    (["data=binary", "data.out_features=3"], "data.out_features=3", 2),  # one output
    (["optimizer.lr=-1"], "optimizer.lr=-1", 2),
    (["optimizer.lr=0"], "optimizer.lr=0", 2),
    (["optimizer.lr=inf"], "optimizer.lr=inf", 2),
    (["optimizer=rmsprop", "optimizer.alpha=nan"], "optimizer.alpha=nan", 2),
    (["optimizer.eps=0"], "optimizer.eps=0", 2),
    (["optimizer.betas=[0.9,1.5]"], "optimizer.betas", 2),
    (["optimizer=sgd", "optimizer.momentum=-0.5"], "optimizer.momentum=-0.5", 2),
    (["optimizer=sgd", "optimizer.nesterov=true"], "optimizer.nesterov", 2),
    (["optimizer=sgd", "+optimizer.betas=[0.9,0.99]"], "SGD takes lr, momentum", 2),
    (["optimizer._target_=torch.optim.NoSuch"], "optimizer._target_=torch.optim.NoSuch", 2),
    (["optimizer._partial_=false"], "optimizer._partial_=false", 2),
    (["+activation.negative_slope=0.1"], "activation.negative_slope", 2),  # relu has none
    (["+trainer.max_epoch=3"], "did you mean trainer.max_epochs?", 2),
    (["+trainer.not_an_argument=1"], "unknown key trainer.not_an_argument", 2),
    (["+trainer.logger=x"], "trainer.logger=x is set by mlplab", 2),
    (
        ["callbacks=early_stopping", "+callbacks.early_stopping.patiense=5"],
        "did you mean callbacks.early_stopping.patience?",
        2,
    ),
    (
        ["scheduler=step", "+scheduler.scheduler.step_sise=3"],
        "did you mean scheduler.scheduler.step_size?",
        2,
    ),
    (["scheduler=step", "scheduler.interval=batch"], "scheduler.interval=batch", 2),
    (["seed=-1"], "seed=-1", 2),
    (["engine=jax"], "engine=jax", 2),
    (["engine=raw", "trainer.precision=bf16-mixed"], "trainer.precision=bf16-mixed", 2),
    (
        ["engine=raw", "trainer.limit_train_batches=0.5"],
        "trainer.limit_train_batches=0.5 is not honoured by engine=raw",
        2,
    ),
    (["engine=raw", "trainer.max_epochs=-1"], "trainer.max_epochs=-1", 2),
    (
        ["callbacks=early_stopping", "engine=raw"],
        "callbacks.early_stopping: engine=raw runs no Lightning callbacks",
        2,
    ),
    (["trainer.accelerator=tpu"], "trainer.accelerator=tpu", 2),
    (["resume=no/such/run"], "resume=no/such/run", 2),
    (["init_from=no/such.ckpt"], "init_from=no/such.ckpt: no such checkpoint file", 2),
    (["optimizer=adma"], "optimizer=adma: there is no such option", 2),
    # jobs that could never fit in memory: refused up front, saying how much they need
    (["model.hidden=100000000", "data.batch_size=64"], "GB available", 2),
    (["data.num_samples=10000000000", "model.hidden=64"], "the job needs at least", 2),
    # processes mlplab cannot start itself: Lightning would re-run the command line, or wait
    (["accelerator=cpu", "trainer.devices=2"], "trainer.devices=2 needs a data-parallel", 2),
    (["trainer.num_nodes=2", "accelerator=ddp_cpu"], "trainer.num_nodes=2: no cluster launcher", 2),
    # a logger's directory stays inside the job's (or a sweep's logs land in its neighbours')
    (["logger.tensorboard.name=../../../../x"], "logger.tensorboard.name=../../../../x", 2),
    (["logger.tensorboard.version=../x"], "logger.tensorboard.version=../x", 2),
    (["logger=csv", "logger.csv.name=/tmp/elsewhere"], "logger.csv.name=/tmp/elsewhere", 2),
    (["logger.tensorboard.save_dir=/tmp"], "logger.tensorboard.save_dir=/tmp is not allowed", 2),
]
# Mistakes Hydra itself would stop at (exit 1, several lines, or a traceback), answered by mlplab:
HYDRA_MISTAKES = [
    (["trainer.max_epoch=3"], "did you mean trainer.max_epochs", 2),  # a new key needs "+"
    (["optimiser=sgd"], "unknown key optimiser (=sgd): did you mean optimizer?", 2),
    (["lr=0.1"], "did you mean optimizer.lr?", 2),
    (["model.hidden_size=128"], "did you mean model.hidden?", 2),
    (["optimizer=sgd", "optimizer.betas=[0.9,0.99]"], "optimizer has lr, momentum", 2),
    (["seed==1"], "seed==1: Hydra cannot parse it", 2),
    (["optimizer.lr=[1,"], "optimizer.lr=[1,: Hydra cannot parse it", 2),
    (["optimizer", "=", "sgd"], "optimizer = sgd: not key=value", 2),
    (["~seed"], "data.shuffle_seed: cannot be resolved", 2),
    (["seed=${oops}"], "seed: cannot be resolved: Interpolation key 'oops' not found", 2),
    (["seed=${now:%Y}"], "seed='", 2),  # the string '2026', not the number
    # Hydra composes a sweep first without its swept values: adam, the default, has no momentum
    (["optimizer=sgd,rmsprop", "optimizer.momentum=0.9", "-m"], "++optimizer.momentum=0.9", 2),
]
BAD_INPUTS += HYDRA_MISTAKES
if not torch.cuda.is_available():
    BAD_INPUTS.append((["accelerator=gpu"], "no CUDA GPU was found", 2))
# Run as real processes too (exit code, at most 3 lines, nothing written): every mistake Hydra
# itself would answer, and one input per stage of mlplab's check. The in-process test holds
# every input's message; these show each stage's refusal reaches the command line whole.
ONE_PER_STAGE = [
    ["optimizer=adma"],  # an option that does not exist (before Hydra starts)
    ["model.hidden=0"],  # a value refused from the command line alone
    ["optimizer=rmsprop", "optimizer.alpha=nan"],  # a value refused in the composed config
    ["optimizer=sgd", "+optimizer.betas=[0.9,0.99]"],  # a key the target's signature lacks
    ["optimizer._target_=torch.optim.NoSuch"],  # a target that cannot be imported
    ["+trainer.max_epoch=3"],  # lightning.Trainer's signature
    ["engine=raw", "trainer.limit_train_batches=0.5"],  # what the raw loop cannot honour
    ["data.val_fraction=0.5", "data.test_fraction=0.5"],  # keys that depend on each other
    ["resume=no/such/run"],
    ["model.hidden=100000000", "data.batch_size=64"],  # memory
    ["accelerator=cpu", "trainer.devices=2"],  # processes mlplab cannot start
    ["logger.tensorboard.name=../../../../x"],  # a path outside the job directory
    ["accelerator=gpu"],
]
AS_PROCESSES = [case for case in BAD_INPUTS if case in HYDRA_MISTAKES or case[0] in ONE_PER_STAGE]
AS_PROCESSES = [case for i, case in enumerate(AS_PROCESSES) if case not in AS_PROCESSES[:i]]


def train_in(cwd: Path, *arguments: str) -> subprocess.CompletedProcess:
    """`python <repo>/train.py …` run from `cwd`, so any output directory would land there."""
    return forked.run(cwd, ROOT / "train.py", *arguments, timeout=120)


def refusal_in_process(arguments: list[str], output_dir: Path) -> str:
    """What mlplab refuses `arguments` with, checked in-process (the fast twin of the CLI)."""
    found = unknown_options(arguments) + missing_plugins(arguments) or bad_values(arguments)
    if found := found or composition_problems(arguments):
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


def full_check(arguments: list[str], output_dir: Path) -> list[str]:
    """The problems the check of the composed config finds (what Hydra's callback runs)."""
    return problems(compose_config(arguments, output_dir))


@pytest.mark.parametrize(
    "arguments",
    [
        a
        for a, _, code in BAD_INPUTS
        if code == 2 and not unknown_options(a) and a not in [m for m, _, _ in HYDRA_MISTAKES]
    ],
    ids=" ".join,
)
def test_values_refused_early_are_refused_by_the_full_check_in_the_same_words(
    tmp_path, arguments
) -> None:
    early = bad_values(arguments)
    if early:
        assert set(early) <= set(full_check(arguments, tmp_path))
    key = arguments[-1].split("=")[0]
    # A directory or file to read is judged with the composed config; the rest in any config.
    if len(arguments) == 1 and key in COMMON and key not in ("resume", "init_from"):
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
        ["init_from=no/such.ckpt"],  # whether the file exists is judged after composing
        ["trainer.max_epochs=-1"],  # fine for engine=lightning, refused for engine=raw
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


# Configs that pass the check: any lightning.Trainer argument, any parameter of a target.
GOOD_INPUTS = [
    ["trainer.gradient_clip_val=1.0"],  # listed in trainer/default.yaml: no "+" needed
    ["trainer.gradient_clip_val=0.5", "trainer.gradient_clip_algorithm=value"],
    ["trainer.detect_anomaly=true"],
    ["trainer.profiler=simple"],
    ["trainer.limit_train_batches=0.5", "trainer.val_check_interval=0.5"],
    ["+trainer.max_time=00:00:10:00"],  # not listed: "+", and Lightning judges the value
    ["+trainer.min_steps=5", "+trainer.inference_mode=false"],
    ["trainer.max_epochs=-1", "trainer.max_steps=100"],
    ["engine=raw"],  # the default callbacks: the raw loop does their jobs its own way
    ["logger=[tensorboard,csv]"],  # a list of options, as Hydra takes it
    ["engine=raw", "trainer.gradient_clip_val=1"],
    ["engine=raw", "trainer.accumulate_grad_batches=4", "trainer.log_every_n_steps=1"],
    ["engine=raw", "trainer.overfit_batches=0"],  # Lightning's default: nothing to honour
    ["engine=raw", "scheduler=step"],
    ["callbacks=none"],
    ["callbacks=[default,early_stopping,lr_monitor]", "callbacks.early_stopping.patience=2"],
    ["callbacks=rich_model_summary", "+callbacks.rich_model_summary.anything=1"],  # **kwargs
    ["scheduler=plateau", "scheduler.scheduler.factor=0.1", "+scheduler.name=lr"],
    ["scheduler=onecycle", "optimizer=sgd", "+scheduler.scheduler.anneal_strategy=linear"],
    ["optimizer=sgd", "optimizer.momentum=0.9", "optimizer.nesterov=true"],
    ["+optimizer.maximize=false"],  # any parameter of torch.optim.Adam
    ["+activation.inplace=true"],
]


@pytest.mark.parametrize("arguments", GOOD_INPUTS, ids=" ".join)
def test_what_lightning_and_the_targets_take_passes_the_check(tmp_path, arguments) -> None:
    assert full_check(arguments, tmp_path) == []


@pytest.mark.parametrize("name", sorted(MANAGED))
def test_trainer_keys_that_mlplab_sets_are_refused_with_where_to_set_them(tmp_path, name) -> None:
    assert full_check([f"+trainer.{name}=x"], tmp_path) == [
        f"trainer.{name}=x is set by mlplab, not here: {MANAGED[name]}"
    ]


def test_an_unknown_trainer_key_is_answered_with_lightnings_arguments(tmp_path) -> None:
    (message,) = full_check(["+trainer.not_an_argument=1"], tmp_path)
    assert message.startswith(
        "unknown key trainer.not_an_argument (=1): lightning.Trainer takes accelerator, strategy"
    )
    assert "did you mean" not in message and "logger" not in message


@pytest.mark.parametrize(
    ("arguments", "start"),
    [
        (
            ["optimizer=sgd", "+optimizer.betas=[0.9,0.99]"],
            "unknown key optimizer.betas (=[0.9, 0.99]): SGD takes lr, momentum, dampening, ",
        ),
        (
            ["callbacks=[default,early_stopping]", "+callbacks.early_stopping.patiense=5"],
            "unknown key callbacks.early_stopping.patiense (=5): EarlyStopping takes monitor, "
            "min_delta, patience, ",
        ),
        (
            ["scheduler=step", "+scheduler.scheduler.step_sise=3"],
            "unknown key scheduler.scheduler.step_sise (=3): StepLR takes step_size, gamma, ",
        ),
    ],
    ids=lambda case: " ".join(case) if isinstance(case, list) else "",
)
def test_an_unknown_key_of_a_target_names_what_the_target_takes(tmp_path, arguments, start) -> None:
    (message,) = full_check(arguments, tmp_path)
    assert message.startswith(start)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["scheduler=step", "~scheduler.scheduler.step_size"],
            "scheduler.scheduler.step_size is missing: StepLR needs it",
        ),
        (
            ["scheduler=step", "scheduler.scheduler._partial_=false"],
            "scheduler.scheduler._partial_=false is not allowed: expected true "
            "(mlplab calls it with the optimizer)",
        ),
        (
            ["callbacks=early_stopping", "~callbacks.early_stopping.monitor"],
            "callbacks.early_stopping.monitor is missing: EarlyStopping needs it",
        ),
        (
            ["+callbacks.timer=1"],
            "callbacks.timer=1 is not allowed: expected a node with a _target_",
        ),
        (
            ["activation._target_=torch.nn.Relu"],
            "activation._target_=torch.nn.Relu cannot be imported: "
            "module 'torch.nn' has no attribute 'Relu'",
        ),
        (
            ["optimizer._target_=no_such_package.Adam"],
            "optimizer._target_=no_such_package.Adam cannot be imported: "
            "No module named 'no_such_package'",
        ),
    ],
    ids=lambda case: " ".join(case) if isinstance(case, list) else "",
)
def test_a_target_node_is_checked_against_its_signature(tmp_path, arguments, message) -> None:
    assert full_check(arguments, tmp_path) == [message]


@pytest.mark.parametrize("option", option_names("debug"))
def test_engine_raw_refuses_each_debug_option_it_cannot_honour(tmp_path, option) -> None:
    found = full_check(["engine=raw", f"debug={option}"], tmp_path)
    assert found and all("is not honoured by engine=raw" in problem for problem in found)


@pytest.mark.parametrize("name", sorted(set(TRAINER_DEFAULTS) - set(MANAGED) - RAW_HONOURS))
def test_engine_raw_accepts_every_trainer_argument_left_at_lightnings_default(
    tmp_path, name
) -> None:
    # ++ sets a key whether trainer/default.yaml lists it or not.
    default = render(TRAINER_DEFAULTS[name])
    assert full_check(["engine=raw", f"++trainer.{name}={default}"], tmp_path) == []


def test_engine_raw_refuses_to_resume_and_callbacks_other_than_the_checkpoint(tmp_path) -> None:
    arguments = ["engine=raw", "resume=outputs/x", "callbacks=[default,lr_monitor]"]
    assert full_check(arguments, tmp_path) == [
        "resume=outputs/x needs engine=lightning: the raw loop does not resume",
        "callbacks.lr_monitor: engine=raw runs no Lightning callbacks; use engine=lightning",
    ]


def test_init_from_names_a_checkpoint_file(tmp_path) -> None:
    checkpoint = tmp_path / "last.ckpt"
    assert full_check([f"init_from={checkpoint}"], tmp_path) == [
        f"init_from={checkpoint}: no such checkpoint file"
    ]
    checkpoint.touch()
    assert full_check([f"init_from={checkpoint}"], tmp_path) == []


def test_keys_and_values_are_judged_without_importing_torch_or_lightning() -> None:
    code = (
        "import sys\n"
        "from mlplab.config import problems\n"
        "from tests.conftest import compose_config\n"
        "for arguments in (['+trainer.max_epoch=3', 'optimizer.lr=inf'],\n"
        "                  ['engine=raw', 'trainer.limit_train_batches=0.5']):\n"
        "    assert problems(compose_config(arguments, 'unused')), arguments\n"
        "print(sorted({'torch', 'lightning'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_there_are_at_least_20_bad_inputs() -> None:
    assert len(BAD_INPUTS) >= 20


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arguments", "key", "code"), AS_PROCESSES, ids=[" ".join(a) for a, _, _ in AS_PROCESSES]
)
def test_bad_input_is_refused_briefly_and_writes_nothing(tmp_path, arguments, key, code) -> None:
    result = train_in(tmp_path, *arguments)  # from an empty directory
    message = result.stderr.strip()
    assert result.returncode == code, message
    assert key in message, message
    assert "Traceback" not in message and len(message.splitlines()) <= 3, message
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no run directory, no outputs/


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


def test_all_shipped_callbacks_together_pass_the_check(tmp_path) -> None:
    options = [o for o in option_names("callbacks") if o != "none"]
    assert problems(compose_config([f"callbacks=[{','.join(options)}]"], tmp_path)) == []


@pytest.mark.parametrize("optimizer", option_names("optimizer"))
def test_every_shipped_scheduler_fits_every_shipped_optimizer(tmp_path, optimizer) -> None:
    for scheduler in option_names("scheduler"):
        cfg = compose_config([f"optimizer={optimizer}", f"scheduler={scheduler}"], tmp_path)
        assert problems(cfg) == [], f"optimizer={optimizer} scheduler={scheduler}"


def test_new_directories_never_collide(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = new_directory("outputs/sweeps/same-second")
    monkeypatch.setattr("mlplab.cli._created", {})  # as if another process asked
    second = new_directory("outputs/sweeps/same-second")
    assert first == "outputs/sweeps/same-second" and second == "outputs/sweeps/same-second_2"
    assert Path(first).is_dir() and Path(second).is_dir()


def resolved(cfg) -> dict | str:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception as error:
        return type(error).__name__


def test_a_sweep_is_checked_composing_once_per_choice_of_options(monkeypatch, tmp_path) -> None:
    jobs = [
        [f"optimizer={o}", f"optimizer.lr={lr}", f"seed={seed}", "+trainer.min_steps=2"]
        for o in ("sgd", "adam")
        for lr in (0.1, 0.01)
        for seed in range(5)
    ]
    # Each job's changes are undone before the next: shuffle_seed follows seed again, and a
    # list merged into the config (done on a copy) does not stay behind either.
    jobs += [
        ["optimizer=sgd", "seed=3", "+trainer.min_steps=2", "data.shuffle_seed=7"],
        ["optimizer=sgd", "seed=4", "+trainer.min_steps=2"],
        ["optimizer=sgd", "+trainer.min_steps=2", "optimizer.momentum=0.5", "seed=5"],
        ["optimizer=adam", "optimizer.betas=[0.5,0.6]"],
        ["optimizer=adam"],
    ]
    odd = [["optimizer=adam", "optimizer.momentum=0.5"], ["data=binary", "seed=${oops}"]]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        expected = [
            OmegaConf.to_container(
                compose("train", [*job, "paths.output_dir=not-created-yet"]), resolve=True
            )
            for job in jobs
        ]
        calls = []
        monkeypatch.setattr(hydra, "compose", lambda *a: calls.append(a) or compose(*a))
        checked = list(checked_jobs("train", jobs + odd, check=resolved))
    assert [result for _, result in checked[: len(jobs)]] == expected
    assert len(calls) == 1 + 2 + 1 + 1  # the defaults, one per optimizer, and each odd job
    assert checked[-2][1][0].startswith("unknown key optimizer.momentum (=0.5): optimizer has")
    assert checked[-1][1] == "InterpolationKeyError"  # composed; ${oops} left to the check
