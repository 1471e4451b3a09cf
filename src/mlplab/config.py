"""Checking a composed config before anything runs: every key known, every value in range.

A typo should cost a second and a sentence, not a traceback from deep inside a training run.
`validate(cfg)` walks the whole config and raises one `ConfigError` naming every bad key, its
value and what is allowed. mlplab's own keys (seed, data, model, ...) follow the rules below.
The rest is judged by signatures, not hand-kept lists, so the check never refuses what the code
accepts: `trainer.*` by lightning.Trainer's arguments (kept in `mlplab.trainer_arguments`, so
Lightning is not imported), and each node with a `_target_` (optimizer, activation, scheduler,
callbacks) by its target's, imported in `problems()` only. `COMMON`, the rules of the keys every
config has, needs no import at all: `cli.py` checks command-line values against it before
Hydra even composes.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mlplab.trainer_arguments import TRAINER_DEFAULTS


class ConfigError(ValueError):
    """A config that mlplab refuses to run; the message says why, in one line per problem."""


@dataclass(frozen=True)
class Rule:
    """What one key accepts: a test, and the words a user reads when it fails."""

    accepts: Callable[[Any], bool]
    allowed: str


def looks_like_a_number(text: str) -> bool:
    """Whether a string reads as a number: shown quoted, so '2026' is told from 2026."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def render(value: Any) -> str:
    """A value as the user would type it on the command line."""
    if isinstance(value, str):
        return repr(value) if value == "" or " " in value or looks_like_a_number(value) else value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def integer(low: int, high: int | None = None, also: tuple[Any, ...] = ()) -> Rule:
    """An int in [low, high] (bools are not ints here), or one of `also`."""

    def accepts(v: Any) -> bool:
        if any(v == a and type(v) is type(a) for a in also):
            return True
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= (high or v)

    span = f"≥ {low}" if high is None else f"from {low} to {high}"
    extra = "".join(f" or {a}" for a in also)
    return Rule(accepts, f"an integer {span}{extra}")


def number(
    low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False
) -> Rule:
    """A finite real number in the interval given; ints count as numbers."""

    def accepts(v: Any) -> bool:
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            return False
        above = v > low if open_low else v >= low
        below = high is None or (v < high if open_high else v <= high)
        return above and below

    if high is None:
        span = f"{'>' if open_low else '≥'} {low:g}"
    else:
        span = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    return Rule(accepts, f"a number {span}")


def choice(*options: Any) -> Rule:
    """One of the options, exactly."""
    return Rule(
        lambda v: v in options and type(v) in {type(o) for o in options},
        "one of " + ", ".join(map(render, options)),
    )


def optional(rule: Rule) -> Rule:
    """Null, or what `rule` accepts."""
    return Rule(lambda v: v is None or rule.accepts(v), f"null or {rule.allowed}")


