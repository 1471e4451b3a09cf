"""The sweep report: its numbers are the runs' numbers, its picture a picture."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import time
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from hydra import compose, initialize_config_dir
from scipy import stats as scipy_stats
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from mlplab.cli import CONFIG_DIR
from mlplab.plot import plot_roles, smooth
from mlplab.report import find_runs, write_report
from mlplab.report import main as report_main
from mlplab.train import train

from .test_engines import scalars

JOBS = {
    "0_optimizer=sgd,activation=relu": ["optimizer=sgd", "activation=relu"],
    "1_optimizer=sgd,activation=tanh": ["optimizer=sgd", "activation=tanh"],
    "2_optimizer=adam,activation=relu": ["optimizer=adam", "activation=relu"],
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Three finished tiny jobs laid out like a sweep directory."""
    root = tmp_path_factory.mktemp("sweeps") / "sweep"  # alone in its parent: see below
    for name, overrides in JOBS.items():
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[
                    *overrides,
                    "data.num_samples=300",
                    "model.hidden=8",
                    "trainer.max_epochs=3",
                    "trainer.log_every_n_steps=1",
                    "trainer.enable_progress_bar=false",
                    f"paths.output_dir='{root / name}'",
                ],
            )
        train(cfg, overrides=overrides)
    write_report(root)
    return root


def test_summary_csv_equals_metrics_json_and_event_files(sweep) -> None:
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["run"] for row in rows] == list(JOBS)
    assert list(rows[0])[:4] == ["run", "optimizer", "activation", "status"]  # varying overrides
    for row in rows:
        summary = json.loads((sweep / row["run"] / "metrics.json").read_text())
        events = scalars(sweep / row["run"])
        assert [row["optimizer"], row["activation"]] == [o.split("=")[1] for o in JOBS[row["run"]]]
        assert row["status"] == "completed"
        for column in ("train/loss", "val/loss", "val/r2"):
            assert float(row[column]) == summary["metrics"][column]
        assert float(row["train/loss"]) == events["train/loss"][-1][1]
        assert float(row["val/loss"]) == events["val/loss"][-1][1]
        assert float(row["best val/loss"]) == min(v for _, v in events["val/loss"])
        assert int(row["epochs"]) == summary["epochs"] == 3
        assert int(row["steps"]) == summary["steps"] == len(events["train/loss"])
        assert float(row["wall_s"]) == summary["wall_time_s"]


def test_summary_markdown_has_one_row_per_run(sweep) -> None:
    lines = (sweep / "summary.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| optimizer | activation | status | train/loss | val/loss |")
    assert len(table) == 2 + len(JOBS)
    assert table[2].startswith("| sgd | relu | completed |")


def test_loss_curve_picture_is_a_real_image(sweep) -> None:
    image = matplotlib.image.imread(sweep / "loss_curves.png")
    height, width = image.shape[:2]
    assert 800 <= width <= 3000 and 300 <= height <= 2000
    assert image.std() > 0.05  # not a blank canvas


def test_one_hparams_experiment_covers_every_run(sweep) -> None:
    write_report(sweep)  # again, as resume= does: the experiment is replaced, not added to
    events = EventAccumulator(str(sweep))  # the sweep directory's own event files only
    events.Reload()
    assert len(events.Tensors(metadata.EXPERIMENT_TAG)) == 1  # TensorBoard reads the first
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG]
    experiment = metadata.parse_experiment_plugin_data(content)
    infos = {info.name: info for info in experiment.hparam_infos}
    logged = [  # what Lightning recorded for each job, beside its event files
        yaml.safe_load((sweep / name / "tensorboard" / "hparams.yaml").read_text()) for name in JOBS
    ]
    assert set(infos) == {name for params in logged for name in params}  # SGD's and Adam's
    differ = {name for name in infos if len({p[name] for p in logged if name in p}) > 1}
    assert {"optimizer", "activation"} <= differ
    assert {name for name, info in infos.items() if info.differs} == differ
    assert list(infos["activation"].domain_discrete) == ["ReLU", "Tanh"]
    assert list(infos["optimizer.betas"].domain_discrete) == ["[0.9, 0.999]"]
    tags = [metric.name.tag for metric in experiment.metric_infos]
    assert tags == ["val/loss", "val/r2", "test/loss", "test/r2", "train/loss"]


