"""A tuned sweep's report: each optimizer's learning rate picked on validation, the picks
compared on the test split (mlplab.tuning)."""

from __future__ import annotations

import csv
import itertools
import logging
import statistics
from pathlib import Path

import matplotlib.image
import pytest
from hydra import compose, initialize_config_dir
from scipy import stats as scipy_stats

import mlplab.plot
from mlplab.cli import CONFIG_DIR
from mlplab.plot import plot_curves, y_axis
from mlplab.report import main as report_main
from mlplab.report import write_report

from .test_cli import run_train
from .test_report import fake_job, read_csv

SEEDS = (0, 1, 2)
# (optimizer, lr) → per seed (final val/loss, test/loss); None: that seed's run diverged.
# SGD's lowest mean val/loss is at lr 1, but one of its seeds diverged there: lr 0.1 must be
# picked. Adam's val/loss prefers 0.01 by a little; on the test split the picks come out
# in the other order from validation (Adam's pick is worse there): the report must compare
# test numbers, not the validation numbers it picked on.
SWEEP = {
    ("sgd", "0.01"): [(0.50, 0.52), (0.52, 0.51), (0.49, 0.53)],
    ("sgd", "0.1"): [(0.20, 0.150), (0.22, 0.155), (0.21, 0.149)],
    ("sgd", "1"): [(0.10, 0.10), None, (0.11, 0.10)],
    ("adam", "0.01"): [(0.18, 0.180), (0.19, 0.186), (0.17, 0.183)],
    ("adam", "0.1"): [(0.19, 0.20), (0.20, 0.21), (0.19, 0.20)],
    ("adam", "1"): [(0.90, 0.95), (0.95, 0.90), (0.92, 0.93)],
}
PICKED = {"sgd": "0.1", "adam": "0.01"}


def tuned_sweep(root: Path, sweep=SWEEP) -> Path:
    job = 0
    for (optimizer, lr), results in sweep.items():
        for seed, result in zip(SEEDS, results, strict=True):
            overrides = [f"optimizer={optimizer}", f"optimizer.lr={lr}", f"seed={seed}"]
            val, test = result or (float("nan"), float("nan"))
            status = "completed" if result else "diverged"
            fake_job(root, f"{job}", overrides, val, status=status, test_loss=test)
            job += 1
    return root


def test_each_optimizer_gets_its_lowest_mean_val_loss_among_complete_rates(tmp_path) -> None:
    root = tuned_sweep(tmp_path / "sweep")
    report = write_report(root, tune=["optimizer.lr"])
    rows = read_csv(root / "summary_tuning.csv")
    assert [(r["optimizer"], r["optimizer.lr"], r["n"]) for r in rows] == [
        ("sgd", "0.1", "3"),
        ("adam", "0.01", "3"),
    ]
    for row in rows:
        results = SWEEP[row["optimizer"], row["optimizer.lr"]]
        val, test = zip(*results, strict=True)
        assert float(row["val/loss mean"]) == pytest.approx(statistics.mean(val))
        assert float(row["test/loss mean"]) == pytest.approx(statistics.mean(test))
        low, high = scipy_stats.t.interval(
            0.95, 2, loc=statistics.mean(test), scale=scipy_stats.sem(test)
        )
        assert float(row["test/loss ci95 low"]) == pytest.approx(low, rel=1e-9)
        assert float(row["test/loss ci95 high"]) == pytest.approx(high, rel=1e-9)
    assert report.tune == ["optimizer.lr"]
    markdown = (root / "summary.md").read_text()
    assert markdown.index("## Tuned: optimizer.lr") < markdown.index("## By configuration")
    assert "| sgd | 0.1 | 3 |" in markdown and "| adam | 0.01 | 3 |" in markdown


def test_the_picks_are_compared_on_the_test_split_paired_by_seed(tmp_path) -> None:
    root = tuned_sweep(tmp_path / "sweep")
    write_report(root, tune=["optimizer.lr"])
    (row,) = [r for r in read_csv(root / "summary_comparisons.csv") if r["first picked at"]]
    assert (row["first"], row["second"], row["column"]) == ("sgd", "adam", "test/loss")
    assert (row["first picked at"], row["second picked at"]) == (
        "optimizer.lr=0.1",
        "optimizer.lr=0.01",
    )
    sgd = [test for _, test in SWEEP["sgd", PICKED["sgd"]]]
    adam = [test for _, test in SWEEP["adam", PICKED["adam"]]]
    expected = scipy_stats.ttest_rel(adam, sgd)
    assert row["test"] == "paired"
    assert float(row["p"]) == pytest.approx(expected.pvalue, rel=1e-9)
    assert float(row["difference (second - first)"]) == pytest.approx(
        statistics.mean(adam) - statistics.mean(sgd)
    )
    # Adam's pick won on validation, yet the test split says the opposite, detectably:
    assert row["detectable"] == "True" and float(row["difference (second - first)"]) > 0
    sentence = "- optimizer=adam (optimizer.lr=0.01) - optimizer=sgd (optimizer.lr=0.1), test/loss:"
    assert any(
        line.startswith(sentence) and line.endswith(": adam higher")
        for line in (root / "summary.md").read_text().splitlines()
    )