def finite(value: Any) -> bool:
    """False for inf or NaN, also inside lists and nodes: no optimizer or model survives them."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple | ListConfig):
        return all(map(finite, value))
    if isinstance(value, dict):
        return all(map(finite, value.values()))
    return True


BOOLEAN = Rule(lambda v: isinstance(v, bool), "true or false")
TEXT = Rule(lambda v: isinstance(v, str) and v != "", "a non-empty string")
OPTIONAL_TEXT = Rule(lambda v: v is None or (isinstance(v, str) and v != ""), "null or a path")
FINITE = Rule(finite, "a finite number")
BETAS = Rule(
    lambda v: (
        isinstance(v, list | tuple | ListConfig)
        and len(v) == 2
        and all(number(0, 1, open_high=True).accepts(b) for b in v)
    ),
    "two numbers in [0, 1), e.g. [0.9, 0.999]",
)
TASKS = ("regression", "classification", "binary")
PRECISIONS = ("32-true", "32", "64-true", "16-mixed", "bf16-mixed", "bf16-true")
# `trainer.precision=32` reaches the config as the int 32, which Lightning takes as "32".
PRECISION = Rule(
    lambda v: not isinstance(v, bool) and str(v) in PRECISIONS, "one of " + ", ".join(PRECISIONS)
)

# Value rules for the few Trainer arguments where a bad value is common and Lightning's own
# error is cryptic, or comes only after the data are built. Every other argument of
# lightning.Trainer is accepted with any value: Lightning checks it.
TRAINER_RULES = {
    "max_epochs": integer(1, also=(-1,)),
    "max_steps": integer(1, also=(-1,)),
    "accelerator": choice("cpu", "gpu", "cuda", "mps", "auto"),
    "devices": integer(1, also=("auto",)),
    "strategy": choice("auto", "ddp"),
    "num_nodes": integer(1),
    "precision": PRECISION,
    "accumulate_grad_batches": integer(1),
    "log_every_n_steps": integer(1),
    "gradient_clip_val": optional(number(0)),
    "gradient_clip_algorithm": choice(None, "norm", "value"),
    "enable_checkpointing": BOOLEAN,
    "enable_progress_bar": BOOLEAN,
    "enable_model_summary": BOOLEAN,
    "num_sanity_val_steps": integer(0, also=(-1,)),
    "fast_dev_run": Rule(
        lambda v: isinstance(v, bool) or integer(0).accepts(v), "true, false or an integer ≥ 0"
    ),
}
# Trainer arguments mlplab sets itself, each with where the user sets it instead.
MANAGED = {
    "logger": "choose loggers with the logger/ group (logger=tensorboard|csv|none)",
    "callbacks": "add callbacks with the callbacks/ group (callbacks=[default,early_stopping])",
    "plugins": "mlplab passes none; trainer.precision sets the precision",
    "default_root_dir": "every output goes to the job's directory (paths.output_dir)",
}
TRAINER_ARGUMENTS = [name for name in TRAINER_DEFAULTS if name not in MANAGED]

SEED = integer(0, 2**32 - 1)
FRACTION = number(0, 1, open_low=True, open_high=True)

COMMON = {
    "seed": SEED,
    "replicas": integer(1),
    "engine": choice("lightning", "raw"),
    "resume": OPTIONAL_TEXT,
    "init_from": optional(Rule(TEXT.accepts, "the path of a checkpoint file")),
    "extras.print_config": BOOLEAN,
    "paths.output_dir": TEXT,
    # What mlplab reads of any data option: the task (its loss and scores) and the widths
    # the model takes from it (`${data.in_features}` in configs/model/).
    "data.task": choice(*TASKS),
    "data.in_features": integer(1),
    "data.out_features": integer(1),
} | {f"trainer.{name}": rule for name, rule in TRAINER_RULES.items()}

# The ranges of mlplab's own classes' arguments, by `_target_` (their names and types are
# checked by signature, as for any class; these say what values make sense).
CLASS_RULES = {
    "mlplab.data.SyntheticDataModule": {
        "num_samples": integer(1),
        "noise": number(0),
        "seed": SEED,
        "shuffle_seed": optional(SEED),
        "batch_size": integer(1),
        "val_fraction": FRACTION,
        "test_fraction": FRACTION,
        "num_workers": integer(0),
    },
    "mlplab.model.MLP": {"hidden": integer(1), "num_hidden_layers": integer(1)},
}

# Value rules by parameter name, for any optimizer that has the parameter.
OPTIMIZER_VALUES = {
    "lr": number(0, open_low=True),
    "betas": BETAS,
    "eps": number(0, open_low=True),
    "weight_decay": number(0),
    "momentum": number(0),
    "dampening": number(0, 1),
}
SCHEDULER_RULES = {
    "interval": choice("step", "epoch"),
    "frequency": integer(1),
    "monitor": optional(TEXT),
    "name": optional(TEXT),
    "strict": BOOLEAN,
}


def inside(text: Any) -> bool:
    """A relative path that stays below where it starts (no "..", not absolute)."""
    path = PurePath(text) if isinstance(text, str) else None
    return path is not None and not path.is_absolute() and ".." not in path.parts


# A logger's directory is save_dir/name/version: each must keep it inside the job's directory.
INSIDE = Rule(inside, 'a relative path inside the job directory (no "..", not absolute)')
LOGGERS = {
    "tensorboard": {
        "_target_": choice("lightning.pytorch.loggers.TensorBoardLogger"),
        "save_dir": TEXT,
        "name": Rule(lambda v: v != "" and inside(v), INSIDE.allowed),
        "version": INSIDE,
        "default_hp_metric": choice(False),
    },
    "csv": {
        "_target_": choice("lightning.pytorch.loggers.CSVLogger"),
        "save_dir": TEXT,
        "name": Rule(lambda v: v != "" and inside(v), INSIDE.allowed),
        "version": INSIDE,
    },
}
# Groups judged by signatures; every other key is flattened and judged by the rules above.
BY_SIGNATURE = ("trainer", "model", "data", "optimizer", "activation", "scheduler", "callbacks")
# What mlplab reads from the data option besides building it (judged by the rules above).
DATA_PROTOCOL = ("task", "in_features", "out_features")

# The lightning.Trainer arguments that engine=raw honours; it refuses any other one that is
# not left at Lightning's default, rather than ignore it.
RAW_HONOURS = {
    "max_epochs",
    "max_steps",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "accumulate_grad_batches",
    "log_every_n_steps",
    "accelerator",
    "devices",
    "precision",
    "strategy",
    "num_nodes",
    "enable_checkpointing",
    "enable_progress_bar",
    "enable_model_summary",
    "num_sanity_val_steps",
    "check_val_every_n_epoch",
}
# Honoured by the raw loop for some values only: (does it honour this value, why not).
RAW_LIMITS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "strategy": (lambda v: v == "auto", "the raw loop trains in one process"),
    "num_nodes": (lambda v: v == 1, "the raw loop trains in one process"),
    "devices": (lambda v: v in (1, "auto"), "the raw loop trains on one device"),
    "precision": (lambda v: str(v) in ("32-true", "32"), "the raw loop trains in float32 only"),
    "check_val_every_n_epoch": (lambda v: v == 1, "the raw loop validates after every epoch"),
    "max_epochs": (lambda v: v != -1, "the raw loop needs a number of epochs"),
}


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf; lists count as leaves."""
    if isinstance(node, dict):
        if not node and prefix:
            yield prefix, node
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
    else:
        yield prefix, node


