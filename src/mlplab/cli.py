"""The `python train.py` command: Hydra composes the config, `mlplab.train.train` runs it.

Only Hydra and OmegaConf are imported here; torch and Lightning load when a job starts,
so `--help`, `--cfg job` and config errors answer without waiting for them.

Exit codes (a sweep's is the worst of its jobs', after all of them ran and the report is
written): 0 every job completed, 1 a job failed (its traceback is in its error.txt),
2 the config was refused (nothing ran), 3 a job diverged (non-finite loss), none failed;
130 the job was interrupted (Ctrl-C; it stops the whole sweep).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import json
import logging
import math
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mlplab.config import (
    CLASS_RULES,
    COMMON,
    ConfigError,
    problems,
    relocated,
    render,
    validate,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
# Bytes of the overrides kept in a sweep job's directory name: file systems allow 255 bytes
# a name (not characters: an emoji takes 4), and Hydra puts the job's number before it.
JOB_NAME_MAX = 120
EXIT_CODES = {"completed": 0, "failed": 1, "invalid": 2, "diverged": 3, "interrupted": 130}

log = logging.getLogger(__name__)
_training = threading.Event()  # set while this process trains a job (see stop_with_parent)


def job_name(overrides: Sequence[str]) -> str:
    """A directory name from a job's overrides, in command-line order.

    `["optimizer=sgd", "activation=tanh"]` → `optimizer=sgd,activation=tanh`; slashes become
    underscores so a value never opens a subdirectory.
    """
    name = ",".join(overrides).replace("/", "_").encode()[:JOB_NAME_MAX]
    return name.decode(errors="ignore") or "defaults"  # "ignore": a character cut in two


_created: dict[str, str] = {}


def new_directory(base: str) -> str:
    """`base`, else `base_2`, `base_3`, …: the first that did not exist, created at once.

    `mkdir` either creates a directory or fails, atomically, so two runs or sweeps started
    in the same second (or from two machines on one file system) never share a directory.
    """
    if base not in _created:
        for n in count(1):
            path = base if n == 1 else f"{base}_{n}"
            try:
                os.makedirs(path)
            except FileExistsError:
                continue
            _created[base] = path
            break
    return _created[base]


# Cached, so that every job of a sweep (and Hydra's copies of the config) see one directory.
OmegaConf.register_new_resolver("mlplab.job_name", job_name, replace=True)
OmegaConf.register_new_resolver("mlplab.new_dir", new_directory, use_cache=True, replace=True)
OmegaConf.register_new_resolver(
    "mlplab.run_dir",
    lambda resume, base: resume or new_directory(base),
    use_cache=True,
    replace=True,
)


def hydra_subdir(resume: str | None, job_dir: str) -> str | None:
    """Where Hydra saves a job's composed config: `.hydra`, never over a run's own.

    A resumed job gets `.hydra-resume`; a job a resumed sweep keeps as it is gets none
    (None: Hydra writes nothing into it).
    """
    if resume:
        return ".hydra-resume"
    return {"new": ".hydra", "resumed": ".hydra-resume", "kept": None}[job_fate(Path(job_dir))]


OmegaConf.register_new_resolver("mlplab.hydra_subdir", hydra_subdir, replace=True)


@contextlib.contextmanager
def refuse_bad_config() -> Iterator[None]:
    """Turn a `ConfigError` into its message on stderr and exit code 2, without a traceback."""
    try:
        yield
    except ConfigError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        lines = str(error).splitlines()
        print(
            "mlplab: config refused, nothing was run:",
            *(f"  {line}" for line in lines),
            sep="\n",
            file=sys.stderr,
        )
        sys.exit(EXIT_CODES["invalid"])


def check_devices(cfg: DictConfig) -> None:
    """Refuse an accelerator this machine lacks (imports torch only when one is asked for)."""
    accelerator = cfg.trainer.accelerator
    if accelerator not in ("gpu", "cuda", "mps"):
        return
    import torch

    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "trainer.accelerator=mps: no Apple GPU (MPS) is available on this machine; "
            "choose accelerator=cpu, or accelerator=auto to use one only where present"
        )
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator=gpu: no CUDA GPU was found on this machine "
            "(torch.cuda.is_available() is False); choose accelerator=cpu, or "
            "accelerator=auto to use a GPU only where there is one"
        )


# What a resumed run may change: how far it trains. Everything else is the run's own.
RESUME_OVERRIDES = ("trainer.max_epochs", "trainer.max_steps")


def resumed_config(job_dir: Path, overrides: Sequence[str]) -> tuple[DictConfig, list[str]]:
    """The saved config of the run in `job_dir`, trained further if the overrides say so.

    A killed run continues where its last checkpoint left it; a completed one only with a
    larger `trainer.max_epochs` (or `max_steps`).
    """
    changes = [o for o in overrides if not o.startswith("resume=")]
    others = [o for o in changes if o.partition("=")[0] not in RESUME_OVERRIDES]
    if others:
        raise ConfigError(
            f"resume={job_dir} continues a run with its own saved config; drop the other "
            f"overrides ({' '.join(others)}); only {' and '.join(RESUME_OVERRIDES)} may change"
        )
    config_file = job_dir / "config.yaml"
    if not config_file.is_file() and any(job_dir.glob("*/metrics.json")):
        raise ConfigError(
            f"resume={job_dir}: it holds jobs but no multirun.yaml, so it cannot be resumed "
            "as one sweep (only the basic sweeper's can); resume its jobs one by one with "
            "resume=<job dir>"
        )
    if not config_file.is_file():
        raise ConfigError(
            f"resume={job_dir}: no mlplab run or sweep there (no config.yaml or multirun.yaml); "
            "expected the directory of a job (outputs/runs/<date_time>) or of a sweep "
            "(outputs/sweeps/<date_time>)"
        )
    summary_file = job_dir / "metrics.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    if "replica" in summary:
        raise ConfigError(
            f"resume={job_dir}: replica {summary['replica']} of the job in {job_dir.parent}, "
            f"which trains its replicas together; resume that job: resume={job_dir.parent}"
        )
    cfg = relocated(OmegaConf.load(config_file), job_dir)
    if cfg.engine == "raw":
        raise ConfigError(
            f"resume={job_dir}: resume= needs engine=lightning: the raw loop does not resume"
        )
    before = {key: OmegaConf.select(cfg, key) for key in RESUME_OVERRIDES}
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(changes))
    further = any(OmegaConf.select(cfg, key) != value for key, value in before.items())
    if summary.get("status") == "completed" and not further:
        raise ConfigError(
            f"resume={job_dir}: that run has completed its trainer.max_epochs="
            f"{before['trainer.max_epochs']}; give a larger one to train it further"
        )
    if problem := unreadable_checkpoint(job_dir / "checkpoints" / "last.ckpt"):
        raise ConfigError(f"resume={job_dir}: {problem}; nothing was changed")
    return cfg, summary.get("overrides", [])


# Set (through Hydra's hydra.job.env_set) on every job of a sweep that `resume=<sweep dir>`
# finishes: a job whose directory already holds a run is kept or resumed, not trained again.
RESUMING_SWEEP = "MLPLAB_RESUMING_SWEEP"
# Outcomes a resumed sweep keeps: training them again would only give the same.
KEPT = ("completed", "diverged")


def job_fate(job_dir: Path) -> str:
    """What a resumed sweep does with the job in `job_dir`: "kept", "resumed" or "new".

    A job that wrote its config was started: kept if it completed or diverged, else (killed,
    interrupted, failed) resumed from its last checkpoint. Any other job starts.
    """
    if not (job_dir / "config.yaml").is_file():
        return "new"
    summary_file = job_dir / "metrics.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return "kept" if summary.get("status") in KEPT else "resumed"


def quoted_resume(argument: str) -> str:
    """`resume=<dir>` as Hydra reads one directory, whatever the directory is called.

    A sweep job's directory is named by its overrides (`1_optimizer=sgd,activation=tanh`):
    Hydra's override grammar refuses a bare `=` in a value and reads `,` as a sweep. Such a
    value is given to Hydra quoted, so `resume=<job dir>` works as the shell passes it.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    key, _, value = argument.partition("=")
    if key != "resume" or value[:1] in ("'", '"'):
        return argument
    try:
        (override,) = OverridesParser.create().parse_overrides([argument])
        if not override.is_sweep_override():
            return argument
    except Exception:  # Hydra cannot parse it: the quotes below make it one string
        pass
    return f"resume={hydra_quoted(value)}"


