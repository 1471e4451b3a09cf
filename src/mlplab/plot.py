"""The sweep report's picture: each configuration's loss curves, its mean over seeds in a band.

Colour follows one override, line style another, rows of panels the rest; the band is the 95%
confidence interval of the mean over the configuration's seeds (Student t), step by step. Its
size is bounded, whatever the number of jobs: at most `MAX_PANEL_ROWS` rows, legends of at
most `MAX_LEGEND_ENTRIES` values, lines thinned to `MAX_POINTS` points; what is left out is
named in a warning (summary.csv has every run).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence

from mlplab.stats import CONFIDENCE, t_quantile

log = logging.getLogger(__name__)

MAX_OVERLAID_LINES = 12  # beyond this, one row of panels per colour, not one crowded panel
MAX_PANEL_ROWS = 6  # rows of (training, validation) panels
MAX_LEGEND_ENTRIES = 16  # per legend key
MAX_POINTS = 2000  # per drawn line: longer curves are thinned (after smoothing)
DASHES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]
PANELS = ("train/loss", "val/loss")

Curves = dict[str, list[tuple[int, float]]]  # tag → (step, value) pairs: one run's curves


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """TensorBoard's debiased exponential moving average, for readable noisy step curves."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


def plot_roles(configs: Sequence[dict[str, str]]) -> tuple[str | None, str | None, list[str]]:
    """Which override sets the colour, which the line style, which split panels into rows.

    Colour follows the optimizer (else the first override that tells configurations apart),
    line style the activation (else the next); any further override gets rows of panels of
    its own, and so does each colour when too many lines would share one panel.
    """
    keys = list(configs[0]) if len(configs) > 1 else []
    colour = "optimizer" if "optimizer" in keys else (keys[0] if keys else None)
    rest = [k for k in keys if k != colour]
    style = "activation" if "activation" in rest else (rest[0] if rest else None)
    facets = [k for k in rest if k != style]
    if not facets and colour and len(configs) > MAX_OVERLAID_LINES:
        facets = [colour]
    return colour, style, facets


def y_axis(values: Sequence[float]) -> tuple[bool, tuple[float, float]]:
    """Whether a loss axis showing `values` should be logarithmic (they span over a decade),
    and the limits that fit them with a 5% margin (of the decades, on a log axis)."""
    finite = [v for v in values if math.isfinite(v)] or [0.0, 1.0]
    positive = [v for v in finite if v > 0]
    if positive and max(positive) / min(positive) > 10:
        low, high = min(positive), max(positive)
        margin = (high / low) ** 0.05
        return True, (low / margin, high * margin)
    low, high = min(finite), max(finite)
    margin = (high - low) * 0.05 or 0.05 * abs(high) or 1.0
    return False, (low - margin, high + margin)


def curve_band(runs: Sequence[Curves], tag: str):
    """(steps, mean, low, high, per-run values) over the steps every run logged, or None.

    Training curves are smoothed run by run first. With one run, low and high are None.
    """
    import numpy as np

    per_run = []
    for run in runs:
        if points := run.get(tag):
            steps, values = zip(*points, strict=True)
            values = smooth(values) if tag == "train/loss" else values
            per_run.append(dict(zip(steps, values, strict=True)))
    if not per_run:
        return None
    steps = sorted(set(per_run[0]).intersection(*per_run[1:]))
    values = np.array([[curve[s] for s in steps] for curve in per_run])  # (runs, steps)
    mean = values.mean(axis=0)
    if len(per_run) < 2:
        return np.array(steps), mean, None, None, values
    half = t_quantile((1 + CONFIDENCE) / 2, len(per_run) - 1)
    half = half * values.std(axis=0, ddof=1) / math.sqrt(len(per_run))
    return np.array(steps), mean, mean - half, mean + half, values


def thinned(*arrays):
    """Every array cut to at most MAX_POINTS evenly spaced points (the same ones)."""
    import numpy as np

    length = len(arrays[0])
    if length <= MAX_POINTS:
        return arrays
    keep = np.unique(np.linspace(0, length - 1, MAX_POINTS).astype(int))
    return tuple(None if a is None else a[..., keep] for a in arrays)


