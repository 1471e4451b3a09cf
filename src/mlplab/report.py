"""The sweep report: one table row and one pair of loss curves per run, for any directory of runs.

`python -m mlplab.report <dir> [<dir> ...]` writes `summary.csv`, `summary.md` and
`loss_curves.png` into each directory and prints the table; `SweepReport`, a Hydra callback,
does the same at the end of every multirun. Numbers come from each job's `metrics.json`; the
curves (and the best val/loss) from its TensorBoard event files, read by TensorBoard's own reader.
Heavy imports (tensorboard, matplotlib, rich) happen inside the functions that need them, so
the callback costs nothing at start-up.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mlplab.hparams import write_experiment

log = logging.getLogger(__name__)

SCORE_COLUMNS = ("val/r2", "val/acc")  # the task metric: R² for regression, accuracy otherwise
CURVE_TAGS = ("train/loss", "val/loss")
MAX_OVERLAID_RUNS = 12  # beyond this, one panel per colour instead of one crowded panel


@dataclass
class Run:
    """One job: where it is, what metrics.json says, and its loss curves."""

    name: str  # path relative to the report's directory ("." for a single run)
    summary: dict[str, Any]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def overrides(self) -> dict[str, str]:
        """`["optimizer=sgd", "+x=1"]` → `{"optimizer": "sgd", "x": "1"}`."""
        items = self.summary.get("overrides", [])
        items = [items] if isinstance(items, str) else items  # one override, not its letters
        pairs = (str(item).lstrip("+~").partition("=") for item in items)
        return {key: value for key, _, value in pairs}


def natural_key(text: str) -> list[int | str]:
    """Sort "2_…" before "10_…"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_curves(tensorboard_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """train/loss and val/loss as (step, value) pairs, every point kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tensorboard_dir.is_dir():
        return {}
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # per-file "watcher" notes
    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in CURVE_TAGS if tag in tags
    }


def find_runs(root: Path) -> list[Run]:
    """Every job under `root` (at any depth) that wrote a metrics.json, in job order."""
    runs = []
    for path in sorted(root.rglob("metrics.json"), key=lambda p: natural_key(str(p))):
        job = path.parent
        summary = read_summary(path)
        if summary is None:
            continue
        runs.append(Run(str(job.relative_to(root)), summary, read_curves(job / "tensorboard")))
    return runs


def read_summary(path: Path) -> dict[str, Any] | None:
    """A job's metrics.json, or None (with a warning) if it is not one mlplab could have written."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning("skipped %s: not readable JSON (%s)", path, error)
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("status"), str):
        log.warning("skipped %s: not a job summary (no status)", path)
        return None
    if not isinstance(summary.get("metrics", {}), dict):
        log.warning("skipped %s: its metrics are not a mapping", path)
        return None
    return summary


def varying_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value differs between runs (all of them for a single run)."""
    keys = list(dict.fromkeys(key for run in runs for key in run.overrides))
    if len(runs) == 1:
        return keys
    return [key for key in keys if len({run.overrides.get(key) for run in runs}) > 1]


def summary_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per run: the varying overrides, then the outcome."""
    keys = varying_keys(runs)
    scores = [c for c in SCORE_COLUMNS if any(c in run.summary.get("metrics", {}) for run in runs)]
    rows = []
    for run in runs:
        metrics = run.summary.get("metrics", {})
        val_curve = [value for _, value in run.curves.get("val/loss", [])]
        row: dict[str, Any] = {"run": run.name}
        row |= {key: run.overrides.get(key, "") for key in keys}
        row |= {
            "status": run.summary.get("status", "unknown"),
            "train/loss": metrics.get("train/loss"),
            "val/loss": metrics.get("val/loss"),
            "best val/loss": min(val_curve) if val_curve else None,
        }
        row |= {score: metrics.get(score) for score in scores}
        row |= {
            "epochs": run.summary.get("epochs"),
            "steps": run.summary.get("steps"),
            "wall_s": run.summary.get("wall_time_s"),
        }
        rows.append(row)
    return rows


