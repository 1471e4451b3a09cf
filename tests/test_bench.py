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
    measure, step_overhead = bench.measure, bench.step_overhead  # one short round each
    monkeypatch.setattr(bench, "measure", lambda size, steps, epochs, n: measure(size, 8, 2, 1))
    monkeypatch.setattr(bench, "step_overhead", lambda size, steps, e: step_overhead(size, 8, 2))
    monkeypatch.setattr(bench, "process_seconds", lambda arguments, repeats: 0.5)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick"])
    bench.main()
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    for key in (
        "lightning_vs_raw_64",
        "lightning_vs_floor_64",
        "lightning_vs_raw_4096",
        "loader_vs_raw_64",
        "help_s",
        "cfg_s",
        "refused_s",
        "step_overhead_us_64",
        "step_overhead_us_4096",
    ):
        assert key in summary
    assert all(summary[key] > 0 for key in summary if "_vs_" in key)
    assert len([line for line in lines if line.startswith(("8/16", "16/32"))]) == 2 * 5 + 2