def draw_group(axes, runs: Sequence[Curves], line: dict, per_seed: bool) -> list[float]:
    """One configuration's curves in one row of panels; returns the values drawn."""
    import numpy as np

    drawn: list[float] = []
    for ax, tag in zip(axes, PANELS, strict=True):
        band = curve_band(runs, tag)
        if band is None:
            continue
        steps, mean, low, high, values = thinned(*band)
        marker = (
            {"marker": "o", "markersize": 2.5} if tag == "val/loss" and len(steps) <= 60 else {}
        )
        if low is not None and not per_seed:
            ax.fill_between(steps, low, high, color=line["color"], alpha=0.18, linewidth=0)
        if per_seed:
            for run_values in values:
                ax.plot(steps, run_values, color=line["color"], alpha=0.35, linewidth=0.7)
        elif low is None and tag == "train/loss":  # one run: its raw curve, faint, beneath
            raw_steps, raw = thinned(*(np.array(a) for a in zip(*runs[0][tag], strict=True)))
            ax.plot(raw_steps, raw, color=line["color"], alpha=0.15, linewidth=0.6)
        ax.plot(steps, mean, **line, **marker)
        drawn += [float(v) for v in mean] + ([float(v) for v in low] if low is not None else [])
    return drawn


def legend_handles(values: dict[str, object], kind: str) -> list:
    """Legend entries for one key, at most MAX_LEGEND_ENTRIES (then a "… more" entry)."""
    from matplotlib.lines import Line2D

    shown = list(values.items())[:MAX_LEGEND_ENTRIES]
    if kind == "colour":
        handles = [Line2D([], [], color=c, linewidth=2.5, label=v) for v, c in shown]
    else:
        handles = [Line2D([], [], color="black", linestyle=s, label=v) for v, s in shown]
    if len(values) > len(shown):
        handles.append(Line2D([], [], linestyle="", label=f"… {len(values) - len(shown)} more"))
    return handles


