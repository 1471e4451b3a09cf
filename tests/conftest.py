"""Shared test helpers: compose the real configs, shrunk so that training takes milliseconds."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mlplab.cli import CONFIG_DIR  # importing it also registers mlplab's resolvers

# One torch thread per process, here and in every job the tests start (unless the caller chose
# a number): pytest-xdist already runs one worker per core, and each worker's jobs and children
# running a thread per core each would fight over them. The models are tiny, so one thread
# loses nothing; two workers with two threads each took 1.7× as long (96 s against 56 s for
# test_replicas + test_parity on 2 cores). Read when torch loads: before any test imports it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = CONFIG_DIR.parent

# 200 samples → 120 for training; batches of 16 → 7 full batches and a partial one of 8.
# 12 steps: one whole shuffled epoch, then 4 steps into the next, differently shuffled one.
TINY = [
    "data.num_samples=200",
    "data.batch_size=16",
    "model.hidden=8",
    "trainer.max_steps=12",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]
TINY_STEPS_PER_EPOCH = 8


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """`configs/train.yaml` with `overrides`, writing into `output_dir`."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"])


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """`make_cfg(*overrides, tiny=True)`: a composed config whose outputs land in tmp_path."""

    def make(*overrides: str, tiny: bool = True, name: str = "job") -> DictConfig:
        return compose_config([*(TINY if tiny else []), *overrides], tmp_path / name)

    return make


def option_names(group: str) -> list[str]:
    """The options of one config group, read from the configs directory."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
