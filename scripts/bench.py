"""Speed of mlplab's training paths, measured side by side in one process.

    python scripts/bench.py            # about 12 minutes on 2 idle cores
    python scripts/bench.py --quick    # three to four minutes: fewer steps and repeats

Five training paths, at hidden/batch 64/64 (where per-step overhead shows) and 256/4096
(where the maths dominates), on the same model, optimizer and DataModule (`mlplab.build`,
default config: regression, Adam, ReLU), measured round-robin, repeated:

  raw      `mlplab.reference.train`, the textbook loop, validating after each epoch
  bare     a bare `lightning.Trainer` on mlplab's `MLPModule`: no logger, progress bar,
           checkpoints, model summary or extra callbacks. The floor of any Lightning path.
  bare2    bare, measured again: `floor_vs_floor` shows how far apart the same path lands
           in this run (on the shared 2-core machine, medians of 0.93 to 1.04 were seen).
  replicas16  one job of 16 replicas (`replicas=16`: 16 seeds as one stacked model), with
           each replica's loggers; `replicas16_vs_single` is 16 × its steps/s over mlplab's.
  mlplab   mlplab's default path as `python train.py` runs it: `fit_lightning` with the
           config's loggers (TensorBoard, in a temporary directory) and callbacks (last.ckpt
           every epoch, the TQDM progress bar redrawn every 20 steps), and mlplab's own
           callbacks. Its stdout goes to /dev/null, so the bar's lines do not bury the
           table: the bar's bookkeeping is measured, but not its drawing on a terminal.

Each run trains 5 epochs, the first a warm-up. steps/s count the time from the start of the
second epoch to the end of training (Lightning's `on_train_end`; for raw, the return of
`reference.train`): training steps, validation after each epoch and the per-epoch
bookkeeping (checkpoint, log writes) included; set-up, the warm-up epoch and the test pass
excluded. Ratios are medians over rounds of ratios taken within a round. Then whole processes
are timed: `experiment=homework` with its 5 seeds as replicas and with 1 seed, `train.py
--help`, `train.py --cfg job` and a refused override. The last line
printed is one JSON object with the ratios and the start-up times.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from mlplab import reference
from mlplab.build import build_datamodule, build_model, optimizer_factory
from mlplab.cli import CONFIG_DIR
from mlplab.fit import build_callbacks, fit_lightning, lightning_quiet
from mlplab.module import MLPModule
from mlplab.replicas import fit_replicas, replica_configs
from mlplab.tasks import EpochMetrics, loss_function
from mlplab.train import build_loggers

ROOT = CONFIG_DIR.parent
SIZES = {"64": (64, 64), "4096": (256, 4096)}  # name → (hidden, batch)
# The first is the warm-up. Four are measured: with two (0.5 s at 256/4096) one round's ratio
# scattered by ±15% on the 2-core machine, more than the differences measured.
EPOCHS = 5


def bench_config(hidden: int, batch: int, steps_per_epoch: int, out: Path):
    """The default config (regression, Adam, ReLU, TensorBoard), sized for the measurement."""
    train_fraction = 0.6  # 1 - val_fraction - test_fraction of configs/train.yaml
    samples = round(batch * steps_per_epoch / train_fraction) + 1
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"model.hidden={hidden}",
                f"data.batch_size={batch}",
                f"data.num_samples={samples}",
                f"trainer.max_epochs={EPOCHS}",
                f"paths.output_dir={out}",
            ],
        )


class Clock:
    """Seconds and optimizer steps from `start(step)` to `stop(step)`."""

    def start(self, step: int) -> None:
        self.started, self.first_step = time.perf_counter(), step

    def stop(self, step: int) -> None:
        self.seconds = time.perf_counter() - self.started
        self.steps = step - self.first_step

    def steps_per_second(self) -> float:
        return self.steps / self.seconds


class TrainingClock(L.Callback):
    """A `Clock` running from the second epoch's start to the end of training."""

    def __init__(self) -> None:
        self.clock = Clock()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:  # epoch 0 is the warm-up
            self.clock.start(trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        self.clock.stop(trainer.global_step)


def raw(cfg) -> float:
    """Steps/s of the textbook loop, validating after each epoch as `fit_raw` does."""
    model = build_model(cfg)
    optimizer = optimizer_factory(cfg)(model.parameters())
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    val_metrics = EpochMetrics(cfg.data.task, cfg.data.out_features, prefix="val")
    clock = Clock()

    def on_epoch(epoch: int, step: int) -> dict[str, float]:
        metrics = reference.evaluate(model, datamodule.val_dataloader(), val_metrics, "cpu")
        if epoch == 0:  # the warm-up is over
            clock.start(step)
        return metrics

    steps, _ = reference.train(
        model,
        optimizer,
        loss_function(cfg.data.task),
        datamodule.train_dataloader(),
        max_epochs=cfg.trainer.max_epochs,
        on_epoch=on_epoch,
    )
    clock.stop(steps)
    return clock.steps_per_second()


def bare(cfg) -> float:
    """Steps/s of a Trainer with everything optional switched off, on mlplab's module."""
    module = MLPModule(
        build_model(cfg), cfg.data.task, cfg.data.out_features, optimizer_factory(cfg)
    )
    timing = TrainingClock()
    with tempfile.TemporaryDirectory() as out, lightning_quiet():
        trainer = L.Trainer(
            max_epochs=cfg.trainer.max_epochs,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[timing],
            default_root_dir=out,
        )
        trainer.fit(module, datamodule=build_datamodule(cfg))
    return timing.clock.steps_per_second()


def mlplab(cfg) -> float:
    """Steps/s of `fit_lightning` with the config's loggers and callbacks, as train.py runs it."""
    timing = TrainingClock()
    with (
        tempfile.TemporaryDirectory() as out,
        open(os.devnull, "w") as devnull,
        contextlib.redirect_stdout(devnull),  # the progress bar's output
    ):
        cfg.paths.output_dir = out
        loggers = build_loggers(cfg)
        fit_lightning(cfg, loggers, [*build_callbacks(cfg), timing])
        for logger in loggers:
            logger.finalize("success")
    return timing.clock.steps_per_second()


REPLICAS = 16


def replicas16(cfg) -> float:
    """Steps/s of one job training 16 replicas (`replicas=16`), each step a step of all 16,
    with each replica's loggers (TensorBoard) and the config's callbacks, as train.py runs it."""
    timing = TrainingClock()
    with (
        tempfile.TemporaryDirectory() as out,
        open(os.devnull, "w") as devnull,
        contextlib.redirect_stdout(devnull),
    ):
        cfg.paths.output_dir, cfg.replicas = out, REPLICAS
        configs = replica_configs(cfg)
        loggers = [build_loggers(config) for config in configs]
        fit_replicas(cfg, configs, loggers, [*build_callbacks(cfg), timing])
        for logger in (logger for own in loggers for logger in own):
            logger.finalize("success")
    return timing.clock.steps_per_second()


# bare2 is bare again: `floor_vs_floor` (bare2 ÷ bare, 1 but for the machine's noise) is the
# run's own resolution. A ratio of two paths that is closer to 1 than it is not a difference.
PATHS = {"raw": raw, "bare": bare, "bare2": bare, "mlplab": mlplab, "replicas16": replicas16}


def measure(size: str, steps_per_epoch: int, repeats: int) -> dict[str, list[float]]:
    """steps/s of every path, `repeats` times, round-robin so drift hits all alike.

    Each round runs the paths in a new order: in a fixed one, a path always ran right after
    the same other (bare after the 16 replicas, mlplab after bare), and such a neighbour's
    after-effects (memory, caches, a busy writer thread) counted against it in every round.
    """
    hidden, batch = SIZES[size]
    with tempfile.TemporaryDirectory() as out:
        cfg = bench_config(hidden, batch, steps_per_epoch, Path(out))
    results: dict[str, list[float]] = {name: [] for name in PATHS}
    order = random.Random(0)
    for _ in range(repeats):
        for name in order.sample(list(PATHS), len(PATHS)):
            results[name].append(PATHS[name](copy.deepcopy(cfg)))
    return results


def ratio(results: dict[str, list[float]], path: str, reference: str) -> float:
    """Median over rounds of path ÷ reference, each pair measured in the same round.

    On a shared machine speed drifts by tens of percent within a minute; a ratio taken
    within one round sees both paths under the same conditions.
    """
    return statistics.median(a / b for a, b in zip(results[path], results[reference], strict=True))


def process_seconds(arguments: list[str], repeats: int) -> float:
    """Median wall time of `python train.py <arguments>`, from a scratch directory."""
    times = []
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, str(ROOT / "train.py"), *arguments],
                cwd=scratch,
                capture_output=True,
                check=False,
            )
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    torch.manual_seed(0)
    repeats = 5 if args.quick else 11
    steps_per_epoch = {"64": 150 if args.quick else 250, "4096": 20 if args.quick else 40}
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Lightning {L.__version__}, Python {platform.python_version()}"
    )
    summary: dict[str, float] = {}
    print(
        f"\n{'hidden/batch':<13}{'path':<8}{'median steps/s':>16}{'min':>10}{'µs/step':>10}"
        f"{'vs raw':>8}{'vs bare':>9}"
    )
    for size, steps in steps_per_epoch.items():
        results = measure(size, steps, repeats)
        for name, values in results.items():
            median = statistics.median(values)
            print(
                f"{'/'.join(map(str, SIZES[size])):<13}{name:<8}{median:>16.1f}{min(values):>10.1f}"
                f"{1e6 / median:>10.0f}{ratio(results, name, 'raw'):>8.2f}"
                f"{ratio(results, name, 'bare'):>9.2f}"
            )
        summary[f"lightning_vs_floor_{size}"] = ratio(results, "mlplab", "bare")
        summary[f"lightning_vs_raw_{size}"] = ratio(results, "mlplab", "raw")
        summary[f"floor_vs_raw_{size}"] = ratio(results, "bare", "raw")
        summary[f"floor_vs_floor_{size}"] = ratio(results, "bare2", "bare")
        # 16 × one replica's steps/s over one single-model job's (mlplab's default path)
        summary[f"replicas16_vs_single_{size}"] = REPLICAS * ratio(results, "replicas16", "mlplab")
        print(
            f"{'':<13}replicas16_vs_single: {summary[f'replicas16_vs_single_{size}']:.1f} "
            f"(16 × a replica's steps/s ÷ a single job's)"
        )
    process_repeats = 3 if args.quick else 5
    summary["help_s"] = process_seconds(["--help"], process_repeats)
    summary["cfg_s"] = process_seconds(["--cfg", "job"], process_repeats)
    summary["refused_s"] = process_seconds(["model.hidden=0"], process_repeats)
    # 400 jobs, one of them bad: every job is checked before the first one runs.
    rates = ",".join(str(0.001 * (k + 1)) for k in range(19))
    summary["sweep400_refused_s"] = process_seconds(
        ["seed=range(0,20)", f"optimizer.lr={rates},-1", "-m"], 1
    )
    # The homework sweep (6 jobs), its 5 seeds as replicas of each job, then 1 seed per job.
    homework = ["experiment=homework", "extras.print_config=false"]
    homework += ["trainer.enable_progress_bar=false", *(["trainer.max_epochs=10"] * args.quick)]
    summary["homework_5_seeds_s"] = process_seconds([*homework, "replicas=5"], 1)
    summary["homework_1_seed_s"] = process_seconds([*homework, "replicas=1"], 1)
    summary["homework_5_vs_1"] = summary["homework_5_seeds_s"] / summary["homework_1_seed_s"]
    print(
        f"\nexperiment=homework{' (10 epochs)' * args.quick}: 5 seeds "
        f"{summary['homework_5_seeds_s']:.1f} s, 1 seed {summary['homework_1_seed_s']:.1f} s "
        f"({summary['homework_5_vs_1']:.2f}×)"
    )
    print(
        f"\nstart-up (median of {process_repeats}): --help {summary['help_s']:.2f} s, "
        f"--cfg job {summary['cfg_s']:.2f} s, refused override {summary['refused_s']:.2f} s; "
        f"a 400-job sweep refused in {summary['sweep400_refused_s']:.2f} s"
    )
    print(json.dumps({key: round(value, 3) for key, value in summary.items()}))


if __name__ == "__main__":
    main()
