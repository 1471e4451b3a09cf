"""Speed of mlplab's training paths, measured side by side in one process.

    python scripts/bench.py            # about 3 minutes on 2 cores
    python scripts/bench.py --quick    # under a minute: fewer steps and repeats

Five training paths, at hidden/batch 64/64 (where per-step overhead shows) and 256/4096
(where the maths dominates), each measured round-robin with a warm-up epoch, repeated:

  raw      the textbook loop over pre-sliced batches: the limit
  loader   the same loop fed by mlplab's DataModule loader
  mlplab   the Lightning engine exactly as `python train.py` sets it up: TensorBoard loss
           curve, epoch metrics, checkpoints, progress bar, and `steps_per_iteration` (16)
           optimizer steps per Lightning iteration
  classic  the same with steps_per_iteration=1: one step per training_step, Lightning's
           automatic optimization
  floor    a bare Lightning Trainer on the same model and batches: no logger, no bar, no
           checkpoints, no metrics, no self.log

Then, at both sizes, mlplab's module alternates Lightning's manual-optimization step with
the textbook step on one model, step by step: what Lightning's per-step calls cost.

Every path validates after each epoch, as training does; steps/s count training time only:
per-epoch bookkeeping (checkpoint, log flushes) included, validation passes excluded (each
path pays for them alike). Ratios are medians over rounds of ratios taken within a round. Then
whole processes are timed: `train.py --help`, `train.py --cfg job` and a refused override.
The last line printed is one JSON object with the ratios (each path's steps/s over its
reference's) and the start-up times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from mlplab.build import build_datamodule, build_model, optimizer_factory
from mlplab.cli import CONFIG_DIR
from mlplab.fit import fit_lightning, lightning_quiet
from mlplab.module import ChunkedMLPModule
from mlplab.reference import reference_step
from mlplab.tasks import loss_function
from mlplab.train import build_loggers

ROOT = CONFIG_DIR.parent
SIZES = {"64": (64, 64), "4096": (256, 4096)}  # name → (hidden, batch)


def bench_config(hidden: int, batch: int, steps_per_epoch: int, epochs: int, out: Path):
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
                f"trainer.max_epochs={epochs}",
                f"paths.output_dir={out}",
            ],
        )


class TrainingClock(L.Callback):
    """Wall time of training epochs after the first, minus the validation passes inside them."""

    def __init__(self) -> None:
        self.seconds, self.steps = 0.0, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_started, self.first_step = time.perf_counter(), trainer.global_step

    def on_validation_start(self, trainer, pl_module) -> None:
        self.validation_started = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self.epoch_started += time.perf_counter() - self.validation_started

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # after mlplab's checkpoint
        if trainer.current_epoch > 0:  # epoch 0 is the warm-up
            self.seconds += time.perf_counter() - self.epoch_started
            self.steps += trainer.global_step - self.first_step


Batches = list[tuple[torch.Tensor, torch.Tensor]]


def presliced_batches(cfg) -> tuple[Batches, Batches]:
    """The first epoch's training batches and the validation batches, cut once, in advance."""
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    train, val = datamodule.train_dataloader(), datamodule.val_dataloader()
    return [(x.clone(), y.clone()) for x, y in train], [(x.clone(), y.clone()) for x, y in val]


def raw(cfg, batches_for_epoch: Callable[[int], object], val_batches: Batches) -> float:
    """Steps/s of the textbook loop over the batches that `batches_for_epoch(epoch)` yields."""
    model = build_model(cfg)
    optimizer = optimizer_factory(cfg)(model.parameters())
    loss_fn = loss_function(cfg.data.task)
    seconds = steps = 0
    for epoch in range(cfg.trainer.max_epochs):
        started = time.perf_counter()
        for x, y in batches_for_epoch(epoch):
            reference_step(model, optimizer, loss_fn, x, y)
            steps += epoch > 0
        seconds += (time.perf_counter() - started) * (epoch > 0)
        with torch.no_grad():  # the validation pass, untimed
            for x, y in val_batches:
                loss_fn(model(x), y)
    return steps / seconds