def hydra_quoted(value: str) -> str:
    """`value` as one string in Hydra's override grammar, whatever characters it holds."""
    return "'" + value.replace("'", "\\'") + "'"


def is_sweep_directory(path: Path) -> bool:
    """A directory a sweep (`-m`) wrote: its multirun.yaml, and no run of its own."""
    return (path / "multirun.yaml").is_file() and not (path / "config.yaml").is_file()


def resumed_sweep_arguments(sweep_dir: Path, arguments: Sequence[str]) -> list[str]:
    """The command line that finishes the sweep in `sweep_dir`: the one that started it.

    Hydra's basic sweeper numbers a sweep's jobs in the order of its overrides, so the same
    overrides give every job the same directory again; there, each job is kept, resumed or
    started (`job_fate`), and the report covers them all.
    """
    others = [a for a in arguments if not a.startswith("resume=") and a not in ("-m", "--multirun")]
    if others:
        raise ConfigError(
            f"resume={sweep_dir} finishes a sweep with the settings it was started with; "
            f"drop the other arguments ({' '.join(others)})"
        )
    saved = OmegaConf.load(sweep_dir / "multirun.yaml")
    if sweep_jobs(saved) is None:
        sweeper = str(saved.hydra.sweeper._target_).rsplit(".", 1)[-1]
        raise ConfigError(
            f"resume={sweep_dir}: its sweeper ({sweeper}) chooses each job as it goes, so the "
            "jobs cannot be matched to their directories again; resume them one by one with "
            "resume=<job dir>"
        )
    ours = ("hydra.sweep.dir", "hydra.mode", f"+hydra.job.env_set.{RESUMING_SWEEP}")
    hydra_overrides = [o for o in saved.hydra.overrides.hydra if o.partition("=")[0] not in ours]
    return [
        *hydra_overrides,
        *saved.hydra.overrides.task,
        f"hydra.sweep.dir={hydra_quoted(str(sweep_dir))}",
        f"+hydra.job.env_set.{RESUMING_SWEEP}=1",
        "-m",
    ]