def test_report_rebuilds_for_one_run_and_for_several_sweeps(sweep, tmp_path, capsys) -> None:
    report_main([str(sweep / "0_optimizer=sgd,activation=relu")])
    one = (sweep / "0_optimizer=sgd,activation=relu" / "summary.md").read_text()
    assert "| optimizer | activation | status |" in one and one.count("| sgd | relu |") == 1
    report_main([str(sweep.parent)])  # every sweep under a common parent
    assert "3 runs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no metrics.json" in capsys.readouterr().err


def test_colour_follows_optimizer_style_activation_extra_keys_get_panels() -> None:
    configs = [
        {"optimizer": o, "activation": a, "model.hidden": h}
        for o in ("sgd", "adam")
        for a in ("relu", "tanh")
        for h in ("8", "16")
    ]
    assert plot_roles(configs) == ("optimizer", "activation", ["model.hidden"])
    many = [{"optimizer.lr": str(lr), "model.hidden": str(h)} for lr in range(4) for h in range(4)]
    assert plot_roles(many) == ("optimizer.lr", "model.hidden", ["optimizer.lr"])


def test_smoothing_is_debiased() -> None:
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert smooth([1.0])[0] == 1.0


@pytest.mark.parametrize(
    "text",
    ["{not json", "", "[1, 2]", '{"status": 5}', '{"status": "completed", "metrics": [1]}'],
    ids=["bad-json", "empty", "a-list", "status-a-number", "metrics-a-list"],
)
def test_a_malformed_metrics_json_is_skipped_with_a_warning(sweep, tmp_path, caplog, text):
    root = tmp_path / "copy"
    shutil.copytree(sweep, root)
    (root / "junk").mkdir()
    (root / "junk" / "metrics.json").write_text(text)
    rows = write_report(root).rows
    assert [row["run"] for row in rows] == list(JOBS)  # the good runs, all of them
    assert "skipped" in caplog.text and "junk" in caplog.text
    assert not list(root.glob(".*.tmp"))  # the report's files were written whole, then renamed