def rules_for(values: dict[str, Any]) -> dict[str, Rule]:
    """The rules of mlplab's own keys in this config: the common ones plus the chosen options'."""
    rules = {k: r for k, r in COMMON.items() if not k.startswith("trainer.")}
    for name, logger_rules in LOGGERS.items():
        if any(key.startswith(f"logger.{name}.") for key in values):
            rules |= {f"logger.{name}.{key}": rule for key, rule in logger_rules.items()}
    return rules


def problems(cfg: DictConfig, signatures: bool = True) -> list[str]:
    """Everything wrong with `cfg`, one sentence each (an empty list when it is fine).

    In three rounds, each only when the one before found nothing: keys and values, then the
    rules that relate several keys (neither imports anything, so most refusals are instant),
    then each `_target_` against its signature (which imports torch and Lightning, as the job
    is about to do anyway; `signatures=False` leaves that round out).
    """
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    if missing := [key for key, value in leaves(container) if value == "???"]:
        # A value a config leaves for the command line (`path: ???`).
        return [f"{key} is missing: give it on the command line, {key}=<value>" for key in missing]
    own = {key: value for key, value in container.items() if key not in BY_SIGNATURE}
    own.setdefault("replicas", 1)  # a run saved before replicas existed trained one
    values = dict(leaves(own))
    values.pop("logger", None)  # logger=none leaves an empty node
    if isinstance(data := container.get("data"), dict):
        values |= {f"data.{key}": data[key] for key in DATA_PROTOCOL if key in data}
    nodes = target_nodes(container)
    found = rule_problems(values, rules_for(values))
    found += trainer_problems(container.get("trainer"))
    found += scheduler_problems(container.get("scheduler"))
    if not isinstance(callbacks := container.get("callbacks") or {}, dict):
        found.append(
            f"callbacks={render(callbacks)} is not allowed: expected one node per callback, "
            "as the callbacks/ group gives (callbacks=[default,early_stopping])"
        )
    found += [problem for node in nodes for problem in node_problems(*node)]
    if isinstance(optimizer := container.get("optimizer"), dict):
        found += value_problems("optimizer", optimizer, OPTIMIZER_VALUES)
    for path in ("model", "data"):
        node = container.get(path)
        if isinstance(node, dict):
            found += value_problems(path, node, CLASS_RULES.get(node.get("_target_"), {}))
    if not found:
        found += cross_checks(values, container)
    if not found and signatures:
        # A node that another one takes by interpolation (the model's `${activation}`) is
        # judged once, where it is defined.
        defined = [node for _, node, _ in nodes]
        found += [p for path, node, _ in nodes for p in signature_problems(path, node, defined)]
    if not found and signatures and values["replicas"] > 1:
        found += model_buffer_problems(container["model"], values["replicas"])
    return found


