"""`python eval.py run=<job dir>` (or `ckpt_path=<file>`): a trained run's test-split metrics.

The model, data and metrics are rebuilt from the config saved with the run, by the same
functions training used, so the numbers equal the test metrics recorded when it finished.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig, OmegaConf

CONFIG_FILE = "config.yaml"  # as mlplab.train writes it (not imported from there: heavy)
USAGE = "usage: python eval.py run=<job dir> | ckpt_path=<job dir>/checkpoints/<file>.ckpt"


def saved_config(checkpoint_path: Path) -> DictConfig:
    """The config saved with a checkpoint's run, checked like a command line's before use.

    A run directory is data: its config builds only objects of the kinds mlplab expects
    (`mlplab.config`), never an arbitrary callable; anything else is refused (exit 2).
    """
    from mlplab.config import ConfigError, validate

    cfg = OmegaConf.load(checkpoint_path.resolve().parent.parent / CONFIG_FILE)
    try:
        validate(cfg)
    except ConfigError as error:
        refuse(f"the run's saved {CONFIG_FILE} is refused, nothing was run:\n  {error}")
    if (replicas := cfg.get("replicas", 1)) > 1:
        run = checkpoint_path.resolve().parent.parent
        refuse(
            f"{run} trained {replicas} replicas, each a run of its own: evaluate one of them, "
            f"run={run / 'replica_0'}"
        )
    return cfg


def evaluate_checkpoint(checkpoint_path: Path) -> dict[str, float]:
    """Test-split loss and scores of the weights in a checkpoint file of a job directory."""
    import torch

    from mlplab.build import build_datamodule, build_model, checkpoint_weights
    from mlplab.fit import raw_device
    from mlplab.reference import evaluate
    from mlplab.tasks import EpochMetrics

    cfg = saved_config(checkpoint_path)
    single = cfg.trainer.get("devices", 1) in (1, "auto")
    device = raw_device(cfg.trainer) if single else torch.device("cpu")
    model = build_model(cfg).to(device)
    model.load_state_dict(checkpoint_weights(checkpoint_path))
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    metrics = EpochMetrics(cfg.data.task, cfg.data.out_features, prefix="test").to(device)
    return evaluate(model, datamodule.test_dataloader(), metrics, device)


def refuse(message: str) -> NoReturn:
    """Print `message` and the usage line; exit 2, as train.py does for a refused config."""
    print(f"eval.py: {message}\n{USAGE}", file=sys.stderr)
    sys.exit(2)


def checkpoint_from_arguments(arguments: Sequence[str]) -> Path:
    """The checkpoint named by `run=<dir>` or `ckpt_path=<file>`; exits 2 otherwise."""
    options = dict(argument.partition("=")[::2] for argument in arguments)
    if len(options) != 1 or not options.keys() <= {"run", "ckpt_path"} or not all(options.values()):
        refuse(f"expected one of run=… or ckpt_path=…, got: {' '.join(arguments) or 'nothing'}")
    if "run" in options:
        checkpoint = Path(options["run"]) / "checkpoints" / "last.ckpt"
    else:
        checkpoint = Path(options["ckpt_path"])
    if not checkpoint.is_file():
        refuse(f"no checkpoint at {checkpoint}")
    if not (checkpoint.resolve().parent.parent / CONFIG_FILE).is_file():
        refuse(f"{checkpoint} is not in an mlplab job directory (no {CONFIG_FILE} two levels up)")
    return checkpoint


def main(arguments: Sequence[str] | None = None) -> dict[str, float]:
    """Evaluate, print the metrics, and say whether they match the ones recorded in training."""
    checkpoint = checkpoint_from_arguments(sys.argv[1:] if arguments is None else arguments)
    metrics = evaluate_checkpoint(checkpoint)
    width = max(map(len, metrics))
    print(f"test metrics of {checkpoint}:")
    print("\n".join(f"  {name:<{width}}  {value:.6g}" for name, value in metrics.items()))
    summary_file = checkpoint.resolve().parent.parent / "metrics.json"
    recorded = (
        json.loads(summary_file.read_text()).get("metrics", {}) if summary_file.is_file() else {}
    )
    if all(name in recorded for name in metrics):
        same = all(recorded[name] == value for name, value in metrics.items())
        print(
            "equal to the test metrics recorded at the end of training"
            if same
            else "different from the test metrics recorded at the end of training (other weights?)"
        )
    return metrics
