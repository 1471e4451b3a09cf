"""The `python train.py` command: Hydra composes the config, `mlplab.train.train` runs it.

Only Hydra and OmegaConf are imported here; torch and Lightning load when a job starts,
so `--help`, `--cfg job` and config errors answer without waiting for them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
JOB_NAME_MAX = 120  # characters of the overrides kept in a sweep job's directory name

log = logging.getLogger(__name__)


def job_name(overrides: Sequence[str]) -> str:
    """A directory name from a job's overrides, in command-line order.

    `["optimizer=sgd", "activation=tanh"]` → `optimizer=sgd,activation=tanh`; slashes become
    underscores so a value never opens a subdirectory.
    """
    name = ",".join(overrides).replace("/", "_")[:JOB_NAME_MAX]
    return name or "defaults"


OmegaConf.register_new_resolver("mlplab.job_name", job_name, replace=True)


def format_metrics(metrics: dict[str, float]) -> str:
    """One `name  value` line per metric, aligned."""
    width = max(map(len, metrics), default=0)
    return "\n".join(f"  {name:<{width}}  {value:.6g}" for name, value in metrics.items())


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


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """Run one job and return its final `val/loss`, the value a sweeper minimises."""
    from mlplab.train import train  # heavy: torch, Lightning

    hydra_cfg = HydraConfig.get()
    if cfg.extras.print_config:
        print_config_tree(cfg)
    log.info(
        "%s on %s with engine=%s, writing to %s",
        cfg.data.task,
        cfg.trainer.accelerator,
        cfg.engine,
        hydra_cfg.runtime.output_dir,
    )
    metrics = train(cfg, overrides=hydra_cfg.overrides.task)
    log.info("final metrics:\n%s", format_metrics(metrics))
    return metrics["val/loss"]