def raw_presliced(cfg, batches) -> float:
    train, val = batches
    return raw(cfg, lambda epoch: train, val)


def raw_loader(cfg, batches) -> float:
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()

    def epoch_batches(epoch: int):
        loader.sampler.set_epoch(epoch)
        return loader

    return raw(cfg, epoch_batches, batches[1])


def mlplab_lightning(cfg, batches) -> float:
    clock = TrainingClock()
    with tempfile.TemporaryDirectory() as out:
        cfg.paths.output_dir = out
        loggers = build_loggers(cfg)
        fit_lightning(cfg, loggers, Path(out) / "checkpoints", callbacks=[clock])
        for logger in loggers:
            logger.finalize("success")
    return clock.steps / clock.seconds


def mlplab_classic(cfg, batches) -> float:
    cfg.steps_per_iteration = 1
    return mlplab_lightning(cfg, batches)


class Presliced:
    """Batches as one iterable (a plain list would be taken for a list of loaders)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Bare(L.LightningModule):
    """The least a LightningModule can be: the model, its loss, its optimizer."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.model = build_model(cfg)
        self.loss_fn = loss_function(cfg.data.task)
        self.optimizer_factory = optimizer_factory(cfg)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self.model(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.loss_fn(self.model(x), y)

    def configure_optimizers(self):
        return self.optimizer_factory(self.model.parameters())


def lean_trainer(max_epochs: int, out: str, **options) -> L.Trainer:
    """A Trainer on one CPU with nothing switched on: no logger, bar, checkpoints or summary."""
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=out,
        **options,
    )


def bare_trainer(cfg, batches) -> float:
    clock = TrainingClock()
    with tempfile.TemporaryDirectory() as out, lightning_quiet():
        trainer = lean_trainer(
            cfg.trainer.max_epochs, out, num_sanity_val_steps=0, callbacks=[clock]
        )
        train, val = batches
        trainer.fit(Bare(cfg), train_dataloaders=Presliced(train), val_dataloaders=Presliced(val))
    return clock.steps / clock.seconds


class StepProbe(ChunkedMLPModule):
    """mlplab's module, alternating two ways to take a step on the same model and batches:
    Lightning's manual optimization (`manual_backward`, the wrapped optimizer's `step` and
    `zero_grad`, with the hooks they call) and the textbook calls on the bare optimizer.
    Timed one step at a time, side by side: what Lightning's per-step calls cost."""

    def __init__(self, cfg) -> None:
        super().__init__(build_model(cfg), cfg.data.task, None, optimizer_factory(cfg))
        self.seconds: dict[str, list[float]] = {"lightning": [], "textbook": []}

    def training_step(self, batch, batch_idx):
        wrapped = self.optimizers()
        for i, (x, y) in enumerate(batch):
            lightning = (i + batch_idx) % 2 == 0
            started = time.perf_counter()
            loss = self.loss_fn(self.model(x), y)
            if lightning:
                self.manual_backward(loss)
                wrapped.step()
                wrapped.zero_grad()
            else:
                loss.backward()
                wrapped.optimizer.step()
                wrapped.optimizer.zero_grad()
            self.seconds["lightning" if lightning else "textbook"].append(
                time.perf_counter() - started
            )


def step_overhead(size: str, steps_per_epoch: int, epochs: int) -> tuple[float, float]:
    """Median µs that Lightning's calls add to an optimizer step, and a textbook step's µs."""
    hidden, batch = SIZES[size]
    with tempfile.TemporaryDirectory() as out, lightning_quiet():
        cfg = bench_config(hidden, batch, steps_per_epoch, epochs, Path(out))
        datamodule = build_datamodule(cfg)
        datamodule.group(cfg.steps_per_iteration)
        datamodule.setup("fit")
        probe = StepProbe(cfg)
        lean_trainer(epochs, out, limit_val_batches=0).fit(
            probe, datamodule.train_dataloader(), datamodule.val_dataloader()
        )
    lightning, textbook = (statistics.median(probe.seconds[k]) for k in ("lightning", "textbook"))
    return 1e6 * (lightning - textbook), 1e6 * textbook


