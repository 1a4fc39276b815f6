"""Welch's t-test, for comparison tables (no SciPy needed).

The two-sided p-value of Welch's unequal-variances t-test comes from Student's t
distribution, whose CDF is a regularized incomplete beta function:
``P(|T| > t) = I_x(df / 2, 1 / 2)`` with ``x = df / (df + t^2)``. The incomplete beta is
evaluated by its continued fraction (modified Lentz's method), accurate to about 1e-12.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

#: seeds per group below which no test is made
MIN_SEEDS = 3


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the regularized incomplete beta function, for ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value of Student's t statistic ``t`` with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))


@dataclass
class Welch:
    difference: float  # mean(b) - mean(a)
    t: float
    df: float
    p: float


def welch_test(a: list[float], b: list[float]) -> Welch | None:
    """Welch's t-test of ``b`` against ``a`` (two-sided); None with fewer than :data:`MIN_SEEDS` values in either."""
    if len(a) < MIN_SEEDS or len(b) < MIN_SEEDS:
        return None
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = mb - ma
    if va + vb == 0.0:  # identical values in each group: no spread at all
        return Welch(diff, math.inf if diff else 0.0, float(len(a) + len(b) - 2), 0.0 if diff else 1.0)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    return Welch(diff, t, df, t_two_sided_p(t, df))
