"""The sweep report: a table row per run, statistics per configuration, and the loss curves.

`python -m mlplab.report <dir> [<dir> ...]` writes `summary.csv`, `summary.md` and
`loss_curves.png` into each directory and prints the table; `SweepReport`, a Hydra callback,
does the same at the end of every multirun. Numbers come from each job's `metrics.json`; the
curves (and the best val/loss) from its `curves.csv`, written whatever the logger (see
`mlplab.curves`; for runs older than it, from TensorBoard's event files).

Runs that differ only in `seed` form one configuration: the report then adds
`summary_by_config.csv` (n, mean, sd and 95% interval of the final and best val/loss and the
task metric), compares the two values of every override swept over exactly two (Welch's or a
paired t-test over the seeds: `summary_comparisons.csv`), and draws each configuration's mean
curve in a band. A tuned sweep (`--tune optimizer.lr`, as `experiment=lr_tuning` sets) also
gets each setting's best value of the tuned key, picked on val/loss and compared on the test
split (`mlplab.tuning`). Heavy imports (tensorboard, matplotlib, rich) happen inside the functions
that need them, so the callback costs nothing at start-up.
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
from mlplab.stats import Difference, estimate, seed_difference

log = logging.getLogger(__name__)

CURVES_FILE = "curves.csv"  # step,tag,value rows, written by mlplab.curves.CurveLogger
SCORE_COLUMNS = ("val/r2", "val/acc")  # the task metric: R² for regression, accuracy otherwise
CURVE_TAGS = ("train/loss", "val/loss")
MAX_PRINTED_COMPARISONS = 12  # in the terminal; summary.md and the CSV have them all
NUMBER = re.compile(r"^$|^[-+]?[\d.]")  # a cell to right-align (blank, or it starts a number)


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


def read_curve_rows(path: Path) -> list[list[str]]:
    """The (step, tag, value) rows of a curves.csv, as text; none if there is no such file.

    A row cut short by a kill (anything but three fields with an integer step) is dropped.
    """
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        rows = list(csv.reader(file))[1:]
    return [row for row in rows if len(row) == 3 and row[0].lstrip("-").isdigit()]


def read_curve_record(path: Path) -> dict[str, list[tuple[int, float]]]:
    """train/loss and val/loss from a job's curves.csv, as (step, value) pairs in step order."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for step, tag, value in read_curve_rows(path):
        if tag in CURVE_TAGS:
            curves.setdefault(tag, []).append((int(step), float(value)))
    return {tag: sorted(points, key=lambda point: point[0]) for tag, points in curves.items()}