def not_allowed(key: str, value: Any, rule: Rule) -> str:
    """The sentence for a value its key's rule refuses (the early check in cli.py says the same)."""
    return f"{key}={render(value)} is not allowed: expected {rule.allowed}"


def unknown(key: str, value: Any, owner: str, names: list[str], *, listed: bool = True) -> str:
    """The sentence for a key that `owner`, taking `names`, does not take."""
    group, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, names, n=1)
    takes = (
        f": {owner} takes {', '.join(names)}"
        if listed or not close
        else f": {owner} has no such argument"
    )
    hint = f"; did you mean {group}.{close[0]}?" if close else ""
    return f"unknown key {key} (={render(value)}){takes}{hint}"


def rule_problems(values: dict[str, Any], rules: dict[str, Rule]) -> list[str]:
    """Unknown keys, refused values and missing keys among mlplab's own (flattened) keys."""
    found = []
    for key, value in values.items():
        if key not in rules:
            close = difflib.get_close_matches(key, rules, n=1, cutoff=0.75)
            hint = (
                f"; did you mean {close[0]}?"
                if close
                else f"; mlplab reads: {known_keys_near(key, rules)}"
            )
            found.append(f"unknown key {key} (={render(value)}): nothing reads it{hint}")
        elif not rules[key].accepts(value):
            found.append(not_allowed(key, value, rules[key]))
    for key in rules:
        if key not in values and not key.startswith("logger."):
            found.append(f"{key} is missing: expected {rules[key].allowed}")
    return found


def known_keys_near(key: str, rules: dict[str, Rule]) -> str:
    """The keys that share `key`'s group, for an unknown key without a close match."""
    group = key.split(".")[0]
    siblings = [k for k in rules if k.split(".")[0] == group]
    return ", ".join(siblings) if siblings else "the keys shown by `python train.py --cfg job`"


def trainer_problems(trainer: Any) -> list[str]:
    """`trainer.*` against lightning.Trainer's arguments, and the values of the few ruled ones."""
    if not isinstance(trainer, dict):
        return ["trainer is missing: expected the keyword arguments of lightning.Trainer"]
    found = []
    for name, value in trainer.items():
        key = f"trainer.{name}"
        if name in MANAGED:
            found.append(f"{key}={render(value)} is set by mlplab, not here: {MANAGED[name]}")
        elif name not in TRAINER_DEFAULTS:
            found.append(unknown(key, value, "lightning.Trainer", TRAINER_ARGUMENTS, listed=False))
        elif name in TRAINER_RULES and not TRAINER_RULES[name].accepts(value):
            found.append(not_allowed(key, value, TRAINER_RULES[name]))
    for name, rule in TRAINER_RULES.items():
        if name not in trainer:
            found.append(f"trainer.{name} is missing: expected {rule.allowed}")
    return found


