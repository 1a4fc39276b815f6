"""Comparison tables: grouping, statistics, honesty markers, and a small real comparison."""

from __future__ import annotations

import math

import pytest

from engine.cli import EXIT_OK, main
from engine.compare import comparison_runs, comparison_table, to_csv, to_markdown
from engine.config import save_config, set_value
from tests.engine.conftest import tiny_config


def fake(distiller, mode, acc, seed=0):
    return {"status": "finished", "distiller": distiller, "mode": mode, "seed": seed,
            "teacher": {"test_acc": 90.0},
            "student": {"arch": "resnet8", "params": 1000, "best_acc": acc, "cpu_latency_ms": 1.0, "ece": 2.0,
                        "output_noise": 0.1},
            "export": {"bytes": {"weights": 4096}}}


def test_table_statistics_and_spread():
    runs = [fake("kd", "off", 70.0), fake("kd", "off", 72.0, 1),
            fake("kd", "stable", 75.0), fake("kd", "stable", 77.0, 1),
            fake("kd", "granularity", 71.0), fake("kd", "granularity", 73.0, 1),
            fake("none", "off", 65.0), fake("none", "off", 65.0, 1),
            {"status": "failed", "distiller": "kd", "mode": "off"}]
    table = comparison_table(runs)
    kd = next(r for r in table["rows"] if r["baseline"] == "kd")
    assert kd["off"]["mean"] == pytest.approx(71.0) and kd["off"]["n"] == 2
    assert kd["off"]["std"] == pytest.approx(math.sqrt(2.0))
    assert kd["difference"] == pytest.approx(5.0)  # the better MGD mode (stable) minus off
    assert kd["spread"] == pytest.approx(2.0) and kd["beyond_spread"] is True
    assert table["rows"][-1]["baseline"] == "none"  # the reference comes last
    md = to_markdown(table)
    assert "75.00 ± 1.41" not in md and "76.00 ± 1.41" in md and "student alone" in md
    assert "kd,71.0" in to_csv(table).replace(" ", "")


def test_one_seed_does_not_claim_significance():
    table = comparison_table([fake("kd", "off", 70.0), fake("kd", "stable", 71.0)])
    assert table["rows"][0]["beyond_spread"] is None
    assert "one seed" in to_markdown(table)


def test_plan_resets_weights_per_baseline():
    cfg = set_value(tiny_config(), "comparison.baselines", ["kd", "none"])
    cfg = set_value(cfg, "comparison.seeds", [0, 1])
    cfg = set_value(cfg, "distiller.w_ce", 0.5)
    plan = comparison_runs(cfg)
    names = [n for n, _ in plan]
    assert names[:4] == ["s0-none-off", "s0-kd-off", "s0-kd-granularity", "s0-kd-stable"]
    assert len(plan) == 8
    assert all(c.comparison.baselines == [] for _, c in plan)
    kd = dict(plan)["s0-kd-off"]
    assert kd.distiller.w_ce == 0.5  # same baseline as the config: its settings are kept
    alone = dict(plan)["s1-none-off"]
    assert alone.distiller.w_ce is None and alone.seed == 1


def test_comparison_through_the_cli(tmp_path, capsys):
    cfg = set_value(tiny_config(), "comparison.baselines", ["kd"])
    cfg = set_value(cfg, "comparison.modes", ["off", "stable"])
    path = tmp_path / "cmp.yaml"
    save_config(cfg, path)
    out = tmp_path / "cmp"
    assert main([str(path), "--out", str(out), "-q"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "| kd |" in text and "student alone" in text
    for name in ("comparison.md", "comparison.csv", "comparison.json"):
        assert (out / name).is_file()
    # the teacher was trained once: the later runs loaded it
    summaries = sorted(out.glob("s0-*/summary.json"))
    assert len(summaries) == 3
    assert "checkpoint" in (out / "s0-kd-stable" / "summary.json").read_text()


def test_agreeing_seeds_do_not_make_one_image_significant():
    runs = [fake("kd", "off", 70.0), fake("kd", "off", 70.0, 1), fake("kd", "stable", 70.25), fake("kd", "stable", 70.25, 1)]
    for r in runs:
        r["data"] = {"test_size": 400}  # one image = 0.25 points
    row = comparison_table(runs)["rows"][0]
    assert row["spread"] == pytest.approx(0.25) and row["beyond_spread"] is False
