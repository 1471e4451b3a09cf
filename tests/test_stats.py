"""The report's statistics, held to scipy.stats on fixed numbers (scipy: the test extras only)."""

from __future__ import annotations

import math

import pytest
from scipy import special
from scipy import stats as scipy_stats

from mlplab.stats import difference, estimate, incomplete_beta, t_quantile, t_two_sided_p

SGD = [0.1791, 0.1650, 0.1902, 0.1733, 0.1815]  # five seeds' final val/loss, say
ADAM = [0.1242, 0.1311, 0.1190, 0.1405, 0.1288]
CLOSE = [0.1795, 0.1640, 0.1921, 0.1700, 0.1850]  # overlaps SGD: no difference to detect


@pytest.mark.parametrize(("a", "b"), [(0.5, 0.5), (2.5, 0.5), (0.5, 7), (15, 0.5), (3, 40)])
@pytest.mark.parametrize("x", [1e-6, 0.01, 0.3, 0.5, 0.77, 0.999])
def test_incomplete_beta_matches_scipy(a, b, x) -> None:
    assert incomplete_beta(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7.3, 10, 29, 100, 1000])
def test_t_quantile_and_tail_match_scipy(df) -> None:
    for p in (0.9, 0.975, 0.995):
        assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)
    for t in (0.0, 0.4, 2.0, 12.7, -3.5):
        assert t_two_sided_p(t, df) == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-9)


def test_estimate_is_the_mean_sample_sd_and_student_t_interval() -> None:
    e = estimate(SGD)
    low, high = scipy_stats.t.interval(
        0.95, len(SGD) - 1, loc=scipy_stats.tmean(SGD), scale=scipy_stats.sem(SGD)
    )
    assert (e.n, e.mean, e.sd) == (
        5,
        pytest.approx(sum(SGD) / 5),
        pytest.approx(scipy_stats.tstd(SGD)),
    )
    assert (e.low, e.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))


def test_one_value_has_a_mean_and_no_interval() -> None:
    e = estimate([0.3])
    assert e.mean == 0.3 and math.isnan(e.sd) and math.isnan(e.low)


@pytest.mark.parametrize(("b", "detectable"), [(ADAM, True), (CLOSE, False)], ids=["adam", "close"])
def test_welch_matches_scipy(b, detectable) -> None:
    d = difference(SGD, b)
    scipy_result = scipy_stats.ttest_ind(SGD, b, equal_var=False)
    low, high = scipy_result.confidence_interval(0.95)
    assert d.test == "Welch" and d.difference == pytest.approx(sum(SGD) / 5 - sum(b) / 5)
    assert d.p == pytest.approx(scipy_result.pvalue, rel=1e-9)
    assert (d.low, d.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert d.detectable is detectable is bool(scipy_result.pvalue < 0.05)


@pytest.mark.parametrize(("b", "detectable"), [(ADAM, True), (CLOSE, False)], ids=["adam", "close"])
def test_paired_matches_scipy(b, detectable) -> None:
    d = difference(SGD, b, paired=True)
    scipy_result = scipy_stats.ttest_rel(SGD, b)
    low, high = scipy_result.confidence_interval(0.95)
    assert d.test == "paired" and d.p == pytest.approx(scipy_result.pvalue, rel=1e-9)
    assert (d.low, d.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert d.detectable is detectable is bool(scipy_result.pvalue < 0.05)


def test_unequal_group_sizes_welch_matches_scipy() -> None:
    d = difference(SGD[:3], ADAM)
    scipy_result = scipy_stats.ttest_ind(SGD[:3], ADAM, equal_var=False)
    assert d.n == (3, 5) and d.p == pytest.approx(scipy_result.pvalue, rel=1e-9)
