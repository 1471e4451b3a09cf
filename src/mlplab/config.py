"""Checking a composed config before anything runs: every key known, every value in range.

A typo should cost a second and a sentence, not a traceback from deep inside a training run.
`validate(cfg)` walks the whole config against the rules below and raises one `ConfigError`
naming every bad key, its value and what is allowed. It imports neither torch nor Lightning,
so the check answers at once; `cli.py` runs it before any job, for every job of a sweep.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A config that mlplab refuses to run; the message says why, in one line per problem."""


@dataclass(frozen=True)
class Rule:
    """What one key accepts: a test, and the words a user reads when it fails."""

    accepts: Callable[[Any], bool]
    allowed: str


def integer(low: int, high: int | None = None, also: tuple[Any, ...] = ()) -> Rule:
    """An int in [low, high] (bools are not ints here), or one of `also`."""

    def accepts(v: Any) -> bool:
        if v in also and not isinstance(v, bool):
            return True
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= (high or v)

    span = f"≥ {low}" if high is None else f"from {low} to {high}"
    extra = "".join(f" or {a}" for a in also)
    return Rule(accepts, f"an integer {span}{extra}")


def number(
    low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False
) -> Rule:
    """A real number in the interval given; ints count as numbers."""

    def accepts(v: Any) -> bool:
        if not isinstance(v, int | float) or isinstance(v, bool) or v != v:  # v != v: NaN
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
        "one of " + ", ".join(map(str, options)),
    )


BOOLEAN = Rule(lambda v: isinstance(v, bool), "true or false")
TEXT = Rule(lambda v: isinstance(v, str) and v != "", "a non-empty string")
OPTIONAL_TEXT = Rule(lambda v: v is None or (isinstance(v, str) and v != ""), "null or a path")
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

COMMON = {
    "seed": integer(0, 2**32 - 1),
    "engine": choice("lightning", "raw"),
    "steps_per_iteration": integer(1),
    "resume": OPTIONAL_TEXT,
    "extras.print_config": BOOLEAN,
    "paths.output_dir": TEXT,
    "data.task": choice(*TASKS),
    "data.seed": integer(0, 2**32 - 1),
    "data.num_samples": integer(1),
    "data.in_features": integer(1),
    "data.noise": number(0),
    "data.batch_size": integer(1),
    "data.val_fraction": number(0, 1, open_low=True, open_high=True),
    "data.test_fraction": number(0, 1, open_low=True, open_high=True),
    "data.num_workers": integer(0),
    "model.hidden": integer(1),
    "model.num_hidden_layers": integer(1),
    "trainer.max_epochs": integer(1),
    "trainer.max_steps": integer(1, also=(-1,)),
    "trainer.enable_checkpointing": BOOLEAN,
    "trainer.enable_progress_bar": BOOLEAN,
    "trainer.enable_model_summary": BOOLEAN,
    "trainer.num_sanity_val_steps": integer(0),
    "trainer.accelerator": choice("cpu", "gpu", "cuda", "mps", "auto"),
    "trainer.devices": integer(1, also=("auto",)),
    "trainer.strategy": choice("auto", "ddp"),
    "trainer.num_nodes": integer(1),
    "trainer.precision": PRECISION,
    "checkpoint.every_n_steps": integer(0),
}
DATA_BY_TASK = {"classification": {"data.num_classes": integer(2)}}