@functools.cache
def locate(target: str) -> Any:
    """The object a `_target_` names: the longest importable module, then its attributes."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as error:
            # Only a missing `module` itself means "look one level up"; a module that fails to
            # import one of its own dependencies is an error worth showing.
            if error.name is None or not (
                module == error.name or module.startswith(f"{error.name}.")
            ):
                raise
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(f"No module named {parts[0]!r}")


@functools.cache
def parameters_of(target: str) -> list[inspect.Parameter] | None:
    """The parameters `_target_` is called with; None when it takes any keyword (or is opaque)."""
    try:
        parameters = list(inspect.signature(locate(target)).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: let Hydra find out
        return None
    if any(p.kind == p.VAR_KEYWORD for p in parameters):
        return None
    return [p for p in parameters if p.kind != p.VAR_POSITIONAL]


def target_nodes(container: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(path, node, what mlplab calls it with) for each node that mlplab instantiates.

    The optimizer and the scheduler are `_partial_`: mlplab supplies their first argument.
    """
    nodes = [
        ("model", container.get("model"), ""),
        ("data", container.get("data"), ""),
        ("optimizer", container.get("optimizer"), "the model's parameters"),
        ("activation", container.get("activation"), ""),
    ]
    scheduler = container.get("scheduler")
    if isinstance(scheduler, dict) and "scheduler" in scheduler:
        nodes.append(("scheduler.scheduler", scheduler["scheduler"], "the optimizer"))
    callbacks = container.get("callbacks") or {}  # callbacks=none: an empty node
    if isinstance(callbacks, dict):
        nodes += [(f"callbacks.{name}", node, "") for name, node in callbacks.items()]
    return nodes


def node_problems(path: str, node: Any, called_with: str) -> list[str]:
    """A node that Hydra can instantiate: a `_target_`, and `_partial_: true` where needed."""
    if node is None:
        return [f"{path} is missing: expected a node with a _target_ (a class's dotted path)"]
    if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
        return [f"{path}={render(node)} is not allowed: expected a node with a _target_"]
    if called_with and node.get("_partial_") is not True:
        return [
            f"{path}._partial_={render(node.get('_partial_'))} is not allowed: expected true "
            f"(mlplab calls it with {called_with})"
        ]
    return []


def value_problems(path: str, node: dict[str, Any], rules: dict[str, Rule]) -> list[str]:
    """The values of a node, by parameter name; inf and NaN are refused for every parameter."""
    return [
        not_allowed(f"{path}.{name}", value, rules.get(name, FINITE))
        for name, value in node.items()
        if not name.startswith("_") and not rules.get(name, FINITE).accepts(value)
    ]


@functools.cache
def expected_kinds(path: str) -> tuple[type, ...]:
    """The base classes a node's `_target_` must derive from (imported here: torch, Lightning)."""
    import lightning.pytorch as pl
    import torch

    schedulers = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    kinds = {
        "model": (torch.nn.Module,),
        "data": (pl.LightningDataModule,),
        "activation": (torch.nn.Module,),
        "optimizer": (torch.optim.Optimizer,),
        "scheduler.scheduler": schedulers,
    }
    if path.startswith("callbacks.") and path.count(".") == 1:
        return (pl.Callback,)
    # A node nested in another (a module's submodule, say): one of the kinds mlplab builds.
    return kinds.get(path, (torch.nn.Module, torch.optim.Optimizer, *schedulers, pl.Callback))


def signature_problems(path: str, node: dict[str, Any], defined: Sequence[Any] = ()) -> list[str]:
    """The keys of a node against its `_target_`'s signature (which is imported for that).

    Keys starting with "_" are Hydra's; a target taking **kwargs accepts any key. Of a
    `_partial_` node, the first parameter is mlplab's to supply, not a config key.
    """
    target = node["_target_"]
    try:
        callable_ = locate(target)
    except (ImportError, AttributeError) as error:
        return [f"{path}._target_={target} cannot be imported: {str(error).splitlines()[0]}"]
    kinds = expected_kinds(path)
    if not (isinstance(callable_, type) and issubclass(callable_, kinds)):
        # A config, also one saved in a run directory, builds objects of the expected kind
        # only: never an arbitrary callable (torch.load of a pickle, os.system, …).
        allowed = " or ".join(f"{k.__module__}.{k.__qualname__}" for k in kinds)
        return [f"{path}._target_={target} is not allowed: expected a subclass of {allowed}"]
    parameters = parameters_of(target)
    if parameters is not None and node.get("_partial_") is True:
        parameters = parameters[1:]
    names = None if parameters is None else [p.name for p in parameters]
    owner = getattr(callable_, "__qualname__", target)
    found = []
    for name, value in node.items():
        key = f"{path}.{name}"
        if names is not None and not name.startswith("_") and name not in names:
            found.append(unknown(key, value, owner, names))
        if isinstance(value, dict) and "_target_" in value and value not in defined:
            found += node_problems(key, value, "") or signature_problems(key, value, defined)
    if parameters is not None and "_args_" not in node:
        found += [
            f"{path}.{p.name} is missing: {owner} needs it"
            for p in parameters
            if p.default is p.empty and p.kind != p.POSITIONAL_ONLY and p.name not in node
        ]
    return found