def test_a_setting_where_every_rate_failed_is_named_not_picked(tmp_path, caplog) -> None:
    sweep = dict(SWEEP)
    sweep["adam", "0.01"] = [None, *SWEEP["adam", "0.01"][1:]]
    sweep["adam", "0.1"] = [*SWEEP["adam", "0.1"][:2], None]
    sweep["adam", "1"] = [None] * 3
    root = tuned_sweep(tmp_path / "sweep", sweep)
    with caplog.at_level(logging.WARNING):
        report = write_report(root, tune=["optimizer.lr"])
    assert "no value of optimizer.lr can be picked for optimizer=adam" in caplog.text
    rows = read_csv(root / "summary_tuning.csv")
    assert [(r["optimizer"], r["optimizer.lr"], r["n"]) for r in rows] == [
        ("sgd", "0.1", "3"),
        ("adam", "", "0"),
    ]
    assert report.picked_comparisons == []


def test_the_pictures_show_the_tuning_and_the_picks_curves(tmp_path, monkeypatch) -> None:
    drawn = []

    def recording(configs, *args, **kwargs):
        drawn.append([tuple(config.values()) for config in configs])
        return plot_curves(configs, *args, **kwargs)

    monkeypatch.setattr(mlplab.plot, "plot_curves", recording)
    root = tuned_sweep(tmp_path / "sweep")
    write_report(root)
    assert not (root / "tuning.png").exists() and not (root / "summary_tuning.csv").exists()
    write_report(root, tune=["optimizer.lr"])
    assert drawn == [list(SWEEP), list(PICKED.items())]  # every configuration, then the picks
    height, width = matplotlib.image.imread(root / "tuning.png").shape[:2]
    assert 400 < height < 800 and 1000 < width < 2000


def test_a_diverged_run_does_not_flatten_the_picture() -> None:
    completed = [0.05, 0.3, 1.2]
    log_scale, (low, high) = y_axis(completed)
    assert log_scale and 0.04 < low < 0.05 and 1.2 < high < 1.5
    assert y_axis([0.2, 0.3]) == (False, pytest.approx((0.195, 0.305)))


def test_the_command_line_reads_a_sweep_as_tuned(tmp_path, capsys, caplog) -> None:
    root = tuned_sweep(tmp_path / "sweep")
    report_main(["--tune", "optimizer.lr", str(root)])
    printed = capsys.readouterr().out
    assert "optimizer.lr tuned: the picks" in printed
    assert printed.index("optimizer.lr tuned") > printed.index("runs in")  # the last word
    with caplog.at_level(logging.WARNING):
        report_main(["--tune", "model.hidden", str(root)])
    assert "tune: model.hidden was not swept over several values" in caplog.text
    assert "tuned" not in capsys.readouterr().out


def test_lr_tuning_declares_its_sweep_and_its_reading() -> None:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=lr_tuning"], return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params)
    assert params["optimizer"] == "sgd,sgd_momentum,adam"
    rates = [float(lr) for lr in params["optimizer.lr"].split(",")]
    ratios = {round(b / a, 6) for a, b in itertools.pairwise(rates)}
    assert len(rates) >= 5 and ratios <= {
        round(10**0.5, 6),
        round(10 / 3, 6),
        3.0,
    }  # half-decade steps
    assert cfg.hydra.callbacks.report.tune == "optimizer.lr"
    assert cfg.data.task == "regression" and cfg.data.seed == 0
    assert "seed" not in params and cfg.replicas == 3 and cfg.seed == 0  # seeds 0-2, replicas
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["optimizer=sgd_momentum"])
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer._target_ == "torch.optim.SGD"


@pytest.mark.slow
def test_lr_tuning_is_one_command(tmp_path) -> None:
    output = run_train(  # no -m: the experiment declares itself a sweep
        "experiment=lr_tuning",
        "optimizer=sgd,adam",  # a corner of its grid, to keep the test short
        "optimizer.lr=0.01,0.1",
        "replicas=2",  # seeds 0 and 1 of its 3
        "trainer.max_epochs=2",
        "data.num_samples=400",
        f"hydra.sweep.dir={tmp_path}",
    )
    with open(tmp_path / "summary_tuning.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["optimizer"], row["n"]) for row in rows] == [("sgd", "2"), ("adam", "2")]
    for row in rows:  # the pick is the rate with the lower mean val/loss
        with open(tmp_path / "summary_by_config.csv") as f:
            rates = {
                r["optimizer.lr"]: float(r["val/loss mean"])
                for r in csv.DictReader(f)
                if r["optimizer"] == row["optimizer"]
            }
        assert row["optimizer.lr"] == min(rates, key=rates.get)
    assert (tmp_path / "tuning.png").is_file()
    assert "optimizer.lr tuned: the picks" in output[output.rindex("runs in") :]
