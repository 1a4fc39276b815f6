"""The benchmarks' paired measurement (benchmarks/_common.py): the ratio of two sides timed in
pairs, its spread, and the turn-taking that produces the pairs."""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _load_common():
    path = REPO / "benchmarks" / "_common.py"
    spec = importlib.util.spec_from_file_location("bench_common_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


common = _load_common()


def test_paired_ratio_is_the_median_of_the_per_pair_ratios_with_its_quartiles():
    denom = [1.0, 2.0, 4.0, 1.0, 3.0]
    factors = [1.10, 0.90, 1.05, 1.00, 1.20]
    r = common.paired_ratio([d * f for d, f in zip(denom, factors)], denom)
    assert r["n"] == 5
    assert r["median"] == pytest.approx(1.05)
    q = statistics.quantiles(factors, n=4)
    assert (r["p25"], r["p75"]) == (pytest.approx(q[0]), pytest.approx(q[2]))
    assert r["iqr"] == pytest.approx(q[2] - q[0])
    assert r["ci_low"] <= r["median"] <= r["ci_high"]
    assert min(factors) <= r["ci_low"] and r["ci_high"] <= max(factors)


def test_a_burst_of_load_on_a_few_steps_does_not_move_the_paired_ratio():
    # the other side is 5 % slower at every pair; the machine is 3x slower for a stretch of
    # pairs and one side alone is hit by 10x spikes now and then: the ratio of the total times
    # moves, the median of the per-pair ratios does not
    base = [0.300 + 0.001 * (i % 7) for i in range(60)]
    load = [3.0 if 20 <= i < 35 else 1.0 for i in range(60)]
    off = [b * m for b, m in zip(base, load)]
    on = [1.05 * b * m * (10.0 if i % 17 == 3 else 1.0) for i, (b, m) in enumerate(zip(base, load))]
    r = common.paired_ratio(on, off)
    assert r["median"] == pytest.approx(1.05)
    assert r["ci_high"] - r["ci_low"] < 1e-9
    assert sum(on) / sum(off) > 1.5  # what the ratio of the totals would say


def test_the_bootstrap_interval_is_seeded_and_widens_with_the_scatter():
    off = [1.0] * 40
    tight = [1.0 + 0.01 * ((i * 7) % 5 - 2) for i in range(40)]
    loose = [1.0 + 0.10 * ((i * 7) % 5 - 2) for i in range(40)]
    a, b = common.paired_ratio(tight, off), common.paired_ratio(tight, off)
    assert a == b  # the same timings give the same interval
    wide = common.paired_ratio(loose, off)
    assert wide["ci_high"] - wide["ci_low"] > 5 * (a["ci_high"] - a["ci_low"]) > 0


def test_block_ratios_are_ratios_of_sums_over_consecutive_pairs():
    off = [1.0, 3.0, 2.0, 2.0, 5.0]  # the last, incomplete block is left out
    on = [2.0, 2.0, 3.0, 3.0, 50.0]
    r = common.paired_ratio(on, off, block=2)
    assert r["n"] == 2
    assert r["median"] == pytest.approx((4 / 4 + 6 / 4) / 2)


def test_paired_ratio_refuses_unpaired_timings_and_says_nan_for_none():
    with pytest.raises(ValueError, match="3 timings against 2"):
        common.paired_ratio([1.0, 2.0, 3.0], [1.0, 2.0])
    r = common.paired_ratio([], [])
    assert r["n"] == 0 and math.isnan(r["median"])
    assert "1.050 [95% 1.050-1.050" in common.format_ratio(common.paired_ratio([1.05, 2.1], [1.0, 2.0]))


class _CountingLoaderUser:
    """Stands in for Trainer.fit: iterates its loader's epoch and records the global order."""

    def __init__(self, loader, name, log):
        self.loader, self.name, self.log = loader, name, log

    def __call__(self):
        for _ in self.loader.epoch(0):
            self.log.append(self.name)
        self.log.append(f"{self.name} end")


def test_take_turns_runs_one_step_of_each_side_in_turn_and_times_every_kept_step():
    batch = (torch.zeros(1),)
    turns = common.TakeTurns(batch, steps=4, device="cpu", skip=1)
    log: list[str] = []
    sides = {n: _CountingLoaderUser(turns.loader(n), n, log) for n in ("a", "b", "c")}
    turns.run(sides)
    steps = [e for e in log if not e.endswith("end")]
    assert steps == ["a", "b", "c"] * 5  # never two steps of a side in a row, never overlapping
    assert log[-6:] == ["a", "a end", "b", "b end", "c", "c end"]  # a side's end is part of its last turn
    for n in "abc":
        assert len(turns.wall[n]) == len(turns.cpu[n]) == 4  # the warm-up step is not kept
        assert all(t >= 0 for t in turns.wall[n])


def test_take_turns_reraises_a_sides_error_without_hanging():
    turns = common.TakeTurns((torch.zeros(1),), steps=3, device="cpu", skip=0)
    log: list[str] = []

    def broken():
        for i, _ in enumerate(turns.loader_b.epoch(0)):
            if i == 1:
                raise ArithmeticError("boom")

    ok = _CountingLoaderUser(turns.loader("a"), "a", log)
    turns.loader_b = turns.loader("b")
    with pytest.raises(RuntimeError, match="side 'b' failed: ArithmeticError: boom"):
        turns.run({"a": ok, "b": broken})
