"""The Trainer arguments the config check knows are exactly those of the installed Lightning."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplab import config, trainer_arguments
from mlplab.trainer_arguments import TRAINER_DEFAULTS, installed_defaults, render_module

REGENERATE = "Lightning changed: regenerate with .venv/bin/python -m mlplab.trainer_arguments"


def test_the_kept_arguments_are_the_installed_trainers_in_its_order() -> None:
    assert list(TRAINER_DEFAULTS.items()) == list(installed_defaults().items()), REGENERATE


def test_the_checked_in_file_is_what_its_generator_writes() -> None:
    assert render_module() == Path(trainer_arguments.__file__).read_text(), REGENERATE


def test_defaults_are_plain_literals_or_their_repr() -> None:
    assert all(isinstance(v, str | int | float | bool | None) for v in TRAINER_DEFAULTS.values())


@pytest.mark.parametrize(
    "table",
    ["TRAINER_RULES", "MANAGED", "RAW_HONOURS", "RAW_LIMITS"],
)
def test_every_trainer_argument_the_check_names_is_one_of_lightnings(table: str) -> None:
    assert set(getattr(config, table)) <= set(TRAINER_DEFAULTS)
