"""The README's commands, run as typed (plus where to write), as real subprocesses. Slow."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

from . import forked
from .conftest import ROOT, children_of
from .test_engines import scalars

pytestmark = pytest.mark.slow


def run_train(*args: str, env: dict[str, str | None] | None = None) -> str:
    """`python train.py <args>` from the repository root; returns its console output."""
    done = forked.run(ROOT, "train.py", *args, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def tensorboard_runs(logdir: Path) -> dict[str, dict[str, list[int]]]:
    """run name → tag → logged steps, as the TensorBoard server would list them."""
    multiplexer = EventMultiplexer(tensor_size_guidance={"scalars": 0})  # 0: keep every point
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return {
        run: {tag: [e.step for e in multiplexer.Tensors(run, tag)] for tag in tags}
        for run, tags in multiplexer.PluginRunToTagToContent("scalars").items()
    }


def check_job(job_dir: Path) -> dict:
    """A finished job's directory holds metrics.json, a loadable checkpoint and event files."""
    summary = json.loads((job_dir / "metrics.json").read_text())
    assert summary["status"] == "completed"
    checkpoint = torch.load(job_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == summary["steps"]
    assert list((job_dir / "tensorboard").glob("events.out.tfevents.*"))
    return summary


@pytest.mark.parametrize("engine_args", [[], ["engine=raw"]], ids=["lightning", "raw"])
def test_single_run_with_defaults(tmp_path, engine_args) -> None:
    output = run_train(*engine_args, f"hydra.run.dir={tmp_path}/run")
    summary = check_job(tmp_path / "run")
    assert summary["engine"] == ("raw" if engine_args else "lightning")
    assert summary["epochs"] == 20 and summary["metrics"]["val/r2"] > 0.5  # it learned
    assert "final metrics" in output and "val/loss" in output
    runs = tensorboard_runs(tmp_path / "run")
    assert list(runs) == ["tensorboard"]
    # every trainer.log_every_n_steps (15) optimizer steps, the README's default
    assert runs["tensorboard"]["train/loss"] == list(range(14, summary["steps"], 15))


def test_one_job_multirun(tmp_path) -> None:
    run_train(
        "optimizer=sgd",
        "activation=tanh",
        "trainer.max_epochs=1",
        "data.num_samples=400",
        f"hydra.sweep.dir={tmp_path}",
        "-m",
    )
    (job,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name != ".hydra"]
    overrides = ["optimizer=sgd", "activation=tanh", "trainer.max_epochs=1", "data.num_samples=400"]
    assert job.name == "0_" + ",".join(overrides)
    assert check_job(job)["overrides"] == overrides


@pytest.fixture(scope="session")
def sweep(tmp_path_factory) -> Path:
    """The README's 6-job sweep, shortened to 2 epochs of 1000 samples (10 steps each, not
    39): run once per test session.

    Under pytest-xdist each worker is a session: the first to get here runs the sweep in the
    directory the workers share, the others wait for it (an OS lock) and read it.
    """
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # this test run's, shared by its workers
    sweep_dir = shared / "six_job_sweep"
    with open(shared / "six_job_sweep.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (sweep_dir / "summary.csv").exists():
            run_train(
                "optimizer=sgd,adam",
                "activation=relu,tanh,gelu",
                "trainer.max_epochs=2",
                "trainer.log_every_n_steps=1",
                "data.num_samples=1000",
                f"hydra.sweep.dir={sweep_dir}",
                "-m",
            )
    return sweep_dir


def jobs_of(sweep_dir: Path) -> list[Path]:
    return sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0])
    )


def test_six_job_sweep_gives_six_separate_tensorboard_runs(sweep) -> None:
    jobs = jobs_of(sweep)
    assert len(jobs) == 6
    runs = tensorboard_runs(sweep)
    assert sorted(runs) == sorted(f"{job.name}/tensorboard" for job in jobs)
    combos = set()
    for job in jobs:
        summary = check_job(job)
        optimizer, activation, *_ = summary["overrides"]
        combos.add((optimizer, activation))
        assert job.name.endswith(
            f"{optimizer},{activation},trainer.max_epochs=2,trainer.log_every_n_steps=1,"
            "data.num_samples=1000"
        )
        steps = runs[f"{job.name}/tensorboard"]
        # one job per run: each step logged exactly once, as many as the job took
        assert steps["train/loss"] == list(range(summary["steps"]))
        assert len(steps["val/loss"]) == summary["epochs"] == 2
    assert len(combos) == 6