_PARTIAL = {"optimizer._partial_": choice(True)}
_WEIGHT_DECAY = {"optimizer.weight_decay": number(0)}
_ADAM = {
    "optimizer.betas": BETAS,
    "optimizer.eps": number(0, open_low=True),
    "optimizer.amsgrad": BOOLEAN,
}
OPTIMIZERS = {
    "torch.optim.SGD": {
        "optimizer.momentum": number(0),
        "optimizer.dampening": number(0, 1),
        "optimizer.nesterov": BOOLEAN,
    },
    "torch.optim.Adam": _ADAM,
    "torch.optim.AdamW": _ADAM,
    "torch.optim.RMSprop": {
        "optimizer.alpha": number(0, 1),
        "optimizer.eps": number(0, open_low=True),
        "optimizer.momentum": number(0),
        "optimizer.centered": BOOLEAN,
    },
    "torch.optim.Adagrad": {
        "optimizer.lr_decay": number(0),
        "optimizer.eps": number(0, open_low=True),
        "optimizer.initial_accumulator_value": number(0),
    },
}
ACTIVATIONS = {
    "torch.nn.ReLU": {},
    "torch.nn.Tanh": {},
    "torch.nn.Sigmoid": {},
    "torch.nn.SiLU": {},
    "torch.nn.GELU": {"activation.approximate": choice("none", "tanh")},
    "torch.nn.LeakyReLU": {"activation.negative_slope": number(0)},
}
LOGGERS = {
    "tensorboard": {
        "_target_": choice("lightning.pytorch.loggers.TensorBoardLogger"),
        "save_dir": TEXT,
        "name": TEXT,
        "version": Rule(lambda v: isinstance(v, str), "a string"),
        "default_hp_metric": choice(False),
    },
    "csv": {
        "_target_": choice("lightning.pytorch.loggers.CSVLogger"),
        "save_dir": TEXT,
        "name": TEXT,
        "version": Rule(lambda v: isinstance(v, str), "a string"),
    },
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
    """The rules that apply to this config: the common ones plus those of the chosen options."""
    rules = dict(COMMON) | DATA_BY_TASK.get(values.get("data.task"), {})
    optimizer = values.get("optimizer._target_")
    rules["optimizer._target_"] = choice(*OPTIMIZERS)
    rules["optimizer.lr"] = number(0, open_low=True)
    rules |= _PARTIAL | _WEIGHT_DECAY | OPTIMIZERS.get(optimizer, {})
    rules["activation._target_"] = choice(*ACTIVATIONS)
    rules |= ACTIVATIONS.get(values.get("activation._target_"), {})
    for name, logger_rules in LOGGERS.items():
        if any(key.startswith(f"logger.{name}.") for key in values):
            rules |= {f"logger.{name}.{key}": rule for key, rule in logger_rules.items()}
    return rules


def problems(cfg: DictConfig) -> list[str]:
    """Everything wrong with `cfg`, one sentence each (an empty list when it is fine)."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    values = dict(leaves(container))
    values.pop("logger", None)  # logger=none leaves an empty node
    rules = rules_for(values)
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
            found.append(f"{key}={render(value)} is not allowed: expected {rules[key].allowed}")
    for key in rules:
        if key not in values and not key.startswith("logger."):
            found.append(f"{key} is missing: expected {rules[key].allowed}")
    if not found:
        found += cross_checks(values)
    return found


def known_keys_near(key: str, rules: dict[str, Rule]) -> str:
    """The keys that share `key`'s group, for an unknown key without a close match."""
    group = key.split(".")[0]
    siblings = [k for k in rules if k.split(".")[0] == group]
    return ", ".join(siblings) if siblings else "the keys shown by `python train.py --cfg job`"


def cross_checks(values: dict[str, Any]) -> list[str]:
    """Rules that relate several keys."""
    found = []
    n = values["data.num_samples"]
    val = int(n * values["data.val_fraction"])
    test = int(n * values["data.test_fraction"])
    if n - val - test < 1 or val < 1 or test < 1:
        found.append(
            f"data.num_samples={n} with data.val_fraction={values['data.val_fraction']} and "
            f"data.test_fraction={values['data.test_fraction']} leaves {n - val - test} training, "
            f"{val} validation and {test} test samples: each split needs at least 1"
        )
    if values["data.task"] != "regression" and values["data.in_features"] < 2:
        found.append(
            f"data.in_features={values['data.in_features']} is not allowed for "
            f"data={values['data.task']}: spirals need at least 2 input features"
        )
    if values.get("optimizer.nesterov") and (
        values["optimizer.momentum"] <= 0 or values["optimizer.dampening"] != 0
    ):
        found.append(
            "optimizer.nesterov=true needs optimizer.momentum > 0 and optimizer.dampening=0"
        )
    if (
        values["trainer.strategy"] == "ddp"
        and values["trainer.accelerator"] in ("cpu", "mps")
        and values["trainer.num_nodes"] == 1
        and values["trainer.devices"] == "auto"
    ):
        found.append(
            "trainer.devices=auto with trainer.strategy=ddp on the CPU: give the number "
            "of processes, e.g. trainer.devices=2"
        )
    if values["engine"] == "raw" and values["trainer.strategy"] != "auto":
        found.append(
            f"trainer.strategy={values['trainer.strategy']} is not allowed with engine=raw: "
            "the raw loop trains in one process (use engine=lightning)"
        )
    if values["engine"] == "raw":
        if values["trainer.devices"] not in (1, "auto"):
            found.append(
                f"trainer.devices={values['trainer.devices']} is not allowed with engine=raw: "
                "the raw loop trains on one device (use engine=lightning)"
            )
        if str(values["trainer.precision"]) not in ("32-true", "32"):
            found.append(
                f"trainer.precision={values['trainer.precision']} is not allowed with engine=raw: "
                "the raw loop trains in float32 only (use engine=lightning)"
            )
    return found


def render(value: Any) -> str:
    """A value as the user would type it on the command line."""
    if isinstance(value, str):
        return repr(value) if value == "" or " " in value else value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` listing every problem in `cfg`; return quietly when there is none."""
    found = problems(cfg)
    if found:
        raise ConfigError("\n".join(found))