def display(value: Any) -> str:
    """A table cell: 4 significant digits for floats, blank for unknown."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Full precision, one row per run."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    write_atomically(path, buffer.getvalue().encode())


def write_atomically(path: Path, data: bytes) -> None:
    """`data` into `path` through a temporary file: a kill leaves the old file or the new one."""
    from mlplab.checkpoint import replace_atomically  # imported here: it brings torch

    replace_atomically(path, lambda file: file.write(data))


def table_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The columns worth showing a person: "run" only when no override tells runs apart."""
    columns = list(rows[0])
    has_overrides = columns.index("status") > 1
    return columns[1:] if has_overrides else columns


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a GitHub-flavoured Markdown table."""
    columns = table_columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(display(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_table(rows: Sequence[dict[str, Any]], title: str) -> None:
    """The summary in the terminal, as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = table_columns(rows)
    cells = [[display(row[c]) for c in columns] for row in rows]
    numeric = {c for c in columns if any(isinstance(row[c], int | float) for row in rows)}
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left", no_wrap=True)
    for row, texts in zip(rows, cells, strict=True):
        table.add_row(*texts, style=None if row["status"] == "completed" else "red")
    # Never squeeze numbers into ellipses: widen past a narrow (or absent) terminal instead.
    widths = [max(len(c), *(len(t[i]) for t in cells)) for i, c in enumerate(columns)]
    console = Console()
    console.width = max(console.width, sum(widths) + 3 * len(widths) + 1)
    console.print(table)


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """TensorBoard's debiased exponential moving average, for readable noisy step curves."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


def plot_roles(runs: Sequence[Run]) -> tuple[str | None, str | None, list[str]]:
    """Which varying override sets the colour, which the line style, which split panels.

    Colour follows the optimizer (else the first varying override), line style the
    activation (else the next); any further override gets a row of panels of its own, and
    so does each colour when too many runs would share one panel.
    """
    keys = varying_keys(runs) if len(runs) > 1 else []
    colour = "optimizer" if "optimizer" in keys else (keys[0] if keys else None)
    rest = [k for k in keys if k != colour]
    style = "activation" if "activation" in rest else (rest[0] if rest else None)
    facets = [k for k in rest if k != style]
    if not facets and colour and len(runs) > MAX_OVERLAID_RUNS:
        facets = [colour]
    return colour, style, facets


def plot_curves(runs: Sequence[Run], path: Path, title: str) -> None:
    """train/loss (smoothed, over the faint raw curve) and val/loss against step, per run.

    All panels share their axes; the y axis is logarithmic when losses span over a decade.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colour_key, style_key, facet_keys = plot_roles(runs)

    def values_of(key: str | None) -> list[str]:
        return list(dict.fromkeys(run.overrides.get(key, "") for run in runs)) if key else [""]

    colour_values = values_of(colour_key)
    if len(colour_values) <= 10:
        palette = [plt.get_cmap("tab10")(i) for i in range(len(colour_values))]
    else:
        palette = [
            plt.get_cmap("viridis")(i / (len(colour_values) - 1)) for i in range(len(colour_values))
        ]
    colours = dict(zip(colour_values, palette, strict=True))
    dashes = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]
    styles = {v: dashes[i % len(dashes)] for i, v in enumerate(values_of(style_key))}
    facets = list(
        dict.fromkeys(tuple(run.overrides.get(k, "") for k in facet_keys) for run in runs)
    )

    fig, axes = plt.subplots(
        len(facets),
        2,
        figsize=(12, 3.6 * len(facets) + 0.8),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    plotted: list[float] = []
    for run in runs:
        row = facets.index(tuple(run.overrides.get(k, "") for k in facet_keys))
        line = {
            "color": colours[run.overrides.get(colour_key, "")] if colour_key else "C0",
            "linestyle": styles[run.overrides.get(style_key, "")] if style_key else "-",
            "linewidth": 1.6,
        }
        if train := run.curves.get("train/loss"):
            steps, values = zip(*train, strict=True)
            axes[row, 0].plot(steps, values, color=line["color"], alpha=0.15, linewidth=0.6)
            axes[row, 0].plot(steps, smooth(values), **line)
            plotted += values
        if val := run.curves.get("val/loss"):
            steps, values = zip(*val, strict=True)
            axes[row, 1].plot(steps, values, marker="o", markersize=2.5, **line)
            plotted += values

    positive = [v for v in plotted if v > 0 and math.isfinite(v)]
    log_scale = bool(positive) and max(positive) / min(positive) > 10
    panel_names = (
        "training loss (every logged step; EMA 0.9 over the raw curve)",
        "validation loss (per epoch)",
    )
    for row, facet in enumerate(facets):
        label = ", ".join(f"{k}={v}" for k, v in zip(facet_keys, facet, strict=True))
        for ax, name in zip(axes[row], panel_names, strict=True):
            ax.set_title(f"{name}\n{label}" if label else name, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if log_scale:
                ax.set_yscale("log")
        axes[row, 0].set_ylabel("loss" + (" (log scale)" if log_scale else ""))
    for ax in axes[-1]:
        ax.set_xlabel("optimizer step")

    handles = [
        Line2D([], [], color=c, linewidth=2.5, label=v) for v, c in colours.items() if colour_key
    ]
    handles += [
        Line2D([], [], color="black", linestyle=s, label=v) for v, s in styles.items() if style_key
    ]
    if handles:
        fig.legend(
            handles=handles,
            title=" / ".join(k for k in (colour_key, style_key) if k),
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
        )
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    write_atomically(path, buffer.getvalue())


def write_report(root: Path) -> tuple[list[dict[str, Any]], str]:
    """Write summary.csv, summary.md, loss_curves.png and the HParams experiment into `root`."""
    root = Path(root)
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"no metrics.json under {root}: nothing to report")
    rows = summary_rows(runs)
    title = f"{len(runs)} run{'s' * (len(runs) != 1)} in {root}"
    write_csv(rows, root / "summary.csv")
    write_atomically(root / "summary.md", f"# {title}\n\n{markdown_table(rows)}".encode())
    plot_curves(runs, root / "loss_curves.png", title)
    write_experiment(root)  # TensorBoard's HParams tab over every run
    return rows, title


class SweepReport(Callback):
    """Hydra callback: at the end of a multirun, write the sweep's report and print its table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            rows, title = write_report(sweep_dir)
        except Exception:  # a broken report must not hide the sweep's own results
            log.exception("could not write the sweep report for %s", sweep_dir)
            return
        log.info("report: %s/summary.md, %s/loss_curves.png", sweep_dir, sweep_dir)
        print_table(rows, title)  # the sweep's last word


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m mlplab.report DIR [DIR ...]`."""
    parser = argparse.ArgumentParser(
        prog="python -m mlplab.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "dirs", nargs="+", type=Path, help="a run, a sweep, or any directory of them"
    )
    for directory in parser.parse_args(argv).dirs:
        try:
            rows, title = write_report(directory)
        except FileNotFoundError as error:
            parser.exit(2, f"error: {error}\n")
        print_table(rows, title)


if __name__ == "__main__":
    main()