def scheduler_problems(scheduler: Any) -> list[str]:
    """The scheduler/ group: Lightning's lr_scheduler dict (its "scheduler": a target node)."""
    if scheduler is None or scheduler == {}:
        return []  # scheduler=none: a constant learning rate
    if not isinstance(scheduler, dict):
        return [
            f"scheduler={render(scheduler)} is not allowed: expected Lightning's lr_scheduler dict"
        ]
    found = []
    names = ["scheduler", *SCHEDULER_RULES]
    for name, value in scheduler.items():
        key = f"scheduler.{name}"
        if name not in names:
            found.append(unknown(key, value, "Lightning's lr_scheduler dict", names))
        elif name in SCHEDULER_RULES and not SCHEDULER_RULES[name].accepts(value):
            found.append(not_allowed(key, value, SCHEDULER_RULES[name]))
    if "scheduler" not in scheduler:
        found.append(
            "scheduler.scheduler is missing: expected the scheduler, a node with a _target_ "
            "and _partial_: true"
        )
    return found


def available_memory() -> int:
    """Bytes of memory this machine can still give a process (Linux's MemAvailable)."""
    try:
        with open("/proc/meminfo") as file:
            fields = dict(line.split(":", 1) for line in file)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_problems(data: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """A job whose data or model could not fit in this machine's memory, refused up front.

    For mlplab's synthetic data and MLP (other classes know their own sizes): a rough lower
    bound, float32: the samples (inputs and target, generated then split: twice), the MLP's
    weights with their gradients and up to two optimizer states, and a batch's hidden
    activations (kept for backward, with their gradients and the mask of the activation).
    """
    n, d, out = data.get("num_samples", 0), data["in_features"], data["out_features"]
    h, layers = model.get("hidden", 0), model.get("num_hidden_layers", 1)
    need_data = 2 * 4 * n * (d + 1)
    weights = d * h + h + (layers - 1) * (h * h + h) + h * out + out if h else 0
    need_model = 4 * 4 * weights + 3 * 4 * data.get("batch_size", 0) * h * layers
    have = available_memory()
    if need_data + need_model <= have:
        return []
    return [
        f"data.num_samples={n} with model.hidden={h}: the job needs at least "
        f"{(need_data + need_model) / 1e9:.1f} GB (data {need_data / 1e9:.1f} GB, model and a "
        f"batch's activations {need_model / 1e9:.1f} GB); this machine has "
        f"{have / 1e9:.1f} GB available"
    ]


def data_problems(data: dict[str, Any]) -> list[str]:
    """The data option's widths against its task; the synthetic data's split sizes."""
    task, d, out = data["task"], data["in_features"], data["out_features"]
    found = []
    if task == "classification" and out < 2:
        found.append(
            f"data.out_features={out} is not allowed for data.task=classification: "
            "expected the number of classes, at least 2"
        )
    if task != "classification" and out != 1:
        found.append(
            f"data.out_features={out} is not allowed for data.task={task}: expected 1 "
            "(one output per sample)"
        )
    sizes = ("num_samples", "val_fraction", "test_fraction")
    if data.get("_target_") != "mlplab.data.SyntheticDataModule" or not all(
        key in data for key in sizes
    ):
        return found  # a missing size is named by the signature check
    n = data["num_samples"]
    val, test = int(n * data["val_fraction"]), int(n * data["test_fraction"])
    if n - val - test < 1 or val < 1 or test < 1:
        found.append(
            f"data.num_samples={n} with data.val_fraction={data['val_fraction']} and "
            f"data.test_fraction={data['test_fraction']} leaves {n - val - test} training, "
            f"{val} validation and {test} test samples: each split needs at least 1"
        )
    if task != "regression" and d < 2:
        found.append(
            f"data.in_features={d} is not allowed for data.task={task}: "
            "spirals need at least 2 input features"
        )
    return found


def cross_checks(values: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """Rules that relate several keys (run once every key and value is known to be fine)."""
    found = []
    job = PurePath(os.path.normpath(os.path.abspath(values["paths.output_dir"])))
    for key, value in values.items():
        if key.startswith("logger.") and key.endswith(".save_dir"):
            where = PurePath(os.path.normpath(os.path.abspath(value)))
            if where != job and job not in where.parents:
                found.append(
                    f"{key}={render(value)} is not allowed: logs go inside the job directory "
                    f"({values['paths.output_dir']}); keep save_dir: ${{paths.output_dir}}"
                )
    found += data_problems(container["data"])
    found += memory_problems(container["data"], container["model"])
    optimizer = container["optimizer"]
    if optimizer.get("nesterov") and (
        optimizer.get("momentum", 0) <= 0 or optimizer.get("dampening", 0) != 0
    ):
        found.append(
            "optimizer.nesterov=true needs optimizer.momentum > 0 and optimizer.dampening=0"
        )
    init_from = values["init_from"]
    if init_from is not None and not Path(init_from).is_file():
        found.append(f"init_from={render(init_from)}: no such checkpoint file")
    elif init_from is not None and (Path(init_from).parent.parent / "replica_0").is_dir():
        found.append(
            f"init_from={render(init_from)} holds the stacked weights of a replicas job; "
            "start from one replica's: <job dir>/replica_<r>/checkpoints/last.ckpt"
        )
    trainer = container["trainer"]
    if (
        trainer["strategy"] == "ddp"
        and trainer["accelerator"] in ("cpu", "mps")
        and trainer["num_nodes"] == 1
        and trainer["devices"] == "auto"
    ):
        found.append(
            "trainer.devices=auto with trainer.strategy=ddp on the CPU: give the number "
            "of processes, e.g. trainer.devices=2"
        )
    devices = trainer["devices"]
    if trainer["strategy"] == "auto" and devices not in (1, "1", "auto", -1, [0]):
        # Lightning would pick a strategy that re-runs the command line in new processes:
        # under Hydra, a sweep in each child (and a hang or SIGKILL when one fails).
        found.append(
            f"trainer.devices={render(devices)} needs a data-parallel strategy mlplab can "
            "start: accelerator=ddp_cpu (CPU processes) or accelerator=ddp (GPUs), with "
            f"trainer.devices={render(devices)}"
        )
    if values["engine"] == "raw":
        found += raw_problems(values, container)
    if values["replicas"] > 1:
        found += replica_problems(values, container)
    return found


def replica_problems(values: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """What replicas=R cannot do: anything that would tie the replicas together, one line each.

    Each replica must train exactly as a separate job with its own seed would; a quantity
    computed over all of them (a gradient norm, one monitored metric, a loss scale) would
    make what happens to one depend on the others.
    """
    replicas = values["replicas"]
    where = f"replicas={replicas}"
    alone = "train the seeds as separate jobs instead (replicas=1, seed=0,1,2 -m)"
    trainer, found = container["trainer"], []
    if values["engine"] == "raw":
        found.append(f"{where} needs engine=lightning: the raw loop trains one model")
    if (
        trainer["strategy"] != "auto"
        or trainer["devices"] not in (1, "auto")
        or (trainer["num_nodes"] != 1)
    ):
        found.append(
            f"{where} trains in one process on one device: not with trainer.strategy="
            f"{render(trainer['strategy'])}, trainer.devices={render(trainer['devices'])}, "
            f"trainer.num_nodes={render(trainer['num_nodes'])}; {alone}"
        )
    if trainer["gradient_clip_val"] and trainer["gradient_clip_algorithm"] in (None, "norm"):
        found.append(
            f"trainer.gradient_clip_val={render(trainer['gradient_clip_val'])} clips by the norm "
            f"of all the gradients, which would tie the replicas of {where} together; clip by "
            f"value (trainer.gradient_clip_algorithm=value), or {alone}"
        )
    if str(trainer["precision"]) == "16-mixed":
        found.append(
            f"trainer.precision=16-mixed scales the loss by one factor for all replicas of "
            f"{where}, and skips a step for all when one overflows; use bf16-mixed, or {alone}"
        )
    scheduler = container.get("scheduler") or {}
    target = str((scheduler.get("scheduler") or {}).get("_target_", ""))
    if scheduler.get("monitor") or target.endswith("ReduceLROnPlateau"):
        found.append(
            f"scheduler: {target.rsplit('.', 1)[-1] or 'a monitored scheduler'} follows one "
            f"metric, but each of the {replicas} replicas has its own; {alone}"
        )
    for name, node in (container.get("callbacks") or {}).items():
        if isinstance(node, dict) and node.get("monitor"):
            found.append(
                f"callbacks.{name}.monitor={render(node['monitor'])}: with {where} each replica "
                f"has its own {node['monitor']} (replica_<r>/…), and one callback cannot follow "
                f"them all; {alone}"
            )
    return found


def model_buffer_problems(model: dict[str, Any], replicas: int) -> list[str]:
    """A model with buffers (BatchNorm's statistics) cannot be stacked into replicas.

    Built on the meta device (no memory, no numbers) to see what it holds.
    """
    import torch
    from hydra.utils import instantiate

    try:
        with torch.device("meta"):
            buffers = [name for name, _ in instantiate(model).named_buffers()]
    except Exception:  # a model that cannot be built so: training will say why
        return []
    if not buffers:
        return []
    return [
        f"replicas={replicas}: model {model['_target_']} has buffers ({', '.join(buffers)}), "
        "which a stacked model cannot update per replica; train the seeds as separate jobs "
        "instead (replicas=1, seed=0,1,2 -m)"
    ]


def raw_problems(values: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """What engine=raw, the hand-written loop, cannot honour: one sentence each."""
    found = []
    if values["resume"] is not None:
        found.append(
            f"resume={render(values['resume'])} needs engine=lightning: "
            "the raw loop does not resume"
        )
    for name, value in container["trainer"].items():
        if name in RAW_LIMITS:
            honoured, why = RAW_LIMITS[name]
            if not honoured(value):
                found.append(
                    f"trainer.{name}={render(value)} is not allowed with engine=raw: "
                    f"{why} (use engine=lightning)"
                )
        elif name not in RAW_HONOURS and value != TRAINER_DEFAULTS[name]:
            found.append(
                f"trainer.{name}={render(value)} is not honoured by engine=raw (the raw loop); "
                f"use engine=lightning, or leave it at its default "
                f"{render(TRAINER_DEFAULTS[name])}"
            )
    found += [
        f"callbacks.{name}: engine=raw runs no Lightning callbacks; use engine=lightning"
        for name in container.get("callbacks") or {}
        if name not in RAW_IGNORES
    ]
    return found


# The default callbacks' jobs, which the raw loop does its own way: it writes last.ckpt
# itself at the end, and shows no progress bar.
RAW_IGNORES = ("model_checkpoint", "progress_bar")


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` listing every problem in `cfg`; return quietly when there is none."""
    found = problems(cfg)
    if found:
        raise ConfigError("\n".join(found))


def relocated(cfg: DictConfig, job_dir: Path) -> DictConfig:
    """A saved config whose run was moved or copied to `job_dir`, pointing there.

    The saved config is resolved: every path inside the job directory (checkpoints, logs)
    begins with the directory it was trained in. A moved run must train where it is now,
    and a copy must never write into its original.
    """
    old, new = str(cfg.paths.output_dir), str(job_dir.resolve())

    def move(value: Any) -> Any:
        if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
            return new + value[len(old) :]
        if isinstance(value, dict):
            return {key: move(item) for key, item in value.items()}
        if isinstance(value, list):
            return [move(item) for item in value]
        return value

    return OmegaConf.create(move(OmegaConf.to_container(cfg)))
