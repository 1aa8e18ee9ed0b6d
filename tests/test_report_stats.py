"""Intervals and tests of the report: hand-computed values and scipy.stats as a reference."""

from __future__ import annotations

import math

import pytest
from scipy import stats as st

from hiddencost.report.stats import clean, mean_ci, welch_test


def test_mean_ci_hand_computed():
    # x = 1, 2, 3: mean 2, s = 1, t_{0.975, 2} = 4.302653, half-width = 4.302653 / sqrt(3)
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci.n == 3 and ci.mean == pytest.approx(2.0) and ci.sd == pytest.approx(1.0)
    half = 4.302652729911275 / math.sqrt(3)
    assert ci.lo == pytest.approx(2.0 - half, abs=1e-9)
    assert ci.hi == pytest.approx(2.0 + half, abs=1e-9)
    assert ci.has_interval


@pytest.mark.parametrize("values", [[0.61, 0.64, 0.6, 0.66], [10.0, 12.5], [3.0, 3.0, 3.0, 4.0]])
def test_mean_ci_matches_scipy(values):
    ci = mean_ci(values)
    lo, hi = st.t.interval(0.95, len(values) - 1, loc=st.tmean(values), scale=st.sem(values))
    assert (ci.lo, ci.hi) == pytest.approx((lo, hi), abs=1e-12)


def test_mean_ci_small_samples_have_no_interval():
    one = mean_ci([0.7])
    assert one.n == 1 and one.mean == 0.7 and math.isnan(one.lo) and math.isnan(one.hi)
    assert not one.has_interval
    none = mean_ci([])
    assert none.n == 0 and math.isnan(none.mean)
    # None and NaN are dropped before anything is computed
    assert mean_ci([None, 1.0, float("nan"), 3.0]).n == 2
    assert clean([None, float("inf"), 2]) == [2.0]


def test_welch_hand_computed():
    # a = 1, 2, 3 (mean 2, s² = 1); b = 4, 5, 6, 7 (mean 5.5, s² = 5/3)
    # v_a = 1/3, v_b = 5/12, se = sqrt(3/4), t = −3.5 / se
    # ν = (3/4)² / ((1/3)²/2 + (5/12)²/3)
    w = welch_test([1, 2, 3], [4, 5, 6, 7])
    assert w.tested and w.diff == pytest.approx(-3.5)
    assert w.t == pytest.approx(-3.5 / math.sqrt(0.75))
    nu = 0.5625 / ((1 / 9) / 2 + (25 / 144) / 3)
    assert w.df == pytest.approx(nu)
    assert w.p == pytest.approx(2 * st.t.sf(abs(w.t), nu))
    assert w.significant() is True and w.significant(alpha=0.001) is False


@pytest.mark.parametrize("a,b", [
    ([80.0, 82.0, 84.0], [60.0, 62.5, 64.0]),
    ([80.0, 82.0, 84.0], [79.0, 85.0, 81.0]),
    ([0.5, 0.9, 0.1, 0.4, 0.3], [0.2, 0.25]),
])
def test_welch_matches_scipy(a, b):
    w = welch_test(a, b)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert w.t == pytest.approx(ref.statistic) and w.p == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert w.diff_ci() == pytest.approx((ci.low, ci.high))


def test_welch_untested_cases():
    few = welch_test([0.8], [0.6, 0.7])
    assert not few.tested and few.significant() is None and "fewer than 2" in few.reason
    assert few.diff == pytest.approx(0.8 - 0.65)
    assert all(math.isnan(x) for x in (few.t, few.df, few.p, *few.diff_ci()))
    flat = welch_test([0.5, 0.5], [0.4, 0.4])
    assert not flat.tested and "zero variance" in flat.reason and flat.diff == pytest.approx(0.1)
    empty = welch_test([], [1.0, 2.0])
    assert not empty.tested and math.isnan(empty.diff)
