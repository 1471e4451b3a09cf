"""replicas=R: R seeds trained at once as one stacked model, each replica a run of its own.

Replica r of a job must be the run that a separate job with `seed=seed+r` is: the same
per-step losses and final weights (to 1e-6 relative in float32, 1e-12 in float64: the batched
products sum in another order than one model's), for every optimizer × activation × task.
The comparison has teeth (replicas that share a batch order, a seed or their gradients are
caught); a diverged replica leaves the others bit-for-bit untouched; every reader (report,
eval.py, TensorBoard, resume) sees R runs; what would tie the replicas together is refused.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig
from torch import nn

import mlplab.replicas
from mlplab.cli import resumed_config
from mlplab.config import ConfigError, model_buffer_problems, problems
from mlplab.evaluate import evaluate_checkpoint
from mlplab.evaluate import main as evaluate_main
from mlplab.fit import Diverged, FitResult, fit_lightning, fit_raw
from mlplab.model import MLP
from mlplab.replicas import ReplicaData, ReplicaRecord, fit_replicas, replica_configs
from mlplab.report import read_curve_rows, write_report
from mlplab.stacked import StackedModels
from mlplab.train import train

from . import forked
from .conftest import ROOT, option_names
from .test_cli import run_train
from .test_engines import scalars

FAST = ["logger=none", "trainer.enable_checkpointing=false"]
FLOAT32, FLOAT64 = 1e-6, 1e-12  # relative tolerances


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over max |b|: how far a is from b, relative to b's scale."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300))


def assert_same_run(replica: FitResult, single: FitResult, tolerance: float) -> None:
    """Replica and separate job: the same steps, and losses and weights within `tolerance`."""
    assert replica.steps == single.steps and replica.epochs == single.epochs
    assert replica.step_losses.shape == single.step_losses.shape
    assert relative_error(replica.step_losses, single.step_losses) <= tolerance
    ours, theirs = replica.model.state_dict(), single.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[name].dtype == value.dtype for name, value in theirs.items())
    # relative to the scale of all the weights: a one-element bias of 0.008 may differ by 1e-8
    # (float32 noise of sums in another order, grown a little by Adagrad)
    flat = [torch.cat([d[name].flatten() for name in theirs]) for d in (ours, theirs)]
    assert relative_error(*flat) <= tolerance
    assert replica.metrics.keys() == single.metrics.keys()
    for name, value in single.metrics.items():
        assert replica.metrics[name] == pytest.approx(value, rel=100 * tolerance, abs=1e-9)


def fit_replicas_and_singles(
    make_cfg, *overrides: str, replicas: int = 2, seed: int = 3, engine=fit_lightning
):
    """A job of `replicas` replicas from `seed`, and each replica's separate job.

    `engine=fit_raw` trains the separate jobs with the textbook loop, about three times
    faster: tests/test_parity.py holds it bit-equal to Lightning's for every optimizer ×
    activation × task, so the comparison is the same one.
    """
    cfg = make_cfg(*overrides, f"replicas={replicas}", f"seed={seed}", *FAST)
    configs = mlplab.replicas.replica_configs(cfg)  # (looked up now: a test may break it)
    results = fit_replicas(cfg, configs, [[] for _ in range(replicas)])
    singles = [engine(separate_job(cfg, seed + r), []) for r in range(replicas)]
    return results, singles


def separate_job(cfg: DictConfig, seed: int) -> DictConfig:
    """The config `python train.py <cfg's overrides> seed=<seed>` composes: `cfg` with one
    model and that seed (`${seed}` interpolations follow it), copied rather than composed
    again (a third of the time of a small case), and not by `replica_configs`, under test."""
    single = copy.deepcopy(cfg)
    single.replicas, single.seed = 1, seed
    single.paths.output_dir = f"{cfg.paths.output_dir}_seed{seed}"
    return single


# ---- the stacked model ----


class Residual(nn.Module):
    """Not mlplab's MLP: StackedModels runs it under vmap."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.out = nn.Linear(8, 8), nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x + torch.tanh(self.inner(x)))


