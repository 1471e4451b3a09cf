"""scripts/bench.py still runs every path and prints its JSON line (a smoke test: no timings
are judged here; the numbers belong to README "Performance")."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def test_bench_measures_every_path_and_ends_with_the_json_line(monkeypatch, capsys) -> None:
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "SIZES", {"64": (8, 16), "4096": (16, 32)})  # tiny, same code
    measure = bench.measure  # one round; fewer steps than log_every_n_steps (15) warn
    monkeypatch.setattr(bench, "measure", lambda size, steps, repeats: measure(size, 15, 1))
    monkeypatch.setattr(bench, "process_seconds", lambda arguments, repeats: 0.5)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick"])
    bench.main()
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    for size in ("64", "4096"):
        for key in (
            "lightning_vs_floor",
            "lightning_vs_raw",
            "floor_vs_raw",
            "floor_vs_floor",
            "replicas16_vs_single",
        ):
            assert summary[f"{key}_{size}"] > 0
    assert {"help_s", "cfg_s", "refused_s", "sweep400_refused_s"} <= summary.keys()
    assert {"homework_5_seeds_s", "homework_1_seed_s", "homework_5_vs_1"} <= summary.keys()
    assert len([line for line in lines if line.startswith(("8/16", "16/32"))]) == 2 * 5
