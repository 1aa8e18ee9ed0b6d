"""Uncertainty over seeds: mean with a Student-t interval, and Welch's t-test for differences.

Pure functions on plain sequences of floats (NaN and ``None`` are dropped first). With fewer
than two values there is no interval and no test; the results say so rather than inventing one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from scipy import stats as _st

#: Confidence level of every interval in the report.
CONFIDENCE = 0.95
#: Significance level of the Δ tests (two-sided, no multiple-comparison correction).
ALPHA = 0.05


def clean(values: Iterable[float | None]) -> list[float]:
    """The finite values of ``values`` as floats (``None`` and NaN dropped)."""
    out = []
    for v in values:
        if v is None:
            continue
        f = float(v)
        if math.isfinite(f):
            out.append(f)
    return out


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` values and its two-sided t-interval ``[lo, hi]`` (NaN when ``n < 2``)."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.lo)


def mean_ci(values: Iterable[float | None], confidence: float = CONFIDENCE) -> MeanCI:
    """Mean and Student-t confidence interval over independent replicates (e.g. seeds).

    With ``x̄ = (1/n) Σ x_i`` and the sample standard deviation
    ``s = sqrt(Σ (x_i − x̄)² / (n − 1))``, the interval is

        x̄ ± t_{(1+c)/2, n−1} · s / √n

    where ``t_{q, ν}`` is the q-quantile of Student's t with ν degrees of freedom and ``c`` the
    confidence level (0.95: for n = 3, t = 4.303). With ``n < 2`` the interval is undefined:
    ``lo = hi = sd = NaN`` (``n = 0`` also gives a NaN mean).
    """
    xs = clean(values)
    n = len(xs)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0, math.nan)
    mean = sum(xs) / n
    if n < 2:
        return MeanCI(mean, math.nan, math.nan, 1, math.nan)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(_st.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n, sd)


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance t-test of ``mean(a) − mean(b)``.

    ``tested`` is False when no test is possible (``reason`` says why: fewer than two values on
    a side, or zero variance on both sides); then ``t``, ``df`` and ``p`` are NaN.
    """

    diff: float
    t: float
    df: float
    p: float
    n_a: int
    n_b: int
    tested: bool
    reason: str = ""
    se: float = math.nan

    def diff_ci(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """Welch interval of the difference, ``diff ± t_{(1+c)/2, ν} · se`` (NaN if untested)."""
        if not self.tested:
            return math.nan, math.nan
        half = float(_st.t.ppf((1 + confidence) / 2, self.df)) * self.se
        return self.diff - half, self.diff + half

    def significant(self, alpha: float = ALPHA) -> bool | None:
        """True / False at level ``alpha``; None when untested."""
        return None if not self.tested else bool(self.p < alpha)


def welch_test(a: Iterable[float | None], b: Iterable[float | None]) -> WelchResult:
    """Two-sided Welch t-test of H0: E[a] = E[b] (independent samples, unequal variances).

    With sample means ``ā, b̄``, sample variances ``s_a², s_b²`` (denominator n − 1) and sizes
    ``n_a, n_b``:

        v_a = s_a² / n_a,  v_b = s_b² / n_b,  t = (ā − b̄) / sqrt(v_a + v_b)
        ν = (v_a + v_b)² / (v_a² / (n_a − 1) + v_b² / (n_b − 1))     (Welch–Satterthwaite)
        p = 2 · (1 − F_t(|t|; ν))

    Needs ``n_a, n_b ≥ 2``; when ``v_a + v_b = 0`` (every replicate equal on both sides) the
    statistic is undefined and the result is untested. ``diff = ā − b̄`` is reported whenever
    both sides have a value. Agrees with ``scipy.stats.ttest_ind(a, b, equal_var=False)``.
    """
    xa, xb = clean(a), clean(b)
    na, nb = len(xa), len(xb)
    if na == 0 or nb == 0:
        return WelchResult(math.nan, math.nan, math.nan, math.nan, na, nb, False,
                           "no values on one side")
    ma, mb = sum(xa) / na, sum(xb) / nb
    diff = ma - mb
    if na < 2 or nb < 2:
        return WelchResult(diff, math.nan, math.nan, math.nan, na, nb, False,
                           f"fewer than 2 seeds (n = {na} vs {nb})")
    va = sum((x - ma) ** 2 for x in xa) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in xb) / (nb - 1) / nb
    if va + vb == 0.0:
        return WelchResult(diff, math.nan, math.nan, math.nan, na, nb, False,
                           "zero variance on both sides")
    se = math.sqrt(va + vb)
    t = diff / se
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    p = float(2.0 * _st.t.sf(abs(t), df))
    return WelchResult(diff, t, df, p, na, nb, True, "", se)


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence).

    With the m p-values sorted ascending, ``p_(1) ≤ … ≤ p_(m)``, the adjusted values are
    ``p̃_(i) = min(1, max_{j ≤ i} (m − j + 1) · p_(j))``, returned in the input order; a
    hypothesis is rejected at level α when ``p̃ < α``. NaN p-values (untested) stay NaN and do
    not count in m.
    """
    ps = [float(p) for p in pvalues]
    tested = sorted((p, i) for i, p in enumerate(ps) if math.isfinite(p))
    m = len(tested)
    out = [math.nan] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