@pytest.mark.parametrize(
    "build", [lambda: MLP(8, 16, 1, nn.GELU(), 2), Residual], ids=["mlp", "vmap"]
)
def test_stacked_models_run_each_replica_on_its_own_batch_with_its_own_gradient(build) -> None:
    torch.manual_seed(0)
    models = [build() for _ in range(3)]
    stacked = StackedModels(models)
    assert stacked.layer_by_layer == isinstance(models[0], MLP)
    x, target = torch.randn(3, 5, 8), torch.randn(3, 5, 1)
    output = stacked(x)
    ((output - target) ** 2).mean((1, 2)).sum().backward()
    for r, model in enumerate(models):
        torch.testing.assert_close(output[r], model(x[r]), rtol=1e-6, atol=1e-6)
        ((model(x[r]) - target[r]) ** 2).mean().backward()
        grads = [p.grad[r] for p in stacked.parameters()]
        for (name, parameter), grad in zip(model.named_parameters(), grads, strict=True):
            torch.testing.assert_close(grad, parameter.grad, rtol=1e-6, atol=1e-7, msg=name)
        plain = build()
        plain.load_state_dict(stacked.replica_state_dict(r))  # a plain state dict
        assert all(
            torch.equal(a, b) for a, b in zip(plain.parameters(), model.parameters(), strict=True)
        )


def test_a_model_with_buffers_is_refused() -> None:
    with_buffers = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match="buffers"):
        StackedModels([with_buffers, with_buffers])
    node = {"_target_": "torch.nn.BatchNorm1d", "num_features": 4}
    (line,) = model_buffer_problems(node, 3)
    assert line.startswith("replicas=3: model torch.nn.BatchNorm1d has buffers (running_mean")
    assert (
        model_buffer_problems(
            {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1}, 3
        )
        == []
    )


# ---- parity: replica r = the separate job with seed + r ----


def every_optimizer_activation_and_task() -> list:
    """All of them in CI (slow); the fast run covers each optimizer, activation and task once."""
    optimizers, activations, tasks = (option_names(g) for g in ("optimizer", "activation", "data"))
    fast = {(o, activations[i], tasks[i % len(tasks)]) for i, o in enumerate(optimizers)}
    fast |= {
        (optimizers[i % len(optimizers)], a, tasks[i % len(tasks)])
        for i, a in enumerate(activations)
    }
    return [
        pytest.param(*case, marks=() if case in fast else pytest.mark.slow, id="-".join(case))
        for case in itertools.product(optimizers, activations, tasks)
    ]


@pytest.mark.parametrize(("optimizer", "activation", "task"), every_optimizer_activation_and_task())
def test_each_replica_trains_as_its_own_job_would(make_cfg, optimizer, activation, task) -> None:
    options = [f"optimizer={optimizer}", f"activation={activation}", f"data={task}"]
    results, singles = fit_replicas_and_singles(make_cfg, *options, engine=fit_raw)
    for replica, single in zip(results, singles, strict=True):
        assert replica.diverged_at is None
        assert_same_run(replica, single, FLOAT32)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_in_float64_the_replicas_agree_to_1e12(make_cfg, optimizer) -> None:
    results, singles = fit_replicas_and_singles(
        make_cfg, f"optimizer={optimizer}", "trainer.precision=64-true", "data=classification"
    )
    for replica, single in zip(results, singles, strict=True):
        assert next(replica.model.parameters()).dtype == torch.float64
        assert_same_run(replica, single, FLOAT64)


@pytest.mark.parametrize(
    "options",
    [
        ["optimizer=sgd", "scheduler=onecycle"],
        ["optimizer=adamw", "trainer.accumulate_grad_batches=3"],
        [
            "optimizer=sgd",
            "trainer.gradient_clip_val=0.001",
            "trainer.gradient_clip_algorithm=value",
        ],
    ],
    ids=["scheduler", "accumulation", "clip-by-value"],
)
def test_replicas_keep_parity_with_trainer_options_that_change_the_maths(make_cfg, options):
    results, singles = fit_replicas_and_singles(make_cfg, *options)
    for replica, single in zip(results, singles, strict=True):
        assert_same_run(replica, single, FLOAT32)


def one_batch_order(self) -> mlplab.replicas.ReplicaLoader:
    """A broken ReplicaData: every replica gets replica 0's batch order."""
    first = self.datamodules[0]
    return mlplab.replicas.ReplicaLoader([first.train_dataloader() for _ in self.datamodules])


def one_seed(cfg, resume=False):
    """Broken replica configs: every replica with the job's own seed."""
    configs = original_replica_configs(cfg, resume)
    for config in configs:
        config.seed = cfg.seed
    return configs


original_replica_configs = mlplab.replicas.replica_configs


def mean_of_losses(loss_fn, outputs, targets):
    """A broken loss: the replicas' mean, so each gets 1/R of its gradient."""
    return original_replica_losses(loss_fn, outputs, targets) / outputs.shape[0]