def read_tensorboard_curves(tensorboard_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """train/loss and val/loss from TensorBoard's event files (runs older than curves.csv)."""
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


def read_run_curves(job: Path) -> dict[str, list[tuple[int, float]]]:
    """A job's curves: from its curves.csv, else (an older run) from its TensorBoard files."""
    if (job / CURVES_FILE).is_file():
        return read_curve_record(job / CURVES_FILE)
    return read_tensorboard_curves(job / "tensorboard")


def find_runs(root: Path) -> list[Run]:
    """Every job under `root` (at any depth) that wrote a metrics.json, in job order.

    Warns, once, about the runs without curves (their pictures and best val/loss are blank).
    """
    runs = []
    for path in sorted(root.rglob("metrics.json"), key=lambda p: natural_key(str(p))):
        job = path.parent
        summary = read_summary(path)
        if summary is None or "replica_dirs" in summary:
            continue  # (a job of replicas=R: its runs are its replica_<r>/ directories)
        runs.append(Run(str(job.relative_to(root)), summary, read_run_curves(job)))
    if blank := [run.name for run in runs if not run.curves]:
        log.warning(
            "no curves for %d of %d runs (%s%s): no %s and no TensorBoard events; "
            "their curves and best val/loss stay blank",
            len(blank),
            len(runs),
            ", ".join(blank[:3]),
            ", …" if len(blank) > 3 else "",
            CURVES_FILE,
        )
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


def outcome(run: Run, column: str) -> Any:
    """One of a run's results: a final metric, or the best (lowest) val/loss of its curve."""
    if column == "best val/loss":
        val_curve = [value for _, value in run.curves.get("val/loss", [])]
        return min(val_curve) if val_curve else None
    return run.summary.get("metrics", {}).get(column)


def summary_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per run: the varying overrides, then the outcome."""
    keys = varying_keys(runs)
    scores = [c for c in SCORE_COLUMNS if any(c in run.summary.get("metrics", {}) for run in runs)]
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.name}
        row |= {key: run.overrides.get(key, "") for key in keys}
        row["status"] = run.summary.get("status", "unknown")
        row |= {c: outcome(run, c) for c in ("train/loss", "val/loss", "best val/loss", *scores)}
        row |= {
            "epochs": run.summary.get("epochs"),
            "steps": run.summary.get("steps"),
            "wall_s": run.summary.get("wall_time_s"),
        }
        rows.append(row)
    return rows


@dataclass
class Group:
    """The runs of one configuration: the same overrides but for `seed`."""

    config: dict[str, str]  # the overrides that tell configurations apart
    runs: list[Run]

    @property
    def completed(self) -> list[Run]:
        return [run for run in self.runs if run.summary.get("status") == "completed"]

    def values(self, column: str) -> dict[str, float]:
        """seed (or run name, if no seed was set) → the column's value, completed runs only."""
        values = {}
        for run in self.completed:
            value = outcome(run, column)
            if isinstance(value, int | float):
                values[run.overrides.get("seed", run.name)] = float(value)
        return values


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """The runs grouped by configuration (all overrides but `seed`), in order of appearance."""
    keys = [key for key in varying_keys(runs) if key != "seed"] if len(runs) > 1 else []
    groups: dict[tuple[str, ...], Group] = {}
    for run in runs:
        config = {key: run.overrides.get(key, "") for key in keys}
        groups.setdefault(tuple(config.values()), Group(config, [])).runs.append(run)
    return list(groups.values())


def statistic_columns(runs: Sequence[Run]) -> list[str]:
    """What each configuration is summarised by: final and best val/loss, the task metric."""
    return ["val/loss", "best val/loss"] + [
        c for c in SCORE_COLUMNS if any(c in run.summary.get("metrics", {}) for run in runs)
    ]


def grouped_rows(groups: Sequence[Group], columns: Sequence[str]) -> list[dict[str, Any]]:
    """One row per configuration: n (completed runs), then mean, sd and 95% CI per column."""
    rows = []
    for group in groups:
        row: dict[str, Any] = dict(group.config)
        row |= {"n": len(group.completed), "not completed": len(group.runs) - len(group.completed)}
        for column in columns:
            values = list(group.values(column).values())
            e = estimate(values) if values else None
            for name, value in zip(
                ("mean", "sd", "ci95 low", "ci95 high"),
                (e.mean, e.sd, e.low, e.high) if e else (None,) * 4,
                strict=True,
            ):
                row[f"{column} {name}"] = None if value is None or math.isnan(value) else value
        row["seeds"] = " ".join(run.overrides.get("seed", "?") for run in group.completed)
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Comparison:
    """One override's two values compared at fixed other overrides, on one column."""

    key: str
    values: tuple[str, str]  # (first, second): the difference is second - first
    at: dict[str, str]
    column: str
    result: Difference
    picked: tuple[str, str] = ("", "")  # the tuned values each side was picked at (mlplab.tuning)

    def sentence(self) -> str:
        """What a reviewer reads: the difference, its interval and p, and what it supports."""
        second, r = self.values[1], self.result
        sides = [
            f"{self.key}={value}" + (f" ({picked})" if picked else "")
            for value, picked in zip(self.values, self.picked, strict=True)
        ]
        where = f" at {', '.join(f'{k}={v}' for k, v in self.at.items())}" if self.at else ""
        over = f" over {r.n[0]} seeds" if r.test == "paired" else f", n = {r.n[1]} and {r.n[0]}"
        verdict = (
            f"{second} {'higher' if r.difference > 0 else 'lower'}"
            if r.detectable
            else "no detectable difference"
        )
        return (
            f"{sides[1]} - {sides[0]}{where}, {self.column}: "
            f"{r.difference:+.3g} (95% CI {r.low:+.3g} to {r.high:+.3g}; "
            f"{r.test} t-test{over}, p = {r.p:.2g}): {verdict}"
        )


def comparisons(groups: Sequence[Group], columns: Sequence[str]) -> list[Comparison]:
    """Every override swept over exactly two values, compared at each setting of the others.

    Paired over seeds when both configurations ran the same seeds, Welch's test otherwise;
    both need two completed runs or more.
    """
    keys = list(groups[0].config) if groups else []
    found = []
    for key in keys:
        values = list(dict.fromkeys(group.config[key] for group in groups))
        if len(values) != 2:
            continue
        by_setting: dict[tuple, dict[str, Group]] = {}
        for group in groups:
            rest = tuple((k, v) for k, v in group.config.items() if k != key)
            by_setting.setdefault(rest, {})[group.config[key]] = group
        for rest, pair in by_setting.items():
            if len(pair) < 2:
                continue
            for column in columns:
                a, b = (pair[value].values(column) for value in values)
                if len(a) < 2 or len(b) < 2:
                    continue
                result = seed_difference(b, a)
                found.append(Comparison(key, (values[0], values[1]), dict(rest), column, result))
    return found


def comparison_rows(found: Sequence[Comparison]) -> list[dict[str, Any]]:
    """The comparisons as rows for summary_comparisons.csv."""
    return [
        {
            "key": c.key,
            "first": c.values[0],
            "second": c.values[1],
            "at": " ".join(f"{k}={v}" for k, v in c.at.items()),
            "first picked at": c.picked[0],  # tuned comparisons only (mlplab.tuning)
            "second picked at": c.picked[1],
            "column": c.column,
            "test": c.result.test,
            "n first": c.result.n[1],
            "n second": c.result.n[0],
            "difference (second - first)": c.result.difference,
            "ci95 low": c.result.low,
            "ci95 high": c.result.high,
            "p": c.result.p,
            "detectable": c.result.detectable,
        }
        for c in found
    ]


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


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """`columns` of `rows` as a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(display(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_table(rows: Sequence[dict[str, Any]], title: str, columns: Sequence[str]) -> None:
    """`columns` of `rows` in the terminal, as a rich table; runs that did not complete in red."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    cells = [[display(row[c]) for c in columns] for row in rows]
    numeric = {c for i, c in enumerate(columns) if all(NUMBER.match(t[i]) for t in cells)}
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left", no_wrap=True)
    for row, texts in zip(rows, cells, strict=True):
        table.add_row(
            *texts, style=None if row.get("status", "completed") == "completed" else "red"
        )
    # Never squeeze numbers into ellipses: widen past a narrow (or absent) terminal instead.
    widths = [max(len(c), *(len(t[i]) for t in cells)) for i, c in enumerate(columns)]
    console = Console()
    console.width = max(console.width, sum(widths) + 3 * len(widths) + 1)
    console.print(table)


@dataclass
class Report:
    """What write_report wrote: the rows per run and per configuration, the comparisons."""

    title: str
    rows: list[dict[str, Any]]
    grouped: list[dict[str, Any]]  # empty unless some configuration ran with several seeds
    comparisons: list[Comparison]
    tune: list[str] = field(default_factory=list)  # the tuned keys the sweep varied
    picked: list[dict[str, Any]] = field(default_factory=list)  # per setting, its pick's row
    picked_comparisons: list[Comparison] = field(default_factory=list)  # the picks, on test/*


def mean_ci(row: dict[str, Any], column: str) -> str:
    """ "mean ± half-width of the 95% CI" (the mean alone for a single run)."""
    mean, low, high = (row[f"{column} {name}"] for name in ("mean", "ci95 low", "ci95 high"))
    if mean is None:
        return ""
    return f"{mean:.4g} ± {(high - low) / 2:.2g}" if low is not None else f"{mean:.4g}"


def grouped_table_rows(grouped: Sequence[dict], columns: Sequence[str]) -> list[dict[str, Any]]:
    """The per-configuration rows as a person reads them: n, then mean ± CI per column."""
    shown = []
    for row in grouped:
        config = {k: v for k, v in row.items() if k == "n" or not k.startswith(tuple(columns))}
        config.pop("seeds"), config.pop("not completed")
        shown.append(config | {column: mean_ci(row, column) for column in columns})
    return shown


def row_columns(grouped: Sequence[dict[str, Any]]) -> list[str]:
    """The statistic columns of per-configuration rows (those with a " mean")."""
    return [c.removesuffix(" mean") for c in grouped[0] if c.endswith(" mean")]


def markdown_picks(report: Report) -> str:
    """summary.md's section on a tuned sweep: each setting's pick, and the picks compared."""
    from mlplab.tuning import PICKED_ON

    tuned = ", ".join(report.tune)
    rows = grouped_table_rows(report.picked, row_columns(report.picked))
    text = (
        f"## Tuned: {tuned}, picked on the mean {PICKED_ON}\n\n"
        f"For each setting of the other overrides, the value of {tuned} with the lowest mean "
        f"final {PICKED_ON} over its seeds; a value at which any run did not complete "
        f"(diverged, failed) is never picked. A pick's {PICKED_ON} is the best of several "
        "tries, so it is biased low; its test-split metrics, which the choice never saw, are "
        "not. Each cell: mean ± half-width of the 95% confidence interval; "
        "`summary_tuning.csv` has the rest.\n\n" + markdown_table(rows, list(rows[0]))
    )
    if report.picked_comparisons:
        text += (
            "\nThe picks compared on the test split: difference of means (second - first) with "
            "its 95% confidence interval and a two-sided t-test's p-value (paired by seed when "
            "both ran the same seeds, else Welch's; not corrected for the number of "
            "comparisons):\n\n"
        )
        text += "".join(f"- {c.sentence()}\n" for c in report.picked_comparisons)
    return text + "\n"


def markdown_report(report: Report, columns: Sequence[str]) -> str:
    """summary.md: the tuned picks, by configuration and the comparisons (when seeds repeat),
    then every run."""
    runs_table = markdown_table(report.rows, table_columns(report.rows))
    text = f"# {report.title}\n\n" + (markdown_picks(report) if report.picked else "")
    if not report.grouped:
        return text + (f"## Every run\n\n{runs_table}" if report.picked else runs_table)
    by_config = grouped_table_rows(report.grouped, columns)
    text += (
        "## By configuration, over seeds\n\n"
        "Each cell: the mean over the configuration's completed runs ± the half-width of its "
        "95% confidence interval (Student t, n - 1 degrees of freedom). "
        "`summary_by_config.csv` has the standard deviations and the intervals' ends; "
        "the band in `loss_curves.png` is the same interval, step by step.\n\n"
        + markdown_table(by_config, list(by_config[0]))
    )
    if report.comparisons:
        text += (
            "\n## Comparisons\n\n"
            "Difference of means (second - first) with its 95% confidence interval and a "
            "two-sided t-test's p-value (paired by seed when both ran the same seeds, else "
            "Welch's); an interval that covers 0 means no detectable difference. p-values are "
            "not corrected for the number of comparisons.\n\n"
        )
        text += "".join(f"- {c.sentence()}\n" for c in report.comparisons)
    return text + f"\n## Every run\n\n{runs_table}"


def add_picks(report: Report, groups: Sequence[Group], tune: Sequence[str]) -> list:
    """Fill in the report's tuned picks and their comparisons; returns the picks."""
    from mlplab import tuning

    keys = list(groups[0].config)
    report.tune = tuning.tuned_keys(keys, tune)
    if not report.tune:
        return []
    found = tuning.picks(groups, report.tune)
    tests = tuning.test_columns(groups)
    chosen = [
        pick.chosen or Group({key: pick.setting.get(key, "") for key in keys}, []) for pick in found
    ]
    report.picked = grouped_rows(chosen, [tuning.PICKED_ON, *tests])
    compared = tuning.compare_picks(found, report.tune, tests)
    report.picked_comparisons = [Comparison(**fields) for fields in compared]
    return found


def write_report(root: Path, per_seed: bool = False, tune: Sequence[str] = ()) -> Report:
    """Write summary.csv, summary.md, loss_curves.png and the HParams experiment into `root`
    (and, when seeds repeat, summary_by_config.csv and summary_comparisons.csv).

    With `tune` (keys such as `optimizer.lr`), each setting of the other overrides gets the
    tuned value with the best mean val/loss, and the picks are compared on the test split
    (`mlplab.tuning`): summary_tuning.csv, a section of summary.md, and tuning.png.
    """
    from mlplab.plot import plot_curves, plot_tuning  # imported here: they bring matplotlib

    root = Path(root)
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"no metrics.json under {root}: nothing to report")
    title = f"{len(runs)} run{'s' * (len(runs) != 1)} in {root}"
    groups = group_runs(runs)
    columns = statistic_columns(runs)
    repeated = len(groups) < len(runs)
    report = Report(
        title,
        summary_rows(runs),
        grouped_rows(groups, columns) if repeated else [],
        comparisons(groups, columns) if repeated else [],
    )
    found = add_picks(report, groups, tune) if tune else []
    write_csv(report.rows, root / "summary.csv")
    if report.grouped:
        write_csv(report.grouped, root / "summary_by_config.csv")
    if report.picked:
        write_csv(report.picked, root / "summary_tuning.csv")
    if every := report.comparisons + report.picked_comparisons:
        write_csv(comparison_rows(every), root / "summary_comparisons.csv")
    write_atomically(root / "summary.md", markdown_report(report, columns).encode())
    # A tuned sweep's picture shows the picks; any other, every configuration.
    drawn = [pick.chosen for pick in found if pick.chosen] or groups
    tuned = ", ".join(report.tune)
    heading = f"{title}: each setting at its picked {tuned}" if found else title
    # each configuration's curves: its completed runs' (all its runs' if none completed)
    curves = [
        [run.curves for run in group.completed if run.curves]
        or [run.curves for run in group.runs if run.curves]
        for group in drawn
    ]
    configs = [group.config for group in drawn]
    completed = [bool(group.completed) for group in drawn]
    picture = plot_curves(configs, curves, heading, per_seed, completed)
    write_atomically(root / "loss_curves.png", picture)
    if (
        found
        and len(report.tune) == 1
        and (picture := plot_tuning(found, tuned, f"{title}: {tuned} tuned"))
    ):
        write_atomically(root / "tuning.png", picture)
    write_experiment(root)  # TensorBoard's HParams tab over every run
    return report


