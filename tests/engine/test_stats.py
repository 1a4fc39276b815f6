"""Welch's t-test against published t-table values and a hand computation."""

from __future__ import annotations

import math

import pytest

from engine.stats import regularized_beta, t_two_sided_p, welch_test


@pytest.mark.parametrize("t, df", [(12.706, 1), (4.303, 2), (2.776, 4), (2.228, 10), (2.042, 30), (1.962, 1000)])
def test_two_sided_p_at_the_t_tables_5_percent_critical_values(t, df):
    assert t_two_sided_p(t, df) == pytest.approx(0.05, abs=2e-4)


@pytest.mark.parametrize("t, df, p", [(3.169, 10, 0.01), (4.604, 4, 0.01), (1.812, 10, 0.10), (0.0, 7, 1.0)])
def test_two_sided_p_at_other_table_values(t, df, p):
    assert t_two_sided_p(t, df) == pytest.approx(p, abs=2e-4)


def test_regularized_beta_closed_forms():
    # I_x(1, 1) = x;  I_x(a, 1) = x^a;  I_x(1, b) = 1 - (1 - x)^b
    for x in (0.1, 0.5, 0.93):
        assert regularized_beta(1, 1, x) == pytest.approx(x, rel=1e-12)
        assert regularized_beta(3.5, 1, x) == pytest.approx(x ** 3.5, rel=1e-10)
        assert regularized_beta(1, 2.5, x) == pytest.approx(1 - (1 - x) ** 2.5, rel=1e-10)


def test_welch_by_hand():
    # a = [1, 2, 3], b = [4, 5, 6]: variances 1, so t = 3 / sqrt(1/3 + 1/3), df = (2/3)^2 / (2 (1/3)^2 / 2) = 4
    w = welch_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert w.difference == 3.0 and w.t == pytest.approx(3 / math.sqrt(2 / 3)) and w.df == pytest.approx(4.0)
    assert 0.02 < w.p < 0.025  # between the table's 3.747 (p 0.02) and 2.776 (p 0.05) at df 4
    assert welch_test([1.0, 2.0], [4.0, 5.0, 6.0]) is None  # fewer than three seeds: no test
    same = welch_test([70.0, 70.0, 70.0], [70.0, 70.0, 70.0])
    assert same.p == 1.0