def plot_curves(
    configs: Sequence[dict[str, str]],
    curves: Sequence[Sequence[Curves]],
    title: str,
    per_seed: bool = False,
    completed: Sequence[bool] | None = None,
) -> bytes:
    """The PNG of train/loss (smoothed) and val/loss against step: for each configuration (its
    overrides, its runs' curves), the mean over its seeds in a 95% band (with `per_seed`, each
    seed's line around the mean instead of the band).

    All panels share their axes; the y axis is logarithmic when losses span over a decade.
    `completed` says which configurations' curves come from completed runs: when some do, the
    axes fit theirs, and a diverged run's climb leaves the picture instead of flattening it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colour_key, style_key, facet_keys = plot_roles(configs)

    def values_of(key: str | None) -> list[str]:
        return list(dict.fromkeys(config[key] for config in configs)) if key else [""]

    colour_values = values_of(colour_key)
    cmap = plt.get_cmap("tab10" if len(colour_values) <= 10 else "viridis")
    colours = {
        v: cmap(i if len(colour_values) <= 10 else i / (len(colour_values) - 1))
        for i, v in enumerate(colour_values)
    }
    styles = {v: DASHES[i % len(DASHES)] for i, v in enumerate(values_of(style_key))}
    facets = list(dict.fromkeys(tuple(c[k] for k in facet_keys) for c in configs))
    if len(facets) > MAX_PANEL_ROWS:
        left_out = [
            ", ".join(f"{k}={v}" for k, v in zip(facet_keys, f, strict=True))
            for f in facets[MAX_PANEL_ROWS:]
        ]
        log.warning(
            "the picture shows the first %d of %d rows of panels; left out: %s%s "
            "(summary.csv has every run)",
            MAX_PANEL_ROWS,
            len(facets),
            "; ".join(left_out[:5]),
            "; …" if len(left_out) > 5 else "",
        )
        facets = facets[:MAX_PANEL_ROWS]

    height = 3.4 * len(facets) + 0.8  # inches: at most 21.2, 2544 px at 120 dpi
    fig, axes = plt.subplots(
        len(facets),
        2,
        figsize=(12, height),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    completed = list(completed) if completed is not None else [True] * len(configs)
    fit_all = not any(completed)  # nothing completed: fit whatever there is
    plotted: list[float] = []
    for config, runs, done in zip(configs, curves, completed, strict=True):
        facet = tuple(config[k] for k in facet_keys)
        if facet not in facets:
            continue
        line = {
            "color": colours[config[colour_key]] if colour_key else "C0",
            "linestyle": styles[config[style_key]] if style_key else "-",
            "linewidth": 1.6,
        }
        drawn = draw_group(axes[facets.index(facet)], runs, line, per_seed)
        plotted += drawn if done or fit_all else []

    log_scale, limits = y_axis(plotted)
    if not all(completed):  # fit the completed configurations' curves (the axes are shared)
        axes[0, 0].set_ylim(*limits)
    seeds = max(len(runs) for runs in curves) > 1
    spread = "; each seed and their mean" if per_seed else "; mean over seeds, 95% CI band"
    spread = spread if seeds else ""
    panel_names = (
        f"training loss (every logged step, EMA 0.9{spread})",
        f"validation loss (per epoch{spread})",
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

    handles = legend_handles(colours, "colour") if colour_key else []
    handles += legend_handles(styles, "style") if style_key else []
    if handles:
        fig.legend(
            handles=handles,
            title=" / ".join(k for k in (colour_key, style_key) if k),
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
        )
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.2 / height))  # room for the title
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def plot_tuning(picks: Sequence, key: str, title: str) -> bytes | None:
    """The PNG of a tuned sweep (`mlplab.tuning`): mean val/loss against the tuned value, one
    line per setting with its 95% interval, the pick starred and values where a run did not
    complete crossed at the top; beside it, each pick's test/loss. None when the tuned values
    are not numbers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    from mlplab.stats import estimate
    from mlplab.tuning import PICKED_ON, eligible

    try:
        xs = [[float(group.config[key]) for group in pick.candidates] for pick in picks]
    except ValueError:
        log.info("tuning.png not drawn: the values of %s are not numbers", key)
        return None

    def interval(group, column: str) -> tuple[float, float]:
        e = estimate(list(group.values(column).values()))
        return e.mean, 0.0 if math.isnan(e.half_width) else e.half_width

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [2, 1]})
    crossed = blended_transform_factory(left.transData, left.transAxes)
    means: list[float] = []
    for i, (pick, x) in enumerate(zip(picks, xs, strict=True)):
        colour, label = f"C{i % 10}", pick.label()
        done = [(xv, g) for xv, g in zip(x, pick.candidates, strict=True) if eligible(g)]
        if done:
            points = [(xv, *interval(g, PICKED_ON)) for xv, g in done]
            dx, dy, dh = zip(*points, strict=True)
            left.errorbar(dx, dy, yerr=dh, color=colour, marker="o", capsize=3, label=label)
            means += dy
        for xv, group in zip(x, pick.candidates, strict=True):
            if not eligible(group):
                left.plot(
                    [xv], [0.96 - 0.035 * i], "x", color=colour, markersize=9, transform=crossed
                )
        if pick.chosen is not None:
            chosen_x = x[pick.candidates.index(pick.chosen)]
            y, _ = interval(pick.chosen, PICKED_ON)
            left.plot([chosen_x], [y], "*", color=colour, markersize=16, markeredgecolor="black")
            mean, half = interval(pick.chosen, "test/loss")
            right.errorbar(
                [i], [mean], yerr=[half], color=colour, marker="*", markersize=12, capsize=4
            )
            right.annotate(
                f"{key}={pick.chosen.config[key]}",
                (i, mean),
                xytext=(8, 0),
                textcoords="offset points",
                fontsize=8,
                va="center",
            )
    positive = [x for row in xs for x in row]
    if positive and min(positive) > 0 and max(positive) / min(positive) > 10:
        left.set_xscale("log")
    if means and min(means) > 0 and max(means) / min(means) > 10:
        left.set_yscale("log")
    left.set_xlabel(key)
    left.set_ylabel(f"final {PICKED_ON}")
    left.set_title(
        f"final {PICKED_ON}: mean over seeds, 95% CI; ★ picked, × a run did not complete",
        fontsize=10,
    )
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8, frameon=False)
    right.set_xticks(range(len(picks)), [pick.label() for pick in picks], rotation=20, ha="right")
    right.set_xlim(-0.5, len(picks) - 0.3)
    right.set_ylabel("test/loss")
    right.set_title("each pick on the test split: mean, 95% CI", fontsize=10)
    right.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