original_replica_losses = mlplab.replicas.replica_losses


@pytest.mark.parametrize(
    ("target", "broken"),
    [
        (ReplicaData, ("train_dataloader", one_batch_order)),
        (mlplab.replicas, ("replica_configs", one_seed)),
        (mlplab.replicas, ("replica_losses", mean_of_losses)),
    ],
    ids=["shared-batch-order", "shared-seed", "mean-not-sum"],
)
def test_parity_catches_replicas_that_share_a_batch_order_a_seed_or_their_gradient(
    make_cfg, monkeypatch, target, broken
) -> None:
    monkeypatch.setattr(target, *broken)
    results, singles = fit_replicas_and_singles(make_cfg, "optimizer=sgd")
    with pytest.raises(AssertionError):
        assert_same_run(results[1], singles[1], FLOAT32)


# ---- divergence ----


class BlowUp(L.Callback):
    """Sets replica 1's first-layer weights to 1e30 before step `step`: its loss overflows."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.model.parameter_slices(1)[0].fill_(1e30)
                self.weights = [w.clone() for w in pl_module.model.parameter_slices(1)]


def test_a_diverged_replica_stops_changing_and_leaves_the_others_bit_for_bit(make_cfg) -> None:
    cfg = make_cfg("optimizer=adam", "replicas=3", *FAST)  # Adam: momentum would move it on
    untouched = fit_replicas(cfg, replica_configs(cfg), [[], [], []])
    blow_up = BlowUp(step=5)
    results = fit_replicas(cfg, replica_configs(cfg), [[], [], []], [blow_up])
    assert [result.diverged_at for result in results] == [None, 5, None]
    assert len(results[1].step_losses) == 6 and not torch.isfinite(results[1].step_losses[-1])
    assert "val/loss" not in results[1].metrics
    for r in (0, 2):
        assert torch.equal(results[r].step_losses, untouched[r].step_losses)
        assert results[r].metrics == untouched[r].metrics
        for a, b in zip(
            results[r].model.parameters(), untouched[r].model.parameters(), strict=True
        ):
            assert torch.equal(a, b)
    frozen = list(results[1].model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(frozen, blow_up.weights, strict=True))


def test_replicas_that_all_diverge_end_the_job_where_their_own_jobs_would(make_cfg, tmp_path):
    unstable = [
        "optimizer=sgd",
        "optimizer.lr=1000",
        "trainer.max_steps=-1",
        "trainer.max_epochs=3",
    ]
    with pytest.raises(Diverged):
        train(make_cfg(*unstable, "replicas=2"), overrides=["replicas=2"])
    job = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert job["status"] == "diverged"
    for r in range(2):
        with pytest.raises(Diverged):
            train(make_cfg(*unstable, f"seed={r}", name=f"single{r}"))
        single = json.loads((tmp_path / f"single{r}" / "metrics.json").read_text())
        replica = json.loads((tmp_path / "job" / f"replica_{r}" / "metrics.json").read_text())
        assert replica["status"] == "diverged"
        assert replica["diverged_at_step"] == single["diverged_at_step"]
        steps = [
            int(row[0]) for row in read_curve_rows(tmp_path / "job" / f"replica_{r}" / "curves.csv")
        ]
        assert steps == list(range(single["diverged_at_step"] + 1))  # logged up to it, as alone


# ---- every reader sees R runs ----


def test_each_replica_writes_the_directory_a_separate_job_would(make_cfg, tmp_path) -> None:
    overrides = ["optimizer=sgd", "replicas=3", "seed=4"]
    metrics = train(make_cfg(*overrides), overrides=overrides)
    job = tmp_path / "job"
    summary = json.loads((job / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["overrides"] == overrides
    assert summary["replica_dirs"] == ["replica_0", "replica_1", "replica_2"]
    single = make_cfg("optimizer=sgd", "seed=5", name="single")
    train(single, overrides=["optimizer=sgd", "seed=5"])
    replica = job / "replica_1"
    own = json.loads((replica / "metrics.json").read_text())
    alone = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert own["status"] == "completed" and own["overrides"] == alone["overrides"]
    assert own["steps"] == alone["steps"] and own["metrics"].keys() == alone["metrics"].keys()
    assert own["metrics"] == pytest.approx(alone["metrics"], rel=1e-5)
    # curves.csv and TensorBoard: the same tags at the same steps, values within float32 noise
    ours, theirs = (
        read_curve_rows(replica / "curves.csv"),
        read_curve_rows(tmp_path / "single" / "curves.csv"),
    )
    assert [row[:2] for row in ours] == [row[:2] for row in theirs] != []
    assert [float(r[2]) for r in ours] == pytest.approx([float(r[2]) for r in theirs], rel=1e-5)
    ours, theirs = scalars(replica), scalars(tmp_path / "single")
    assert {t: [s for s, _ in v] for t, v in ours.items()} == {
        t: [s for s, _ in v] for t, v in theirs.items()
    }
    saved = (replica / "config.yaml").read_text()
    assert "seed: 5\n" in saved and "replicas: 1\n" in saved and f"output_dir: {replica}\n" in saved
    # its plain weights, which eval.py evaluates to the test metrics recorded in training
    weights = torch.load(replica / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    model = MLP(8, 8, 1, nn.ReLU())
    model.load_state_dict({k.removeprefix("model."): v for k, v in weights.items()})
    recorded = {k: v for k, v in own["metrics"].items() if k.startswith("test/")}
    assert evaluate_checkpoint(replica / "checkpoints" / "last.ckpt") == pytest.approx(
        recorded, rel=1e-6
    )
    # the job returns the replicas' means; the report finds 3 runs, one configuration
    runs = [json.loads((job / f"replica_{r}" / "metrics.json").read_text()) for r in range(3)]
    assert metrics["val/loss"] == pytest.approx(sum(run["metrics"]["val/loss"] for run in runs) / 3)
    report = write_report(job)
    assert len(report.rows) == 3 and [row["n"] for row in report.grouped] == [3]
    assert report.grouped[0]["seeds"] == "4 5 6"


def test_a_sweep_of_replicas_reports_like_a_sweep_of_seeds(make_cfg, tmp_path) -> None:
    """optimizer=sgd,adam replicas=3 -m and optimizer=sgd,adam seed=0,1,2 -m: one report."""
    for i, optimizer in enumerate(("sgd", "adam")):
        overrides = [f"optimizer={optimizer}", "replicas=3"]
        train(make_cfg(*overrides, name=f"replicas/{i}"), overrides=overrides)
        for seed in range(3):
            overrides = [f"optimizer={optimizer}", f"seed={seed}"]
            train(make_cfg(*overrides, name=f"seeds/{i}_{seed}"), overrides=overrides)
    by_replicas, by_seeds = write_report(tmp_path / "replicas"), write_report(tmp_path / "seeds")
    assert len(by_replicas.rows) == len(by_seeds.rows) == 6
    for a, b in zip(by_replicas.grouped, by_seeds.grouped, strict=True):
        assert a.keys() == b.keys() and a["optimizer"] == b["optimizer"] and a["n"] == b["n"] == 3
        assert a["seeds"] == b["seeds"] == "0 1 2"
        assert a["val/loss mean"] == pytest.approx(b["val/loss mean"], rel=1e-5)
    assert [c.result.test for c in by_replicas.comparisons] == ["paired"] * 3
    assert [c.sentence()[:40] for c in by_replicas.comparisons] == [
        c.sentence()[:40] for c in by_seeds.comparisons
    ]


def test_sixteen_replicas_are_sixteen_runs_of_one_configuration(make_cfg, tmp_path) -> None:
    train(make_cfg("replicas=16", "trainer.max_steps=3"), overrides=["replicas=16"])
    report = write_report(tmp_path / "job")
    assert len(report.rows) == 16 and {row["status"] for row in report.rows} == {"completed"}
    assert [row["n"] for row in report.grouped] == [16]
    assert len(scalars(tmp_path / "job" / "replica_15")["train/loss"]) == 3


def test_eval_and_resume_take_a_replica_or_the_job_as_each_can(make_cfg, tmp_path, capsys):
    train(make_cfg("replicas=2"), overrides=["replicas=2"])
    with pytest.raises(SystemExit) as refused:
        evaluate_main([f"run={tmp_path / 'job'}"])
    assert refused.value.code == 2
    assert f"evaluate one of them, run={tmp_path / 'job' / 'replica_0'}" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="resume that job: resume="):
        resumed_config(tmp_path / "job" / "replica_1", ["trainer.max_epochs=30"])


# ---- resume ----

RESUMABLE = [
    "data.num_samples=300",
    "model.hidden=8",
    "data.batch_size=16",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks=[default,step_checkpoint]",
    "callbacks.step_checkpoint.every_n_train_steps=5",
    "replicas=2",
]


def replica_state(job: Path, r: int) -> tuple[dict, list, dict]:
    run = job / f"replica_{r}"
    summary = json.loads((run / "metrics.json").read_text())
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return summary["metrics"], read_curve_rows(run / "curves.csv"), weights


def assert_same_replicas(a: Path, b: Path) -> None:
    for r in range(2):
        (ma, ca, wa), (mb, cb, wb) = replica_state(a, r), replica_state(b, r)
        assert ma == mb and ca == cb != []
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert scalars(a / f"replica_{r}") == scalars(b / f"replica_{r}")


def test_a_replicas_job_trained_further_equals_one_trained_that_long(make_cfg, tmp_path):
    train(make_cfg(*RESUMABLE, "trainer.max_epochs=3", tiny=False, name="straight"))
    train(make_cfg(*RESUMABLE, "trainer.max_epochs=1", tiny=False, name="continued"))
    cfg, _ = resumed_config(tmp_path / "continued", ["trainer.max_epochs=3"])
    train(cfg, resume=True)
    assert_same_replicas(tmp_path / "straight", tmp_path / "continued")


class Crash(RuntimeError):
    """Stands in for a crash (tests/test_kill.py kills a training process for real)."""


def test_a_crashed_replicas_job_resumes_exactly(make_cfg, tmp_path, monkeypatch) -> None:
    overrides = [*RESUMABLE, "trainer.max_epochs=3"]
    train(make_cfg(*overrides, tiny=False, name="straight"))
    original = ReplicaRecord.on_train_batch_end

    def crash_at_17(self, trainer, *args) -> None:
        original(self, trainer, *args)
        if trainer.global_step == 17:  # mid-epoch, after the checkpoint at step 15
            raise Crash("crash at step 17")

    with monkeypatch.context() as patch:
        patch.setattr(ReplicaRecord, "on_train_batch_end", crash_at_17)
        with pytest.raises(Crash):
            train(make_cfg(*overrides, tiny=False, name="resumed"))
    states = [
        json.loads((tmp_path / "resumed" / f"replica_{r}" / "metrics.json").read_text())
        for r in range(2)
    ]
    assert [state["status"] for state in states] == ["failed", "failed"]
    cfg, _ = resumed_config(tmp_path / "resumed", [])
    train(cfg, resume=True)
    assert_same_replicas(tmp_path / "straight", tmp_path / "resumed")


# ---- refused: what would tie the replicas together ----


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["engine=raw"], "replicas=2 needs engine=lightning"),
        (["accelerator=ddp_cpu"], "trains in one process on one device"),
        (["trainer.gradient_clip_val=1.0"], "clips by the norm of all the gradients"),
        (["trainer.precision=16-mixed"], "scales the loss by one factor for all replicas"),
        (["scheduler=plateau"], "ReduceLROnPlateau follows one metric"),
        (["callbacks=[default,early_stopping]"], "callbacks.early_stopping.monitor=val/loss"),
        (["callbacks=[default,best_checkpoint]"], "callbacks.best_checkpoint.monitor=val/loss"),
        (["replicas=0"], "replicas=0 is not allowed: expected an integer ≥ 1"),
    ],
    ids=["raw", "ddp", "clip-norm", "fp16", "plateau", "early-stopping", "best-k", "zero"],
)
def test_what_would_tie_the_replicas_together_is_refused_in_one_line(make_cfg, options, says):
    found = problems(make_cfg("replicas=2", *options))
    assert any(says in line for line in found), found
    if options != ["replicas=0"]:
        assert problems(make_cfg("replicas=1", *options)) == []  # separate jobs can


def test_a_refused_replicas_job_exits_2_with_one_line(tmp_path) -> None:
    done = forked.run(tmp_path, ROOT / "train.py", "replicas=3", "trainer.gradient_clip_val=1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[1].startswith("  trainer.gradient_clip_val=1 clips by the norm")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_sweep_of_replicas_end_to_end(tmp_path) -> None:
    run_train(
        "optimizer=sgd,adam",
        "replicas=3",
        "data.num_samples=300",
        "trainer.max_epochs=2",
        "extras.print_config=false",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "-m",
    )
    rows = (tmp_path / "sweep" / "summary_by_config.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",3,0," in row for row in rows[1:])  # two configs, n=3 each
    assert "paired" in (tmp_path / "sweep" / "summary_comparisons.csv").read_text()
