"""A tuned comparison, read fairly: pick on validation, compare the picks on the test split.

A sweep such as `experiment=lr_tuning` trains each optimizer at several learning rates (the
*tuned* key, `optimizer.lr`), each with several seeds. Comparing the optimizers at one shared
rate favours whichever that rate suits; comparing each one's best validation number rewards
the luckiest of many tries (the minimum of noisy means is biased low). So, for each setting of
the other overrides (`optimizer=adam`, …), the report picks the tuned value with the lowest
mean final `val/loss` over the seeds, never one at which a run did not complete (diverged,
failed), and compares the picks on `test/*`, which the choice never saw.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mlplab.stats import seed_difference

log = logging.getLogger(__name__)

PICKED_ON = "val/loss"  # the final validation loss, averaged over the seeds
TEST_COLUMNS = ("test/loss", "test/r2", "test/acc")  # those the runs have are compared


class Group(Protocol):
    """A configuration's runs, as `mlplab.report.Group` holds them (not imported: the report
    imports this module)."""

    config: dict[str, str]
    runs: list[Any]

    def values(self, column: str) -> dict[str, float]: ...


@dataclass
class Pick:
    """One setting of the untuned overrides: the tuned values tried there, and the one picked."""

    setting: dict[str, str]  # e.g. {"optimizer": "adam"}: what the tuning was for
    candidates: list[Group]  # one configuration per tuned value tried, in sweep order
    chosen: Group | None  # None when no candidate's runs all completed

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.setting.items()) or "all runs"


def eligible(group: Group) -> bool:
    """Whether a configuration can be picked: every run completed with a finite val/loss."""
    values = group.values(PICKED_ON).values()
    return bool(group.runs) and len(values) == len(group.runs) and all(map(math.isfinite, values))


def mean_of(group: Group, column: str) -> float:
    return statistics.fmean(group.values(column).values())


def picks(groups: Sequence[Group], tune: Sequence[str]) -> list[Pick]:
    """Each setting of the overrides other than `tune`, with its best tuned configuration."""
    by_setting: dict[tuple[tuple[str, str], ...], list[Group]] = {}
    for group in groups:
        setting = tuple((k, v) for k, v in group.config.items() if k not in tune)
        by_setting.setdefault(setting, []).append(group)
    found = []
    for setting, candidates in by_setting.items():
        usable = [group for group in candidates if eligible(group)]
        chosen = min(usable, key=lambda group: mean_of(group, PICKED_ON), default=None)
        found.append(Pick(dict(setting), candidates, chosen))
        if chosen is None:
            log.warning(
                "no value of %s can be picked for %s: at every one, a run did not complete",
                " ".join(tune),
                found[-1].label(),
            )
    return found


def picked_value(pick: Pick, tune: Sequence[str]) -> str:
    """ "optimizer.lr=0.01": the tuned values of a pick (blank if nothing was picked)."""
    if pick.chosen is None:
        return ""
    return ", ".join(f"{key}={pick.chosen.config.get(key, '')}" for key in tune)


def compare_picks(
    found: Sequence[Pick], tune: Sequence[str], columns: Sequence[str]
) -> list[dict[str, Any]]:
    """The picks compared two by two on `columns`, where their settings differ in one key: the
    fields of a `mlplab.report.Comparison` each. Paired over seeds when both picks ran the same
    seeds, Welch's test otherwise.
    """
    compared = []
    for a, b in itertools.combinations([p for p in found if p.chosen], 2):
        differing = [key for key in a.setting if a.setting[key] != b.setting[key]]
        if len(differing) != 1:
            continue
        (key,) = differing
        at = {k: v for k, v in a.setting.items() if k != key}
        for column in columns:
            first, second = a.chosen.values(column), b.chosen.values(column)
            if len(first) < 2 or len(second) < 2:
                continue
            compared.append(
                {
                    "key": key,
                    "values": (a.setting[key], b.setting[key]),
                    "at": at,
                    "column": column,
                    "result": seed_difference(second, first),
                    "picked": (picked_value(a, tune), picked_value(b, tune)),
                }
            )
    return compared


def test_columns(groups: Sequence[Group]) -> list[str]:
    """The test-split metrics the runs recorded, in TEST_COLUMNS' order."""
    recorded = {
        key for group in groups for run in group.runs for key in run.summary.get("metrics", {})
    }
    return [column for column in TEST_COLUMNS if column in recorded]


def tuned_keys(keys: Sequence[str], tune: Sequence[str]) -> list[str]:
    """The tuned keys the sweep varied; warns about those it did not."""
    missing = [key for key in tune if key not in keys]
    if missing:
        log.warning(
            "tune: %s was not swept over several values; nothing to pick for it", ", ".join(missing)
        )
    return [key for key in tune if key in keys]