PATHS = {
    "raw": raw_presliced,
    "loader": raw_loader,
    "mlplab": mlplab_lightning,
    "classic": mlplab_classic,
    "floor": bare_trainer,
}


def measure(size: str, steps_per_epoch: int, epochs: int, repeats: int) -> dict[str, list[float]]:
    """steps/s of every path, `repeats` times, round-robin so drift hits all alike."""
    hidden, batch = SIZES[size]
    with tempfile.TemporaryDirectory() as out:
        cfg = bench_config(hidden, batch, steps_per_epoch, epochs, Path(out))
    batches = presliced_batches(cfg)
    results: dict[str, list[float]] = {name: [] for name in PATHS}
    for _ in range(repeats):
        for name, path in PATHS.items():
            results[name].append(path(cfg.copy(), batches))
    return results


def ratio(results: dict[str, list[float]], path: str, reference: str) -> float:
    """Median over rounds of path ÷ reference, each pair measured back to back.

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
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (< 1 min)")
    args = parser.parse_args()
    torch.manual_seed(0)
    repeats = 5 if args.quick else 11
    plan = {"64": (150 if args.quick else 250, 3), "4096": (20 if args.quick else 40, 3)}
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Lightning {L.__version__}, Python {platform.python_version()}"
    )
    summary: dict[str, float] = {}
    print(
        f"\n{'hidden/batch':<13}{'path':<8}{'median steps/s':>16}{'min':>10}{'µs/step':>10}"
        f"{'vs raw':>8}{'vs floor':>10}"
    )
    for size, (steps, epochs) in plan.items():
        results = measure(size, steps, epochs, repeats)
        for name, values in results.items():
            median = statistics.median(values)
            print(
                f"{'/'.join(map(str, SIZES[size])):<13}{name:<8}{median:>16.1f}{min(values):>10.1f}"
                f"{1e6 / median:>10.0f}{ratio(results, name, 'raw'):>8.2f}"
                f"{ratio(results, name, 'floor'):>10.2f}"
            )
        summary[f"lightning_vs_raw_{size}"] = ratio(results, "mlplab", "raw")
        summary[f"lightning_vs_floor_{size}"] = ratio(results, "mlplab", "floor")
        summary[f"loader_vs_raw_{size}"] = ratio(results, "loader", "raw")
        summary[f"floor_vs_raw_{size}"] = ratio(results, "floor", "raw")
        summary[f"classic_vs_raw_{size}"] = ratio(results, "classic", "raw")
        summary[f"classic_vs_floor_{size}"] = ratio(results, "classic", "floor")
    print()
    for size, (steps, _) in plan.items():
        added, step = step_overhead(size, steps, 2 if args.quick else 4)
        summary[f"step_overhead_us_{size}"] = added
        print(
            f"{'/'.join(map(str, SIZES[size]))}: Lightning's calls add {added:.0f} µs to a "
            f"{step:.0f} µs optimizer step ({added / step:.1%}), alternating with textbook steps"
        )
    process_repeats = 3 if args.quick else 5
    summary["help_s"] = process_seconds(["--help"], process_repeats)
    summary["cfg_s"] = process_seconds(["--cfg", "job"], process_repeats)
    summary["refused_s"] = process_seconds(["model.hidden=0"], process_repeats)
    print(
        f"\nstart-up (median of {process_repeats}): --help {summary['help_s']:.2f} s, "
        f"--cfg job {summary['cfg_s']:.2f} s, refused override {summary['refused_s']:.2f} s"
    )
    print(json.dumps({key: round(value, 3) for key, value in summary.items()}))


if __name__ == "__main__":
    main()