def test_sweep_ends_with_its_report(sweep) -> None:
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["run"] for row in rows] == [job.name for job in jobs_of(sweep)]
    assert [(row["optimizer"], row["activation"]) for row in rows] == [
        (o, a) for o in ("sgd", "adam") for a in ("relu", "tanh", "gelu")
    ]
    for row, job in zip(rows, jobs_of(sweep), strict=True):
        metrics = json.loads((job / "metrics.json").read_text())["metrics"]
        assert float(row["val/loss"]) == metrics["val/loss"]
    assert (sweep / "summary.md").read_text().count("| completed |") == 6
    assert (sweep / "loss_curves.png").stat().st_size > 20_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def serve_tensorboard(logdir: Path, log_path: Path) -> Iterator[str]:
    """The real TensorBoard server over `logdir`, on a free loopback port, once it has read
    every train/loss point of every run in it; stopped after."""
    port = free_port()
    log = open(log_path, "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--samples_per_plugin",
            "scalars=1000000",  # serve every point (its "0" serves none with fast loading)
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    expected = {
        str(events.parent.relative_to(logdir)): len(scalars(events.parent.parent)["train/loss"])
        for events in logdir.glob("**/tensorboard/events.out.tfevents.*")
    }

    def loaded() -> bool:
        # The server lists runs before it has read them; wait until every point is in.
        tags = http_json(f"{base}/data/plugin/scalars/tags")
        if set(tags) != set(expected):
            return False
        for run, count in expected.items():
            query = urllib.parse.urlencode({"run": run, "tag": "train/loss"})
            if len(http_json(f"{base}/data/plugin/scalars/scalars?{query}")) != count:
                return False
        return True

    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if loaded():
                    break
            except OSError:  # not listening yet, or the tag is not known yet (HTTP 400)
                pass
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "TensorBoard did not serve the runs within 60 s"
            time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def tensorboard_server(sweep, tmp_path):
    """The real TensorBoard server over the six-job sweep."""
    with serve_tensorboard(sweep, tmp_path / "tensorboard.log") as base:
        yield base


def hparams_tab(base: str) -> tuple[dict, list[dict]]:
    """What the HParams tab shows: the experiment (its columns) and the session groups (rows)."""
    experiment = http_json(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
    groups = http_json(
        f"{base}/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "startIndex": 0,
            "sliceSize": 100,
            "allowedStatuses": [
                "STATUS_UNKNOWN",
                "STATUS_SUCCESS",
                "STATUS_FAILURE",
                "STATUS_RUNNING",
            ],
        },
    )["sessionGroups"]
    return experiment, groups


def test_tensorboard_server_serves_every_run_and_its_hparams(sweep, tensorboard_server) -> None:
    base = tensorboard_server
    job_runs = sorted(f"{job.name}/tensorboard" for job in jobs_of(sweep))
    runs = http_json(f"{base}/data/runs")
    assert sorted(runs) == [".", *job_runs]  # ".": the sweep's experiment summary, no data
    for run in job_runs:
        query = urllib.parse.urlencode({"run": run, "tag": "train/loss"})
        served = [
            (step, value)
            for _, step, value in http_json(f"{base}/data/plugin/scalars/scalars?{query}")
        ]
        assert served == scalars(sweep / run.removesuffix("/tensorboard"))["train/loss"]

    experiment, groups = hparams_tab(base)
    infos = {info["name"]: info for info in experiment["hparamInfos"]}
    # every run's hyperparameters: Adam's and SGD's own included, lists as text
    assert {"optimizer", "activation", "optimizer.lr", "model.hidden"} <= set(infos)
    assert {"optimizer.betas", "optimizer.eps", "optimizer.momentum"} <= set(infos)
    assert infos["optimizer.betas"]["domainDiscrete"] == ["[0.9, 0.999]"]
    assert sorted(infos["optimizer"]["domainDiscrete"]) == ["Adam", "SGD"]
    assert sorted(infos["activation"]["domainDiscrete"]) == ["GELU", "ReLU", "Tanh"]
    # differs: exactly the hyperparameters whose values differ between the served runs
    assert len(groups) == 6
    differ = {
        name
        for name in infos
        if len({json.dumps(g["hparams"][name]) for g in groups if name in g["hparams"]}) > 1
    }
    assert {"optimizer", "activation"} <= differ
    assert {name for name, info in infos.items() if info.get("differs")} == differ
    shown_first = [info["name"] for info in experiment["hparamInfos"]][: len(differ)]
    assert set(shown_first) == differ  # the tab shows the first five columns
    assert {m["name"]["tag"] for m in experiment["metricInfos"]} == {
        "val/loss",
        "val/r2",
        "test/loss",
        "test/r2",
        "train/loss",
    }
    for group in groups:
        metrics = json.loads(
            (sweep / group["name"].removesuffix("/tensorboard") / "metrics.json").read_text()
        )
        shown = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        for tag in ("val/loss", "val/r2", "test/loss", "test/r2", "train/loss"):
            assert shown[tag] == pytest.approx(metrics["metrics"][tag], rel=1e-7)
        optimizer = group["hparams"]["optimizer"]
        assert optimizer in {"SGD", "Adam"}
        assert ("optimizer.betas" in group["hparams"]) == (optimizer == "Adam")


def test_tensorboard_hparams_tab_of_a_single_run(tmp_path) -> None:
    run_train("trainer.max_epochs=2", f"hydra.run.dir={tmp_path}/run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    with serve_tensorboard(tmp_path / "run", tmp_path / "tensorboard.log") as base:
        experiment, groups = hparams_tab(base)
    hparams = {info["name"] for info in experiment["hparamInfos"]}
    assert {"optimizer", "activation", "optimizer.lr", "optimizer.betas"} <= hparams
    assert {m["name"]["tag"] for m in experiment["metricInfos"]} >= {"val/loss", "test/r2"}
    (group,) = groups
    assert group["hparams"]["optimizer"] == "Adam"
    shown = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    assert shown["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-7)
    assert shown["test/r2"] == pytest.approx(metrics["test/r2"], rel=1e-7)


def test_make_tensorboard_serves_a_sweep_by_name_on_a_free_port(tmp_path) -> None:
    sweeps = tmp_path / "sweeps"
    for name in ("older", "newer"):
        (sweeps / name).mkdir(parents=True)
    os.utime(sweeps / "older", (0, 0))
    venv = Path(sys.executable).parent.parent  # this one, built or not by make: never rebuilt
    make = ["make", "-s", "-o", f"{venv}/.installed", "tensorboard", f"VENV={venv}"]
    make.append(f"SWEEPS={sweeps}")
    latest = subprocess.run([*make, "-n"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert f'--logdir "{sweeps}/newer"' in latest.stdout
    missing = subprocess.run([*make, "SWEEP=typo"], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2
    assert f"no directory {sweeps}/typo; the sweeps in {sweeps}: newer, older" in missing.stderr

    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # already taken by another program: as good
            taken.bind(("127.0.0.1", 6006))
            taken.listen()
        server = subprocess.Popen(
            [*make, "SWEEP=older"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # make, its shell and TensorBoard: stopped together below
        )
        try:
            output = ""
            while "http://" not in output and (line := server.stdout.readline()):
                output += line
            assert f"TensorBoard for {sweeps}/older\n" in output
            base = re.search(r"http://127\.0\.0\.1:(\d+)/", output)
            assert base and base[1] != "6006", output
            assert http_json(f"{base[0]}data/environment")["data_location"] == f"{sweeps}/older"
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def test_homework_experiment_is_one_command(tmp_path) -> None:
    output = run_train(  # no -m: the experiment declares itself a sweep
        "experiment=homework",
        "replicas=2",  # two of its five seeds (each job's replicas), to keep the test short
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "data.num_samples=400",
        f"hydra.sweep.dir={tmp_path}",
    )
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["optimizer"], row["activation"], row["seed"]) for row in rows] == [
        (o, a, s) for o in ("sgd", "adam") for a in ("relu", "tanh", "gelu") for s in "01"
    ]
    with open(tmp_path / "summary_by_config.csv") as f:
        configs = list(csv.DictReader(f))
    assert [(c["optimizer"], c["activation"], c["n"]) for c in configs] == [
        (o, a, "2") for o in ("sgd", "adam") for a in ("relu", "tanh", "gelu")
    ]
    assert "optimizer=adam - optimizer=sgd at activation=tanh, val/loss:" in output
    table_end = output.rindex("└")  # the rich table's last line: nothing follows it
    assert output.rindex("12 runs in") > output.rindex("final metrics")
    assert output.rindex("mean ± 95% CI over the configuration's seeds") > output.rindex("p = ")
    assert output[table_end:].count("\n") <= 1, output[table_end:]


def test_joblib_launcher_runs_the_sweep_in_parallel_workers(tmp_path) -> None:
    run_train(
        "optimizer=sgd,adam",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "data.num_samples=400",
        "hydra/launcher=joblib",
        f"hydra.sweep.dir={tmp_path}",
        "-m",
        # a thread per core asked for: joblib passes that on to its workers (and without it
        # would give each its share of the cores itself); mlplab gives each worker its share
        env={name: str(os.cpu_count()) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    )
    jobs = jobs_of(tmp_path)
    assert len(jobs) == 2 and (tmp_path / "summary.csv").exists()
    for job in jobs:
        summary = check_job(job)
        assert summary["torch_threads"] == 1  # n_jobs=-1: one worker per core, one thread each


def test_joblib_workers_stop_when_their_sweep_process_is_killed(tmp_path) -> None:
    sweep = forked.start(
        ROOT,
        str(ROOT / "train.py"),
        "optimizer=sgd,adam",
        "data.num_samples=300",  # small epochs: the jobs train on until killed
        "trainer.max_epochs=100000",
        "extras.print_config=false",
        "trainer.enable_progress_bar=false",
        "hydra/launcher=joblib",
        f"hydra.sweep.dir={tmp_path}",
        "-m",
    )
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("*/metrics.json"))) < 2:  # both jobs train
        assert sweep.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    workers = children_of(sweep.pid)
    assert workers
    sweep.kill()
    sweep.wait()
    deadline = time.monotonic() + 60
    while (alive := [pid for pid in workers if Path(f"/proc/{pid}").exists()]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    for pid in alive:  # leave nothing behind, whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"workers still training after their sweep was killed: {alive}"
    statuses = [json.loads(p.read_text())["status"] for p in tmp_path.glob("*/metrics.json")]
    assert statuses == ["interrupted"] * 2  # each job said how it ended before its worker did