def unreadable_checkpoint(path: Path) -> str | None:
    """Why a run's last.ckpt cannot be resumed from (None: it can, or there is none yet)."""
    if not path.exists():
        return None  # killed before its first checkpoint: the run starts again
    import torch

    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # truncated, empty, not a torch file, unsafe to load
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"its checkpoint {path} cannot be read ({reason})"
    if not isinstance(checkpoint, dict) or not {"loops", "state_dict"} <= checkpoint.keys():
        return f"{path} is not a checkpoint of an mlplab run (no Lightning training state)"
    return None


def print_config_tree(cfg: DictConfig) -> None:
    """The composed config as a rich tree, one branch per top-level key."""
    from rich import print as rich_print
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", style="bold")
    for key, node in cfg.items():
        text = OmegaConf.to_yaml(node, resolve=True) if OmegaConf.is_config(node) else str(node)
        tree.add(str(key), style="bold").add(Syntax(text.rstrip(), "yaml", theme="ansi_dark"))
    rich_print(tree)


def format_metrics(metrics: dict[str, float]) -> str:
    """One `name  value` line per metric, aligned."""
    width = max(map(len, metrics), default=0)
    return "\n".join(f"  {name:<{width}}  {value:.6g}" for name, value in metrics.items())


def share_cores_between_workers(hydra_cfg: Any) -> None:
    """Under a parallel launcher, give each worker its share of the cores, not all of them.

    With hydra/launcher=joblib, n_jobs worker processes train at once; if each also used
    every core for torch's threads, they would fight over them. Workers × threads ≤ cores.
    """
    launcher = hydra_cfg.launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return
    import torch

    cores = os.cpu_count() or 1
    workers = launcher.n_jobs if launcher.n_jobs > 0 else cores + 1 + launcher.n_jobs
    torch.set_num_threads(max(1, cores // max(1, workers)))
    stop_with_parent()


def training(now: bool) -> None:
    """Say whether this process is training a job now (for `stop_with_parent`).

    A function, not the Event itself in `main`: joblib pickles `main` by value, and an Event
    does not pickle; a module-level function goes by its name.
    """
    if now:
        _training.set()
    else:
        _training.clear()


def stop_with_parent(every: float = 1.0, grace: float = 30.0) -> None:
    """Interrupt this worker process as soon as the process that started it is gone.

    A joblib worker killed with its sweep's process (kill -9, a closed terminal) would be
    adopted by init and train on, unseen, for the rest of its job. A thread (one per worker)
    notices the new parent within `every` seconds and sends the worker a Ctrl-C (joblib's
    workers ignore it; they take it again here): the job stops as "interrupted", resumable.
    The worker exits as soon as its job has ended, or `grace` seconds later at the most.
    """
    import signal
    import time

    if any(thread.name == "stop-with-parent" for thread in threading.enumerate()):
        return
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        if _training.is_set():
            os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + grace
        while _training.is_set() and time.monotonic() < deadline:
            time.sleep(0.1)  # the job writes its status ("interrupted") and ends
        os._exit(EXIT_CODES["interrupted"])

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def check_nodes(cfg: DictConfig) -> None:
    """Refuse several nodes unless something started this process as one of them.

    On one machine, Lightning would wait forever for the other nodes to join.
    """
    nodes = cfg.trainer.get("num_nodes", 1)
    launched = any(v in os.environ for v in ("WORLD_SIZE", "SLURM_NTASKS", "LOCAL_RANK"))
    if nodes != 1 and not launched:
        raise ConfigError(
            f"trainer.num_nodes={nodes}: no cluster launcher started this process (no "
            "torchrun or SLURM environment), so the other nodes would never join; start it "
            "with torchrun or hydra/launcher=slurm (README 'Scaling out')"
        )


def checked_config(cfg: DictConfig, overrides: Sequence[str]) -> tuple[DictConfig, list[str]]:
    """The config a job will run (a resumed run's own) and its overrides, once they pass."""
    overrides = list(overrides)
    if cfg.resume:
        cfg, overrides = resumed_config(Path(cfg.resume), overrides)
    validate(cfg)
    check_devices(cfg)
    check_nodes(cfg)
    return cfg, overrides


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """Run one job; return its final `val/loss` (NaN if it did not complete) for sweepers."""
    hydra_cfg = HydraConfig.get()
    overrides = hydra_cfg.overrides.task
    if RESUMING_SWEEP in hydra_cfg.job.env_set:  # resume=<sweep dir>: this job may have run
        job_dir = Path(hydra_cfg.runtime.output_dir)
        fate = job_fate(job_dir)
        if fate == "kept":  # its results stay as they are: nothing is written, not a log line
            summary = json.loads((job_dir / "metrics.json").read_text())
            return summary.get("metrics", {}).get("val/loss", math.nan)
        with refuse_bad_config():
            claim_job_directory(job_dir, resume=True)
        if fate == "resumed":  # exactly as resume=<job dir>
            cfg.resume, overrides = str(job_dir), []
    resume = cfg.resume
    with refuse_bad_config():
        cfg, overrides = checked_config(cfg, overrides)
    if cfg.extras.print_config:
        print_config_tree(cfg)
    log.info(
        "%s on %s with engine=%s, writing to %s%s",
        cfg.data.task,
        cfg.trainer.accelerator,
        cfg.engine,
        cfg.paths.output_dir,
        " (resumed)" if resume else "",
    )

    share_cores_between_workers(hydra_cfg)
    from mlplab.fit import Diverged  # heavy: torch, Lightning
    from mlplab.train import train

    status, value = "completed", math.nan
    training(True)
    try:
        metrics = train(cfg, overrides=overrides, resume=bool(resume))
        value = metrics["val/loss"]
        log.info("final metrics:\n%s", format_metrics(metrics))
    except Diverged as error:
        status = "diverged"
        stopped = "its diverged replicas" if cfg.get("replicas", 1) > 1 else "the job"
        log.warning("diverged: %s; %s stopped there (status in metrics.json)", error, stopped)
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C: the raw loop sees KeyboardInterrupt; Lightning shuts down first, then exits 1.
        log.warning(
            "interrupted (Ctrl-C); continue it with resume=%s", resume or cfg.paths.output_dir
        )
        if hydra_cfg.mode != RunMode.RUN:
            raise KeyboardInterrupt from None  # the whole sweep stops, as asked
        sys.exit(EXIT_CODES["interrupted"])
    except Exception as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        status = "failed"
        log.error(
            "failed: %s: %s (traceback in %s/error.txt)",
            type(error).__name__,
            error,
            cfg.paths.output_dir,
        )
    finally:
        training(False)
    if hydra_cfg.mode == RunMode.RUN and status != "completed":
        sys.exit(EXIT_CODES[status])
    return value


def config_dirs(arguments: Sequence[str]) -> list[Path] | None:
    """`configs/`, then the directories a `hydra.searchpath=[file://…]` argument adds.

    None when the search path names something that is not a directory (a `pkg://` entry):
    its options cannot be listed here, and Hydra is left to judge them.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    dirs = [CONFIG_DIR]
    for argument in arguments:
        if not argument.startswith("hydra.searchpath="):
            continue
        try:
            (override,) = OverridesParser.create().parse_overrides([argument])
            entries = override.value()
        except Exception:  # Hydra reports bad syntax in its own words
            return None
        for entry in entries if isinstance(entries, list) else [entries]:
            if not str(entry).startswith("file://"):
                return None
            dirs.append(Path(str(entry).removeprefix("file://")))
    return dirs


def group_options(dirs: Sequence[Path]) -> dict[str, list[str]]:
    """Each config group's options ({"optimizer": ["adam", …]}) over `dirs`."""
    options: dict[str, set[str]] = {}
    for root in dirs:
        for group in (p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            options.setdefault(group.name, set()).update(p.stem for p in group.glob("*.yaml"))
    return {group: sorted(names) for group, names in sorted(options.items())}


def unknown_options(arguments: Sequence[str]) -> list[str]:
    """`group=option` arguments naming an option that `configs/<group>/` lacks, one line each.

    Hydra would refuse them too, but with a page of search paths; this says it in a line.
    Sweeps (`optimizer=sgd,adma`) are checked value by value; other sweep syntax is left to Hydra.
    Config directories added with `hydra.searchpath=[file://…]` count too.
    """
    dirs = config_dirs(arguments)
    if dirs is None:
        return []
    groups = group_options(dirs)
    found = []
    for argument in arguments:
        group, equals, value = argument.partition("=")
        hydra_group = group.split("/")[0] == "hydra"  # options also come from Hydra's plugins
        plain = group and equals and group in groups
        if not plain or hydra_group or "(" in value:
            continue
        options = groups[group]
        for option in value.removeprefix("[").removesuffix("]").split(","):  # a, a,b or [a,b]
            if option not in options and option != "null":
                found.append(
                    f"{group}={option}: there is no such option; choose one of {', '.join(options)}"
                )
    return found


HELP = """\
python train.py [group=option ...] [key=value ...] [-m]   (mlplab; README.md has the details)

Compose a run from one option per group, override any key, add -m to sweep
comma-separated values (optimizer=sgd,adam activation=relu,tanh -m).

== Configuration groups ==
{groups}

== Config{overrides} ==
{config}
Your own model, data, optimizer, activation, callback…: one YAML with a _target_ in
configs/<group>/, or in a directory of your own added with hydra.searchpath=[file://<dir>].
Also: --cfg job (the config, no training), --hydra-help (Hydra's own flags),
resume=<job dir> or resume=<sweep dir>, python eval.py run=<job dir>, python -m mlplab.report <dir>.
"""


def print_help(arguments: Sequence[str]) -> None:
    """mlplab's --help: the groups and the composed config, in a fraction of Hydra's time.

    Hydra's own --help lists every group by deep-copying its config repository once per
    group, over a second on this machine; the groups are simply the directories here.
    """
    from hydra import compose, initialize_config_dir

    groups = group_options(config_dirs(arguments) or [CONFIG_DIR])
    lines = [f"{group}: {', '.join(names)}" for group, names in groups.items() if group != "hydra"]
    overrides = [a for a in arguments if "=" in a and not a.startswith("-")]
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, "paths.output_dir='<job dir>'"])
        config = OmegaConf.to_yaml(cfg)
    except Exception as error:  # a help screen never fails: it says what went wrong
        config = f"(cannot compose it: {error})\n"
    shown = f" (with {' '.join(overrides)})" if overrides else ""
    print(HELP.format(groups="\n".join(lines), overrides=shown, config=config))


# Options that need a Hydra plugin from an extra: (argument, plugin module, extra).
PLUGINS = [
    ("hparams_search=optuna", "hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("hydra/sweeper=optuna", "hydra_plugins.hydra_optuna_sweeper", "optuna"),
]


def missing_plugins(arguments: Sequence[str]) -> list[str]:
    """Options asked for whose Hydra plugin is not installed, with the command that installs it.

    Hydra would say it cannot find the option, listing its config search path.
    """
    import importlib.util

    return [
        f"{argument}: Hydra's plugin for it is not installed here; install it with "
        f".venv/bin/pip install -e '.[{extra}]' (`make test` installs it too)"
        for argument, module, extra in PLUGINS
        if argument in arguments and importlib.util.find_spec(module) is None
    ]


def bad_values(arguments: Sequence[str]) -> list[str]:
    """Plain `key=value` overrides whose value is wrong whatever else the config holds.

    Hydra composes a run's config twice before mlplab's first callback sees it (~0.5 s
    here), so a bad value is caught from the command line first, with the message the full
    check (`mlplab.config.problems`) would give. Only keys every config has (`COMMON`) and
    single values are checked; sweeps, interpolations, `+key`/`~key`, unparsable arguments
    and resumed runs are left to the full check, which runs on every composed config anyway.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in arguments):
        return []  # --cfg, --info, …: Hydra shows what was asked, bad values included
    candidates = [a for a in arguments if "=" in a]
    if any(a.startswith("resume=") for a in candidates):
        return []  # a resumed run's overrides are judged against its saved config
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except Exception:  # Hydra reports bad syntax in its own words
        return []
    rules = dict(COMMON)
    for group in ("model", "data"):
        target = chosen_target(group, arguments)
        rules |= {f"{group}.{k}": rule for k, rule in CLASS_RULES.get(target, {}).items()}
    found = []
    for override in overrides:
        key = override.key_or_group
        if (
            override.type != OverrideType.CHANGE
            or override.package is not None
            or override.is_sweep_override()
            or key not in rules
            or "${" in override.input_line
        ):
            continue
        value = override.value()
        if not rules[key].accepts(value):
            found.append(f"{key}={render(value)} is not allowed: expected {rules[key].allowed}")
    return found


def chosen_target(group: str, arguments: Sequence[str]) -> str | None:
    """The `_target_` of the option of `group` that the command line (or train.yaml) chose.

    None when an experiment or another config dir may choose it instead: the full check,
    on the composed config, judges those.
    """
    if any(a.startswith(("experiment=", "hydra.searchpath=")) for a in arguments):
        return None
    options = [a.partition("=")[2] for a in arguments if a.startswith(f"{group}=")]
    if not options:
        defaults = OmegaConf.load(CONFIG_DIR / "train.yaml").get("defaults", [])
        options = [d[group] for d in defaults if isinstance(d, DictConfig) and group in d]
    path = CONFIG_DIR / group / f"{options[-1] if options else ''}.yaml"
    return OmegaConf.load(path).get("_target_") if path.is_file() else None


def run() -> None:
    """`python train.py …`: answer --help, refuse bad options and values at once, else run Hydra."""
    arguments = [quoted_resume(a) for a in sys.argv[1:]]
    with refuse_bad_config():
        if (target := resume_target(arguments)) and is_sweep_directory(target):
            arguments = resumed_sweep_arguments(target, arguments)
        if found := unknown_options(arguments) + missing_plugins(arguments):
            raise ConfigError("\n".join(found))
        if "--help" in arguments or "-h" in arguments:
            print_help(arguments)
            return
        if found := bad_values(arguments):
            raise ConfigError("\n".join(found))
        flags = any(a.startswith("-") and a not in ("-m", "--multirun") for a in arguments)
        if not flags and (found := composition_problems(arguments)):  # --cfg etc.: Hydra's
            raise ConfigError("\n".join(found))
    sys.argv[1:] = arguments  # @hydra.main reads its command line from sys.argv
    main()


def resume_target(arguments: Sequence[str]) -> Path | None:
    """The directory of `resume=<dir>`, as Hydra will read it; None without one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for argument in arguments:
        if argument.startswith("resume="):
            try:
                (override,) = OverridesParser.create().parse_overrides([argument])
            except Exception:  # Hydra reports bad syntax in its own words
                return None
            value = override.value()
            return Path(value) if isinstance(value, str) else None
    return None


def composition_problems(arguments: Sequence[str]) -> list[str]:
    """What stops Hydra from composing the config, one line each, with a did-you-mean.

    Hydra would say it in several lines (or a traceback) and exit 1, the code of a failed
    job: a word that is not `key=value`, bad override syntax, a key the config lacks (without
    `+`). A sweep is tried with the first value of each swept key; every job is checked in
    full later (`SweepGuard`).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, OverrideParseException

    words = [a for a in arguments if a not in ("-m", "--multirun")]
    stray = [w for w in words if w.startswith("=") or ("=" not in w and not w.startswith("~"))]
    found = (
        [
            f"{' '.join(stray)}: not key=value; write overrides with no spaces around = "
            "(e.g. optimizer=sgd)"
        ]
        if stray
        else []
    )
    parser, overrides, fixed = OverridesParser.create(), [], []  # fixed: not swept
    for word in words:
        if word in stray:
            continue
        try:
            (override,) = parser.parse_overrides([word])
        except OverrideParseException as error:
            lines = [line for line in str(error).splitlines() if not line.startswith("See ")]
            reason = lines[-1].split(" expecting ")[0].strip()
            found.append(f"{word}: Hydra cannot parse it ({reason})")
            continue
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()), "")
            word = f"{override.get_key_element()}={first}"
        else:
            fixed.append(word)
        overrides.append(word)
    if found:
        return found
    refused: dict[str, str] = {}
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        while True:
            kept = [o for o in overrides if o not in refused]
            try:
                cfg = compose("train", overrides=[*kept, "paths.output_dir=not-created-yet"])
                break
            except ConfigCompositionException as error:
                culprit = next((o for o in kept if f"'{o.partition('=')[0]}'" in str(error)), None)
                if culprit is None:
                    return [str(error).splitlines()[0]]
                refused[culprit] = str(error)
    groups = list(group_options(config_dirs(arguments) or [CONFIG_DIR]))
    known = list(dict.fromkeys([key for key, _ in leaves_of(cfg)] + groups))
    found = [unknown_key_line(override, known) for override in refused]
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except Exception as error:  # an interpolation that cannot be resolved (${oops}, ~seed)
        key = getattr(error, "full_key", "") or "the config"
        found.append(f"{key}: cannot be resolved: {str(error).splitlines()[0]}")
    if not found and len(fixed) < len(overrides) and {"-m", "--multirun"} & set(arguments):
        # Hydra composes a sweep's config first without the swept values: the fixed
        # overrides must fit the default options too (optimizer=sgd,rmsprop
        # optimizer.momentum=0.9 does not: adam, the default, has no momentum).
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            try:
                compose("train", overrides=[*fixed, "paths.output_dir=not-created-yet"])
            except ConfigCompositionException as error:
                culprit = next((o for o in fixed if f"'{o.partition('=')[0]}'" in str(error)), "")
                key = culprit.partition("=")[0]
                return [
                    f"{culprit or str(error).splitlines()[0]}: Hydra composes a sweep first "
                    f"with the default options, which lack {key or 'it'}; write "
                    f"++{culprit} to set it wherever the chosen options lack it"
                ]
    return found


def leaves_of(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every key in a config, groups' nodes included."""
    for key, value in node.items_ex(resolve=False) if OmegaConf.is_dict(node) else []:
        dotted = f"{prefix}.{key}" if prefix else str(key)
        yield dotted, value
        if OmegaConf.is_dict(value):
            yield from leaves_of(value, dotted)


def unknown_key_line(override: str, known: Sequence[str]) -> str:
    """`key=value` names a key the config lacks: say so, with the closest keys it has."""
    import difflib

    key, _, value = override.lstrip("~").partition("=")
    parent, _, name = key.rpartition(".")
    siblings = [k for k in known if k.rpartition(".")[0] == parent and k != key]
    same_name = [k for k in known if k.rsplit(".", 1)[-1] == name and k != key]
    close = difflib.get_close_matches(key, siblings, n=2, cutoff=0.75) or same_name[:2]
    if close:
        hint = f"did you mean {' or '.join(close)}? "
    elif parent in known:
        names = [k.rsplit(".", 1)[-1] for k in siblings if not k.rsplit(".", 1)[-1].startswith("_")]
        hint = f"{parent} has {', '.join(names)}; "
    else:
        hint = ""
    return f"unknown key {key} (={value}): {hint}a new key needs a +: +{key}={value}"


def sweep_jobs(config: DictConfig) -> list[list[str]] | None:
    """The overrides of every job the basic sweeper will launch; None for other sweepers.

    Its jobs are the cartesian product of the swept values, in command-line order (as the
    basic sweeper builds them, through the same public override parser).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if not sweeper._target_.endswith(".BasicSweeper"):  # Hydra's default, by its config
        return None  # e.g. Optuna draws values as it goes: each job checks its own
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    arguments = params + list(config.hydra.overrides.task)
    choices = []
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        values = (
            override.sweep_string_iterator()
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        choices.append([f"{key}={value}" for value in values])
    return [list(job) for job in itertools.product(*choices)]


def sweep_problems(config: DictConfig) -> list[str]:
    """Everything wrong with any job of the sweep, each problem once, with a job that has it."""
    jobs = sweep_jobs(config)
    if jobs is None:
        return []
    found: dict[str, str] = {}
    jobs = [job for job in jobs if not any(o.startswith("resume=") for o in job)]
    searchpath = list(config.hydra.get("searchpath") or [])
    # As for one job, in rounds: the signatures (which import torch and Lightning, seconds)
    # only when no job has a problem with its keys and values.
    for signatures in (False, True):
        check = functools.partial(problems, signatures=signatures)
        for job, job_problems in checked_jobs(
            config.hydra.job.config_name, jobs, searchpath, check
        ):
            for problem in job_problems:
                found.setdefault(problem, " ".join(job))
        if found:
            break
    return [f"{problem} (in the job: {job})" for problem, job in found.items()]


def has_key(cfg: DictConfig, key: str) -> bool:
    """Whether `cfg` has the dotted `key`, also when its value is left missing (`???`)."""
    from omegaconf.errors import MissingMandatoryValue

    try:
        return OmegaConf.select(cfg, key, default=KeyError, throw_on_missing=True) is not KeyError
    except MissingMandatoryValue:
        return True


def raw_value(cfg: DictConfig, key: str) -> Any:
    """The value at the dotted `key` as written: an interpolation unresolved, `???` as is."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return OmegaConf.to_container(OmegaConf.masked_copy(node, [name]), resolve=False)[name]


def checked_jobs(
    config_name: str,
    jobs: Sequence[Sequence[str]],
    searchpath: Sequence[str] = (),
    check: Callable[[DictConfig], Any] = problems,
) -> Iterator[tuple[Sequence[str], Any]]:
    """`check` of each job's config as Hydra will compose it (or why it cannot be composed).

    Composing takes ~0.2 s a job here (400 jobs: over a minute). Jobs that choose the same
    options differ only in plain `key=value` changes, which Hydra applies last, with
    `OmegaConf.update`: so Hydra composes once per choice of options, and each job's changes
    are applied the same way, checked, then undone.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import ConfigCompositionException

    # Each composition sets Hydra's search path anew: the sweep's own config dirs go with it.
    where = [f"hydra.searchpath=[{','.join(map(hydra_quoted, searchpath))}]"] if searchpath else []

    def compose(overrides: Sequence[str]) -> DictConfig | str:
        try:
            return hydra.compose(
                config_name, [*where, *overrides, "paths.output_dir=not-created-yet"]
            )
        except ConfigCompositionException as error:
            return str(error).splitlines()[0]

    def applied_last(o: Any) -> bool:  # a plain change of an existing (or dotted) key
        plain = o.type == OverrideType.CHANGE and o.package is None and "${" not in o.input_line
        if not plain or o.is_hydra_override():
            return False
        return "." in o.key_or_group or (
            o.key_or_group in reference and not OmegaConf.is_dict(reference[o.key_or_group])
        )

    parser, composed = OverridesParser.create(), {}
    reference = compose([])
    for job in jobs:
        overrides = parser.parse_overrides(list(job))
        options = tuple(o.input_line for o in overrides if not applied_last(o))
        if options not in composed:
            composed[options] = compose(options)
        cfg = composed[options]
        if isinstance(cfg, str):
            yield job, [cfg]
            continue
        changes = [o for o in overrides if applied_last(o)]
        if missing := next((o for o in changes if not has_key(cfg, o.key_or_group)), None):
            yield job, [unknown_key_line(missing.input_line, [k for k, _ in leaves_of(cfg)])]
            continue
        if any(isinstance(o.value(), dict | list) for o in changes):
            cfg = copy.deepcopy(cfg)  # merged into what is there: not simply undone
            undo = []
        else:
            undo = [(o.key_or_group, raw_value(cfg, o.key_or_group)) for o in changes]
        for override in changes:
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        result = check(cfg)
        for key, value in reversed(undo):
            OmegaConf.update(cfg, key, value, merge=False)
        yield job, result


def without_hydra(config: DictConfig) -> DictConfig:
    """A job's config as the task will see it, from the config Hydra's callbacks receive."""
    cfg = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    cfg.paths.output_dir = "not-created-yet"  # ${hydra:runtime.output_dir} is set later
    return cfg


_claimed: list[Any] = []  # the open lock files of the job directories this process trains in


def claim_job_directory(job_dir: Path, resume: bool) -> None:
    """Lock `job_dir` for this process (the OS releases the lock when it ends, killed too).

    A second process training in the same directory (two resumes of one run, a resume
    while the run still trains) would interleave both in one set of logs and checkpoints.
    A new run never goes into a directory that already holds one. The lock is a POSIX
    record lock (`lockf`), which the processes this one forks do not share: DataLoader
    workers outlive a `kill -9` of their job by up to 5 s, and an `flock` they inherited
    kept the directory refused to an immediate resume.
    """
    import errno
    import fcntl

    if os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) != "0":
        return  # a data-parallel rank started by torchrun: rank 0 holds the directory
    if not resume and (job_dir / "metrics.json").exists():
        raise ConfigError(
            f"hydra.run.dir={job_dir} already holds a run; continue it with resume={job_dir}, "
            "or choose another directory"
        )
    job_dir.mkdir(parents=True, exist_ok=True)
    lock = open(job_dir / ".lock", "a+")  # noqa: SIM115 (held open while the job runs)
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        lock.close()
        if error.errno not in (errno.EACCES, errno.EAGAIN):  # e.g. a file system without locks
            raise ConfigError(f"{job_dir}: cannot lock it ({error.strerror})") from None
        raise ConfigError(
            f"{job_dir} is being trained by another process right now; wait for it to end"
        ) from None
    _claimed.append(lock)


def resumed_sweep_problems(config: DictConfig, sweep_dir: Path) -> list[str]:
    """Why the sweep in `sweep_dir` cannot be finished as `config` says, one line each.

    Its jobs must be the ones it started with (configs edited since may change them), and
    every started job it will resume must be resumable. Logs what will happen to the jobs.
    """
    jobs = sweep_jobs(config)
    if jobs != sweep_jobs(OmegaConf.load(sweep_dir / "multirun.yaml")):
        return [
            f"resume={sweep_dir}: the configs changed since this sweep started and now give "
            "other jobs; resume its jobs one by one with resume=<job dir>"
        ]
    found, fates = [], []
    for summary in sorted(sweep_dir.rglob("metrics.json")):
        if "replica" in json.loads(summary.read_text()):
            continue  # a run inside a replicas job: its job is kept, resumed or started
        fates.append(job_fate(summary.parent))
        if fates[-1] == "resumed":
            try:
                resumed_config(summary.parent, [])
            except ConfigError as error:
                found.append(str(error))
    kept, resumed = fates.count("kept"), fates.count("resumed")
    log.info(
        "finishing the sweep in %s: %d jobs kept (completed or diverged), %d resumed, %d started",
        sweep_dir,
        kept,
        resumed,
        len(jobs or ()) - kept - resumed,
    )
    return found


class SweepGuard(Callback):
    """Hydra callback: refuse bad configs before any directory or job; set sweeps' exit code."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with refuse_bad_config():
            checked_config(without_hydra(config), config.hydra.overrides.task)
            claim_job_directory(Path(config.resume or config.hydra.run.dir), bool(config.resume))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with refuse_bad_config():
            found = sweep_problems(config)
            launcher = str(config.hydra.launcher.get("_target_", ""))
            if launcher.endswith("SlurmLauncher") and shutil.which("srun") is None:
                found.append(
                    "hydra/launcher: SLURM was chosen, but this machine has no srun; "
                    "run on the cluster, or try hydra/launcher=submitit_local here"
                )
            if found:
                raise ConfigError("\n".join(found))
            sweep_dir = Path(config.hydra.sweep.dir)  # named (a new one: created) only now
            claim_job_directory(sweep_dir, resume=True)  # one process per sweep directory
            if RESUMING_SWEEP in config.hydra.job.env_set:
                found = resumed_sweep_problems(config, sweep_dir)
            elif (sweep_dir / "multirun.yaml").exists():
                found = [
                    f"hydra.sweep.dir={sweep_dir} already holds a sweep; finish it with "
                    f"resume={sweep_dir}, or choose another directory"
                ]
            if found:
                raise ConfigError("\n".join(found))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summaries = [
            json.loads(path.read_text())
            for path in Path(config.hydra.sweep.dir).rglob("metrics.json")
        ]
        # runs, as the report counts them: a replicas job's are its replicas, not itself
        statuses = [s.get("status", "failed") for s in summaries if "replica_dirs" not in s]
        for status in ("failed", "diverged"):
            if status in statuses:
                log.warning(
                    "%d of %d runs %s; see the report",
                    statuses.count(status),
                    len(statuses),
                    status,
                )
                sys.exit(EXIT_CODES[status])