def print_report(report: Report) -> None:
    """The comparisons, then the table (by configuration when seeds repeat) as the last word;
    for a tuned sweep, the picks and their comparisons after them."""
    for comparison in report.comparisons[:MAX_PRINTED_COMPARISONS]:
        print(comparison.sentence())
    if len(report.comparisons) > MAX_PRINTED_COMPARISONS:
        left = len(report.comparisons) - MAX_PRINTED_COMPARISONS
        print(f"… and {left} more comparisons in summary.md and summary_comparisons.csv")
    if report.grouped:
        rows = grouped_table_rows(report.grouped, row_columns(report.grouped))
        print("Each cell: mean ± 95% CI over the configuration's seeds (summary.md says more).")
        print_table(rows, report.title, list(rows[0]))
    else:
        print_table(report.rows, report.title, table_columns(report.rows))
    if report.picked:
        for comparison in report.picked_comparisons[:MAX_PRINTED_COMPARISONS]:
            print(comparison.sentence())
        rows = grouped_table_rows(report.picked, row_columns(report.picked))
        tuned = ", ".join(report.tune)
        print(f"Each setting's {tuned}, picked on the mean val/loss; compared on the test split.")
        print_table(rows, f"{tuned} tuned: the picks", list(rows[0]))


class SweepReport(Callback):
    """Hydra callback: at the end of a multirun, write the sweep's report and print its table.

    `per_seed: true` (`hydra.callbacks.report.per_seed=true`) draws each seed's curve instead
    of the band; `tune: optimizer.lr` (a key or a list of keys) reads the sweep as a tuning
    (`mlplab.tuning`), as `experiment=lr_tuning` does.
    """

    def __init__(self, per_seed: bool = False, tune: str | Sequence[str] | None = None) -> None:
        self.per_seed = per_seed
        self.tune = [tune] if isinstance(tune, str) else list(tune or [])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            report = write_report(sweep_dir, self.per_seed, self.tune)
        except Exception:  # a broken report must not hide the sweep's own results
            log.exception("could not write the sweep report for %s", sweep_dir)
            return
        log.info("report: %s/summary.md, %s/loss_curves.png", sweep_dir, sweep_dir)
        print_report(report)  # the sweep's last word


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m mlplab.report [--per-seed] DIR [DIR ...]`."""
    parser = argparse.ArgumentParser(
        prog="python -m mlplab.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "dirs", nargs="+", type=Path, help="a run, a sweep, or any directory of them"
    )
    parser.add_argument(
        "--per-seed", action="store_true", help="draw each seed's curve instead of the band"
    )
    parser.add_argument(
        "--tune",
        action="append",
        default=[],
        metavar="KEY",
        help="a tuned override (e.g. optimizer.lr): pick its best value on val/loss for each "
        "setting of the others, compare the picks on the test split (repeatable)",
    )
    args = parser.parse_args(argv)
    for directory in args.dirs:
        try:
            report = write_report(directory, args.per_seed, args.tune)
        except FileNotFoundError as error:
            parser.exit(2, f"error: {error}\n")
        print_report(report)


if __name__ == "__main__":
    main()