def test_overrides_given_as_one_string_are_one_override(sweep, tmp_path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(sweep, root)
    for name in JOBS:
        path = root / name / "metrics.json"
        summary = json.loads(path.read_text())
        summary["overrides"] = summary["overrides"][0]  # "optimizer=sgd", not a list
        path.write_text(json.dumps(summary))
    rows = write_report(root).rows
    assert "optimizer" in rows[0] and "o" not in rows[0]


@pytest.mark.parametrize("engine", ["lightning", "raw"])
@pytest.mark.parametrize("logger", ["csv", "none"])
def test_curves_reach_the_report_whatever_the_logger(make_cfg, tmp_path, logger, engine) -> None:
    cfg = make_cfg(f"logger={logger}", f"engine={engine}", name="sweep/0_job")
    train(cfg, overrides=[f"logger={logger}"])
    summary = json.loads((tmp_path / "sweep" / "0_job" / "metrics.json").read_text())
    (run,) = find_runs(tmp_path / "sweep")
    assert not (tmp_path / "sweep" / "0_job" / "tensorboard").exists()
    train_steps = [step for step, _ in run.curves["train/loss"]]
    val = [value for _, value in run.curves["val/loss"]]
    assert train_steps == list(range(summary["steps"]))  # every step once, in order
    assert run.curves["train/loss"][-1][1] == summary["metrics"]["train/loss"]
    assert val[-1] == summary["metrics"]["val/loss"]
    (row,) = write_report(tmp_path / "sweep").rows
    assert row["best val/loss"] == min(val) and len(val) == 2  # 12 steps: one and a half epochs
    if logger == "csv":  # the CSV logger's own file holds the same points
        with open(tmp_path / "sweep" / "0_job" / "csv" / "metrics.csv") as f:
            logged = [
                (int(r["step"]), float(r["val/loss"])) for r in csv.DictReader(f) if r["val/loss"]
            ]
        assert sorted(logged) == run.curves["val/loss"]


def test_a_run_without_any_curves_is_reported_with_a_warning(sweep, tmp_path, caplog) -> None:
    root = tmp_path / "copy"
    shutil.copytree(sweep, root)
    job = root / next(iter(JOBS))
    (job / "curves.csv").unlink()
    shutil.rmtree(job / "tensorboard")
    rows = write_report(root).rows
    assert rows[0]["best val/loss"] is None and rows[1]["best val/loss"] is not None
    assert "no curves for 1 of 3 runs" in caplog.text and job.name in caplog.text


def test_old_runs_without_curves_csv_read_tensorboard(sweep, tmp_path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(sweep, root)
    for name in JOBS:
        (root / name / "curves.csv").unlink()
    assert write_report(root).rows == write_report(sweep).rows


def fake_job(
    root: Path,
    name: str,
    overrides: list[str],
    val_loss: float,
    steps: int = 100,
    status: str = "completed",
    **more: float,
):
    """A finished job's metrics.json and curves.csv, written by hand: no training.

    Its val/loss falls to a best of `val_loss - 0.01` two epochs before the end, ending at
    `val_loss`; its R² is 1 - val_loss. `more` adds metrics (`test_loss=` → "test/loss").
    """
    job = root / name
    job.mkdir(parents=True)
    metrics = {"train/loss": val_loss, "val/loss": val_loss, "val/r2": 1 - val_loss}
    metrics |= {key.replace("_", "/", 1): value for key, value in more.items()}
    summary = {"status": status, "overrides": overrides, "metrics": metrics, "steps": steps}
    (job / "metrics.json").write_text(json.dumps(summary))
    val = [val_loss + 1 / (epoch + 1) for epoch in range(8)] + [val_loss - 0.01, val_loss]
    rows = ["step,tag,value"]
    rows += [f"{step},train/loss,{val_loss + 2 / (step + 1)}" for step in range(steps)]
    rows += [f"{(epoch + 1) * steps // 10 - 1},val/loss,{v}" for epoch, v in enumerate(val)]
    (job / "curves.csv").write_text("\n".join(rows) + "\n")


# Five seeds' final val/loss per (optimizer, activation): Adam clearly lower with ReLU, a
# difference within the seeds' noise with Tanh.
SEEDED = {
    ("sgd", "relu"): [0.1791, 0.1650, 0.1902, 0.1733, 0.1815],
    ("adam", "relu"): [0.1242, 0.1311, 0.1190, 0.1405, 0.1288],
    ("sgd", "tanh"): [0.1229, 0.1302, 0.1150, 0.1260, 0.1330],
    ("adam", "tanh"): [0.1240, 0.1190, 0.1310, 0.1275, 0.1201],
}


def seeded_sweep(root: Path, seeds_of_adam: range = range(5)) -> Path:
    jobs = [
        (o, a, seed, value)
        for (o, a), values in SEEDED.items()
        for seed, value in zip(seeds_of_adam if o == "adam" else range(5), values, strict=True)
    ]
    for i, (o, a, seed, value) in enumerate(jobs):
        overrides = [f"optimizer={o}", f"activation={a}", f"seed={seed}"]
        fake_job(root, f"{i}_{','.join(overrides)}", overrides, value)
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_runs_differing_only_in_seed_are_one_configuration(tmp_path) -> None:
    root = seeded_sweep(tmp_path / "sweep")
    write_report(root)
    assert len(read_csv(root / "summary.csv")) == 20  # still one row per run
    grouped = read_csv(root / "summary_by_config.csv")
    assert [(r["optimizer"], r["activation"]) for r in grouped] == list(SEEDED)
    markdown = (root / "summary.md").read_text()
    for row, values in zip(grouped, SEEDED.values(), strict=True):
        low, high = scipy_stats.t.interval(
            0.95, 4, loc=statistics.mean(values), scale=scipy_stats.sem(values)
        )
        assert int(row["n"]) == 5 and row["seeds"] == "0 1 2 3 4"
        assert float(row["val/loss mean"]) == pytest.approx(statistics.mean(values), rel=1e-12)
        assert float(row["val/loss sd"]) == pytest.approx(statistics.stdev(values), rel=1e-12)
        assert float(row["val/loss ci95 low"]) == pytest.approx(low, rel=1e-9)
        assert float(row["val/loss ci95 high"]) == pytest.approx(high, rel=1e-9)
        best = [v - 0.01 for v in values]  # the curve's minimum, not the final value
        assert float(row["best val/loss mean"]) == pytest.approx(statistics.mean(best))
        r2 = [1 - v for v in values]
        assert float(row["val/r2 mean"]) == pytest.approx(statistics.mean(r2))
        cell = f"{statistics.mean(values):.4g} ± {(high - low) / 2:.2g}"
        assert f"| {row['optimizer']} | {row['activation']} | 5 | {cell} |" in markdown


def comparison(rows: list[dict[str, str]], key: str, at: str, column: str) -> dict[str, str]:
    (row,) = [r for r in rows if (r["key"], r["at"], r["column"]) == (key, at, column)]
    return row


@pytest.mark.parametrize("paired", [True, False], ids=["same-seeds", "other-seeds"])
def test_two_configurations_are_compared_over_seeds(tmp_path, paired) -> None:
    root = seeded_sweep(tmp_path / "sweep", range(5) if paired else range(5, 10))
    write_report(root)
    rows = read_csv(root / "summary_comparisons.csv")
    markdown = (root / "summary.md").read_text()
    for activation, detectable in (("relu", True), ("tanh", False)):
        sgd, adam = SEEDED["sgd", activation], SEEDED["adam", activation]
        if paired:
            expected = scipy_stats.ttest_rel(adam, sgd)
        else:
            expected = scipy_stats.ttest_ind(adam, sgd, equal_var=False)
        low, high = expected.confidence_interval(0.95)
        row = comparison(rows, "optimizer", f"activation={activation}", "val/loss")
        assert (row["first"], row["second"]) == ("sgd", "adam")
        assert row["test"] == ("paired" if paired else "Welch")
        assert float(row["p"]) == pytest.approx(expected.pvalue, rel=1e-9)
        assert float(row["ci95 low"]) == pytest.approx(low, rel=1e-9)
        assert float(row["ci95 high"]) == pytest.approx(high, rel=1e-9)
        assert row["detectable"] == str(detectable) == str(low > 0 or high < 0)
        (sentence,) = [
            line
            for line in markdown.splitlines()
            if line.startswith(
                f"- optimizer=adam - optimizer=sgd at activation={activation}, val/loss:"
            )
        ]
        assert ("paired t-test over 5 seeds" if paired else "Welch t-test, n = 5 and 5") in sentence
        assert sentence.endswith(": adam lower" if detectable else ": no detectable difference")
        r2 = comparison(rows, "optimizer", f"activation={activation}", "val/r2")
        assert float(r2["difference (second - first)"]) == pytest.approx(
            -float(row["difference (second - first)"])
        )
    # activation has two values too: compared at each optimizer
    assert comparison(rows, "activation", "optimizer=sgd", "val/loss")["second"] == "tanh"


def test_without_repeated_seeds_there_is_no_grouped_table(sweep) -> None:
    report = write_report(sweep)
    assert report.grouped == [] and report.comparisons == []
    assert not (sweep / "summary_by_config.csv").exists()
    assert "## " not in (sweep / "summary.md").read_text()  # the per-run table alone, as before


@pytest.mark.parametrize(
    "layout",
    ["40-configs-x-5-seeds", "200-configs"],
)
def test_a_200_job_report_is_quick_and_its_picture_bounded(tmp_path, caplog, layout) -> None:
    root = tmp_path / "sweep"
    if layout == "200-configs":
        jobs = [[f"optimizer.lr={i / 1000}"] for i in range(200)]
    else:
        jobs = [
            [f"optimizer.lr={lr / 100}", f"model.hidden={h}", f"seed={s}"]
            for lr in range(1, 11)
            for h in (8, 16, 32, 64)
            for s in range(5)
        ]
    for i, overrides in enumerate(jobs):
        fake_job(root, f"{i}_{','.join(overrides)}", overrides, 0.1 + (i % 7) / 100, steps=1000)
    started = time.perf_counter()
    report = write_report(root)
    print(f"200-job report ({layout}): {time.perf_counter() - started:.1f} s")
    assert len(report.rows) == 200
    assert len(report.grouped) == (40 if layout != "200-configs" else 0)
    height, width = matplotlib.image.imread(root / "loss_curves.png").shape[:2]
    assert height <= 2600 and width <= 2200, (height, width)
    assert "shows the first 6 of" in caplog.text and "optimizer.lr=" in caplog.text


def test_per_seed_draws_each_seed_instead_of_the_band(tmp_path, capsys) -> None:
    root = seeded_sweep(tmp_path / "sweep")
    report_main([str(root)])
    band = matplotlib.image.imread(root / "loss_curves.png")
    report_main(["--per-seed", str(root)])
    lines = matplotlib.image.imread(root / "loss_curves.png")
    assert band.shape == lines.shape and abs(band - lines).sum() > 0
    printed = capsys.readouterr().out
    assert (
        "no detectable difference" in printed
        and "mean ± 95% CI over the configuration's seeds" in printed
    )
