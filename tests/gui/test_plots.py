"""Plots: the run record, decimation and smoothing, comparing runs, hover, saving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.config import ExperimentConfig, save_config
from engine.events import (EpochEnd, Evaluation, HeadAccuracies, NoiseCurve, RunFinished, RunStarted, StageStarted,
                           StepLosses)
from mgd_gui.plots.decimate import decimate, smooth
from mgd_gui.run.record import RunRecord


def fake_events(name: str, scale: float = 1.0) -> list[dict]:
    events = [RunStarted(f"/runs/{name}", {"name": name}, "cpu"), StageStarted("student", 2, 4)]
    for epoch in (1, 2):
        for step in range(1, 5):
            events.append(StepLosses("student", epoch, step, 4, {"total": scale * (3 - epoch - step / 10),
                                                                 "ce": 1.0, "code1_d64": 0.2}, 0.05))
        events.append(EpochEnd("student", epoch, 2, {"total": scale * (2.5 - epoch), "ce": 1.0}, 50.0 + epoch,
                               40.0 + 10 * epoch * scale, 0.05, 1.0, {"best_acc": 40.0 + 10 * epoch * scale}))
    confusion = [[5, 1, 0], [0, 4, 2], [1, 0, 6]]
    events += [Evaluation("student", "student", 2, 78.9, ["a", "b", "c"], confusion),
               HeadAccuracies([{"dim": 64, "temperature": 2.0, "test_acc": 70.0, "epoch": 2},
                               {"dim": 256, "temperature": 8.0, "test_acc": 75.0, "epoch": 2}], 80.0),
               NoiseCurve("teacher", [0.0, 0.1, 0.2], [80.0, 78.0, 70.0]),
               NoiseCurve("student", [0.0, 0.1, 0.2], [60.0 * scale, 58.0, 50.0]),
               RunFinished(f"/runs/{name}", {"status": "finished"})]
    return [e.to_dict() for e in events]


def write_run(root: Path, name: str, scale: float) -> Path:
    path = root / f"20260101-00000{int(scale)}-{name}"
    path.mkdir(parents=True)
    save_config(ExperimentConfig(name=name), path / "config.yaml")
    (path / "summary.json").write_text(json.dumps({"name": name, "status": "finished",
                                                   "started": f"2026-01-01T00:00:0{int(scale)}"}))
    with open(path / "metrics.jsonl", "w") as fh:
        for event in fake_events(name, scale):
            fh.write(json.dumps(event) + "\n")
        fh.write('{"event": "StepLo')  # a run killed mid-line
    return path


def test_record_collects_what_the_plots_need():
    record = RunRecord.from_events(fake_events("a"))
    assert record.label == "a" and record.status == "finished"
    assert len(record.step_losses["student"]["total"]) == 8
    assert record.step_losses["student"]["total"].x[:2] == [0.25, 0.5]
    assert record.epoch_losses["student"]["total"].y == [1.5, 0.5]
    assert record.accuracy["student"]["test"].y == [50.0, 60.0]
    assert record.accuracy["student"]["best_acc"].y == [50.0, 60.0]
    assert record.evaluations["student"]["classes"] == ["a", "b", "c"]
    assert [h["dim"] for h in record.heads] == [64, 256] and record.teacher_acc == 80.0
    assert record.noise["student"][1] == [60.0, 58.0, 50.0]


def test_a_resumed_run_replaces_the_repeated_tail():
    record = RunRecord()
    for step in (1, 2, 3):
        record.feed(StepLosses("teacher", 1, step, 4, {"total": float(step)}, 0.1).to_dict())
    record.feed(StepLosses("teacher", 1, 2, 4, {"total": 9.0}, 0.1).to_dict())  # logged again after resuming
    series = record.step_losses["teacher"]["total"]
    assert series.x == [0.25, 0.5] and series.y == [1.0, 9.0]


def test_decimate_keeps_extremes_and_bounds_the_size():
    x = np.arange(100_000, dtype=float)
    y = np.sin(x / 500)
    y[12_345] = 50.0
    y[54_321] = -50.0
    dx, dy = decimate(x, y, max_points=2000)
    assert len(dx) <= 2000 and np.all(np.diff(dx) > 0)
    assert 50.0 in dy and -50.0 in dy
    short_x, short_y = decimate(x[:10], y[:10], max_points=2000)
    assert len(short_x) == 10


def test_smooth_is_an_unbiased_moving_average():
    y = np.array([1.0, 1.0, 1.0, 5.0])
    s = smooth(y, 0.5)
    assert s[0] == 1.0 and s[1] == 1.0 and 1.0 < s[3] < 5.0
    assert np.array_equal(smooth(y, 0.0), y)


def test_panels_draw_one_run_and_hover_shows_values(window):
    record = RunRecord.from_events(fake_events("a"))
    plots = window.plots
    plots.set_records([record])
    for panel in plots.panels():
        panel.refresh(force=True)
    assert {n for n, _, _ in plots.losses.series} >= {"total", "ce", "code1_d64"}
    assert plots.heads.series and plots.noise.series
    assert plots.confusion.matrix.tolist() == [[5, 1, 0], [0, 4, 2], [1, 0, 6]]
    assert np.allclose(plots.class_accuracy.series[0][2], [100 * 5 / 6, 100 * 4 / 6, 100 * 6 / 7])
    found = plots.noise.hover_at(0.1, 58.0, 0.001, 0.1)
    assert found is not None and "student" in found[2] and "58" in found[2]
    text = plots.confusion.hover_at(2.1, 1.0, 0.01, 0.01)[2]
    assert "true b → predicted c" in text and "2 images" in text
    assert "Showing" in plots.banner.text()


def test_selecting_runs_overlays_their_curves(window):
    root = window.runs_root
    a, b = write_run(root, "kd-off", 1.0), write_run(root, "kd-stable", 2.0)
    window.runs.refresh()
    assert window.runs.tree.topLevelItemCount() == 2
    window.runs.select([a, b])
    plots = window.plots
    assert len(plots.records) == 2 and "Comparing 2 runs" in plots.banner.text().replace("<b>", "")
    for panel in plots.panels():
        panel.refresh(force=True)
    labels = {n for n, _, _ in plots.accuracy.series}
    assert any(n.startswith("kd-off") for n in labels) and any(n.startswith("kd-stable") for n in labels)
    assert len(plots.noise.series) == 4  # teacher and student of each run
    assert len(plots.heads.series) == 2
    # one run selected again: its own plots, and reopening loads its set-up into the form
    window.runs.select([a])
    assert len(plots.records) == 1
    window.reopen_run(a)
    assert window.form.config().name == "kd-off"
