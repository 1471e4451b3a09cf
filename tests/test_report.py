"""The sweep report: its numbers are the runs' numbers, its picture a picture."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from mlplab.cli import CONFIG_DIR
from mlplab.report import main as report_main
from mlplab.report import plot_roles, smooth, write_report
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


def test_colour_follows_optimizer_style_activation_extra_keys_get_panels(sweep) -> None:
    from mlplab.report import Run

    def run(*overrides: str) -> Run:
        return Run("x", {"overrides": list(overrides)})

    runs = [
        run(f"optimizer={o}", f"activation={a}", f"model.hidden={h}")
        for o in ("sgd", "adam")
        for a in ("relu", "tanh")
        for h in (8, 16)
    ]
    assert plot_roles(runs) == ("optimizer", "activation", ["model.hidden"])
    many = [run(f"optimizer.lr={lr}", f"seed={s}") for lr in range(4) for s in range(4)]
    assert plot_roles(many) == ("optimizer.lr", "seed", ["optimizer.lr"])


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
    rows, _ = write_report(root)
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
    rows, _ = write_report(root)
    assert "optimizer" in rows[0] and "o" not in rows[0]
