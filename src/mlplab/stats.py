"""The statistics of a seed sweep: means with Student-t intervals, and two-group t-tests.

Training jobs do not have scipy, so the t distribution is computed here from the regularized
incomplete beta function (Numerical Recipes' continued fraction); `tests/test_stats.py` holds
every function to `scipy.stats` on fixed numbers.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 ≤ x ≤ 1."""
    if x <= 0 or x >= 1:
        return max(0.0, min(1.0, x))
    if x > (a + 1) / (a + b + 2):  # the continued fraction converges fast below this point
        return 1 - incomplete_beta(b, a, 1 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - math.log(a)
    log_front += math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    # Lentz's method for the continued fraction 1/(1+ d1/(1+ d2/(1+ ...))).
    tiny, c, d = 1e-300, 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return math.exp(log_front) * fraction


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with `df` degrees of freedom."""
    return incomplete_beta(df / 2, 0.5, df / (df + t * t))


@functools.lru_cache
def t_quantile(p: float, df: float) -> float:
    """The `p` quantile (p > 0.5) of Student's t with `df` degrees of freedom, by bisection."""
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > 2 * (1 - p):
        low, high = high, 2 * high
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if t_two_sided_p(middle, df) > 2 * (1 - p) else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Estimate:
    """A mean over n values, their sample standard deviation, and the mean's 95% interval.

    With a single value, the spread and the interval are unknown (NaN).
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def estimate(values: Sequence[float]) -> Estimate:
    """Mean, sample sd and Student-t 95% confidence interval of `values`."""
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return Estimate(n, mean, math.nan, math.nan, math.nan)
    sd = statistics.stdev(values)
    half = t_quantile((1 + CONFIDENCE) / 2, n - 1) * sd / math.sqrt(n)
    return Estimate(n, mean, sd, mean - half, mean + half)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b), its 95% interval, and the t-test's two-sided p-value."""

    test: str  # "paired" (over matched seeds) or "Welch"
    n: tuple[int, int]
    difference: float
    low: float
    high: float
    p: float

    @property
    def detectable(self) -> bool:
        """Whether the interval excludes 0 (equivalently, p < 0.05)."""
        return self.low > 0 or self.high < 0


def difference(a: Sequence[float], b: Sequence[float], paired: bool = False) -> Difference:
    """Compare two groups: a paired t-test (`a[i]` matches `b[i]`) or Welch's unequal-variance one.

    Needs at least two values in each group; without any spread the interval is the point.
    """
    if paired:
        d = [x - y for x, y in zip(a, b, strict=True)]
        diff, se, df = statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d)), len(d) - 1
    else:
        va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
        diff, se = statistics.fmean(a) - statistics.fmean(b), math.sqrt(va + vb)
        # Welch–Satterthwaite degrees of freedom
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se else 1
    p = t_two_sided_p(diff / se, df) if se else float(diff == 0)  # no spread: all or nothing
    half = t_quantile((1 + CONFIDENCE) / 2, df) * se
    test = "paired" if paired else "Welch"
    return Difference(test, (len(a), len(b)), diff, diff - half, diff + half, p)


def seed_difference(second: Mapping[str, float], first: Mapping[str, float]) -> Difference:
    """second - first over their seeds (seed → value): paired when both ran the same seeds,
    Welch's test otherwise."""
    if second.keys() == first.keys():  # the same seeds: compare each seed's pair
        return difference([second[s] for s in first], [first[s] for s in first], paired=True)
    return difference(list(second.values()), list(first.values()))
