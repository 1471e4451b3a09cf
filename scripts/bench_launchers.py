"""Wall time of one 6-job sweep with Hydra's basic launcher and with hydra/launcher=joblib.

    python scripts/bench_launchers.py                # jobs of ~5 s of training each
    python scripts/bench_launchers.py --epochs 20    # shorter jobs: where joblib stops paying

The basic launcher runs the jobs one after another in one process (torch then uses every
core for one job); joblib runs one job per core in worker processes, each with its share of
the cores (see mlplab.cli.share_cores_between_workers), after paying once to start them and
import torch and Lightning in each. Rounds alternate the order; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = [
    "optimizer=sgd,adam",
    "activation=relu,tanh,gelu",
    "extras.print_config=false",
    "trainer.enable_progress_bar=false",
]


def sweep_seconds(epochs: int, launcher: list[str]) -> tuple[float, float]:
    """Wall time of the whole sweep, and the mean training time of its jobs (metrics.json)."""
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "train.py"),
                *SWEEP,
                f"trainer.max_epochs={epochs}",
                *launcher,
                "-m",
            ],
            cwd=scratch,
            check=True,
            capture_output=True,
        )
        elapsed = time.perf_counter() - started
        jobs = [json.loads(p.read_text()) for p in Path(scratch).rglob("metrics.json")]
    assert len(jobs) == 6 and all(job["status"] == "completed" for job in jobs)
    return elapsed, statistics.mean(job["wall_time_s"] for job in jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=80, help="trainer.max_epochs of each job")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    launchers = {"basic": [], "joblib": ["hydra/launcher=joblib"]}
    times: dict[str, list[float]] = {name: [] for name in launchers}
    for round_ in range(args.rounds):
        order = list(launchers) if round_ % 2 == 0 else list(reversed(launchers))
        for name in order:
            elapsed, job_seconds = sweep_seconds(args.epochs, launchers[name])
            times[name].append(elapsed)
            print(
                f"round {round_}: {name:<6} sweep {elapsed:6.1f} s, "
                f"jobs train {job_seconds:.1f} s each"
            )
    basic, joblib = (statistics.median(times[name]) for name in launchers)
    print(
        f"6 jobs of {args.epochs} epochs: basic {basic:.1f} s, joblib {joblib:.1f} s, "
        f"speed-up {basic / joblib:.2f}x"
    )
    print(
        json.dumps(
            {
                "epochs": args.epochs,
                "basic_s": round(basic, 2),
                "joblib_s": round(joblib, 2),
                "joblib_speedup": round(basic / joblib, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
