"""Plots show what the selected runs hold and nothing else: legends that shrink back, no
details of the last run, no clipped text at 1280 px, readable overlays, a choice of x axis."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF
from PySide6.QtWidgets import QComboBox, QStyle, QStyleOptionComboBox

from engine.events import (EpochEnd, NoiseCurve, Paused, PlanReady, Resumed, RunStarted,
                           StageStarted, StepLosses)
from mgd_gui.run.record import RunRecord
from tests.gui.test_plots import fake_events


def plan(*stages: str, time: float = 0.0) -> dict:
    return PlanReady({"stages": [{"name": s, "action": "train", "epochs": 2} for s in stages]},
                     time=time).to_dict()


def stable_run(name: str = "stable", scale: float = 1.0) -> RunRecord:
    return RunRecord.from_events([plan("teacher", "heads", "student"), *fake_events(name, scale)])


def off_run(name: str = "off") -> RunRecord:
    """A run with MGD off, still training: no heads, no noise curves yet."""
    events = [plan("teacher", "student"), RunStarted(f"/runs/{name}", {"name": name}, "cpu").to_dict(),
              StageStarted("student", 2, 4).to_dict()]
    events += [StepLosses("student", 1, s, 4, {"total": 3.0 - s / 10, "ce": 1.0}, 0.05).to_dict() for s in (1, 2)]
    return RunRecord.from_events(events)


def draw(plots, records) -> None:
    plots.set_records(records)
    for panel in plots.panels():
        panel.refresh(force=True)


def test_legends_shrink_back_after_an_overlay(window):
    plots = window.plots
    one = stable_run("a")
    draw(plots, [one])
    before = {p: (p.legend_names(), p.legend.boundingRect().height() if p.legend else 0.0)
              for p in (plots.losses, plots.accuracy)}
    draw(plots, [stable_run(f"run{i}", 1.0 + i / 10) for i in range(8)])
    # overlays: the runs are listed once above the plots (colour and marker), each panel names its lines
    runs = plots.run_legend.text()
    assert plots.run_legend.isVisible() and all(runs.count(f"run{i}") == 1 for i in range(8))
    assert len({c for c in runs if c in "●■▼◆✚★▲✖"}) == 8  # a marker of its own for each run
    for panel in (plots.losses, plots.accuracy, plots.noise, plots.heads):
        assert panel.legend is None and panel.outside_legend.isVisible()
        assert "run" not in panel.outside_legend.text() and "lines:" in panel.outside_legend.text()
    text = plots.losses.outside_legend.text()
    assert text.count("code1_d64") == 1 and text.count("total") == 1
    assert "teacher" in plots.noise.outside_legend.text() and "student" in plots.noise.outside_legend.text()
    draw(plots, [one])
    assert not plots.run_legend.isVisible()
    for panel, (names, height) in before.items():
        assert panel.legend_names() == names
        assert panel.legend is not None and not panel.outside_legend.isVisible()
        assert panel.legend.boundingRect().height() == height


def test_overlaid_heads_name_each_teacher_in_the_legend(window):
    plots = window.plots
    draw(plots, [stable_run("a"), stable_run("b", 2.0)])
    heads = plots.heads
    lines = [e for e in heads._extras if e.__class__.__name__ == "InfiniteLine"]
    assert len(lines) == 2 and all(getattr(line, "label", None) is None for line in lines)  # no label over the legend
    assert "teacher" in heads.outside_legend.text() and "heads" in heads.outside_legend.text()
    draw(plots, [stable_run("a")])
    lines = [e for e in heads._extras if e.__class__.__name__ == "InfiniteLine"]
    assert len(lines) == 1 and "teacher 80.0%" in lines[0].label.format  # one run: labelled on the plot


def test_the_legend_can_be_moved_or_hidden(window):
    plots = window.plots
    draw(plots, [stable_run("a")])
    panel = plots.noise
    panel.set_legend_mode("outside")
    assert panel.legend is None and panel.outside_legend.isVisible() and "student" in panel.outside_legend.text()
    panel.set_legend_mode("hidden")
    assert panel.legend is None and not panel.outside_legend.isVisible()
    panel.set_legend_mode("inside")
    assert panel.legend is not None and [label.text for _, label in panel.legend.items] == ["teacher", "student"]


def test_a_mode_off_run_shows_nothing_of_the_last_run(window):
    plots = window.plots
    draw(plots, [stable_run("stable")])
    heads, noise = plots.heads, plots.noise
    assert heads.item.getAxis("bottom")._tickLevels and noise.series
    noise.item.vb.updateAutoRange()
    assert noise.item.vb.viewRange()[1][0] > 30  # the stable run's accuracies (40 to 80)

    draw(plots, [off_run()])
    assert not heads.series and heads.empty.isVisible()
    assert "MGD is off" in heads.empty.text() and "appear after" not in heads.empty.text()
    assert heads.item.getAxis("bottom")._tickLevels is None  # no "d=64 · T=2" left on the axis
    assert noise.empty.isVisible() and noise.item.vb.viewRange()[1] == [0.0, 100.0]  # not the old range
    # when the new run's curve comes, the axis follows it
    record = plots.records[0]
    record.feed(NoiseCurve("student", [0.0, 0.5], [10.0, 5.0]).to_dict())
    noise.refresh()
    noise.item.vb.updateAutoRange()
    low, high = noise.item.vb.viewRange()[1]
    assert low < 5.0 and high < 20.0


def _clipped(window) -> list[str]:
    """Texts in the plot headers that do not fit their widgets."""
    found = []
    for panel in window.plots.panels():
        label = panel.title_label
        if label.isVisible() and label.height() < label.heightForWidth(label.width()):
            found.append(f"title {label.text()!r}")
        for combo in panel.findChildren(QComboBox):
            if not combo.isVisible():
                continue
            option = QStyleOptionComboBox()
            combo.initStyleOption(option)
            field = combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                                 QStyle.SubControl.SC_ComboBoxEditField, combo)
            for i in range(combo.count()):
                if combo.fontMetrics().horizontalAdvance(combo.itemText(i)) > field.width():
                    found.append(f"{type(panel).__name__} drop-down {combo.itemText(i)!r}")
    return found


def test_no_clipped_text_in_the_plot_headers_at_1280_pixels(qtbot, window):
    window.resize(1280, 800)
    plots = window.plots
    record = stable_run("a-run-with-a-rather-long-name")
    record.evaluations["student"]["accuracy"] = 78.93
    draw(plots, [record])
    plots.losses.stage.setCurrentIndex(plots.losses.stage.findData("heads"))  # "Losses · Self-analysis"
    for tab in (0, 1):
        plots.tabs.setCurrentIndex(tab)
        qtbot.wait(30)
        for panel in plots.panels():
            panel.refresh(force=True)
        qtbot.wait(30)
        assert _clipped(window) == []
    assert "78.9%" in plots.confusion.title_label.text()


def test_hover_text_opens_towards_the_middle(qtbot, window):
    plots = window.plots
    draw(plots, [stable_run("a")])
    panel = plots.noise
    qtbot.wait(30)
    vb = panel.item.vb
    view = vb.sceneBoundingRect()
    for x, y in ((0.2, 50.0), (0.0, 80.0)):  # the student's last point (right), the teacher's first (top left)
        panel._mouse_moved((vb.mapViewToScene(QPointF(x, y)),))
        assert panel.hover_text.isVisible()
        box = panel.hover_text.sceneBoundingRect()
        assert view.contains(box), (x, y, box, view)


def test_the_x_axis_is_the_epoch_the_step_or_the_wall_time(window):
    events = [plan("student", time=1000.0), RunStarted("/runs/t", {"name": "t"}, "cpu", time=1000.0).to_dict(),
              StageStarted("student", 2, 4, time=1000.0).to_dict()]
    t = 1000.0
    for epoch in (1, 2):
        for step in range(1, 5):
            t += 30.0
            events.append(StepLosses("student", epoch, step, 4, {"total": 1.0}, 0.1, time=t).to_dict())
            if epoch == 2 and step == 1:  # a pause of ten minutes is no training time
                events += [Paused("student", time=t + 1).to_dict(), Resumed("student", time=t + 601).to_dict()]
                t += 600
        events.append(EpochEnd("student", epoch, 2, {"total": 1.0}, 50.0, 60.0, 0.1, 120.0, time=t).to_dict())
    record = RunRecord.from_events(events)
    plots = window.plots
    draw(plots, [record])
    losses = plots.losses
    xs = {name: x for name, x, _ in losses.series}
    assert np.allclose(xs["total"], [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    plots.set_x_axis("step")
    xs = {name: x for name, x, _ in losses.series}
    assert np.allclose(xs["total"], [1, 2, 3, 4, 5, 6, 7, 8])
    assert losses.item.getAxis("bottom").labelText == "step"
    plots.set_x_axis("time")
    xs = {name: x for name, x, _ in losses.series}
    assert np.allclose(xs["total"], np.arange(1, 9) * 0.5)  # 30 s a step, the pause left out, in minutes
    acc = {name: x for name, x, _ in plots.accuracy.series}
    assert np.allclose(acc["student test"], [2.0, 4.0])
    assert plots.accuracy.item.getAxis("bottom").labelText == "wall time (min)"
    assert plots.x_axis.currentText() == "wall time"
    assert plots.losses.save_csv(window.runs_root.parent / "l.csv").read_text().startswith(
        "series,wall time (min),loss")


def test_the_wall_time_is_the_runs_own_clock_when_the_engine_stamps_it():
    """A run of a group waits 59 s for another run's teacher: its events' times jump, its own clock
    (each event's ``elapsed``) does not, and the wall-time axis follows that clock."""
    events = [plan("student", time=1000.0), StageStarted("student", 1, 4, time=1000.0, elapsed=2.0).to_dict()]
    for step in range(1, 5):
        events.append(StepLosses("student", 1, step, 4, {"total": 1.0}, 0.1, time=1059.0 + 10 * step,
                                 elapsed=2.0 + 10 * step).to_dict())
    record = RunRecord.from_events(events)
    assert record.step_losses["student"]["total"].xs("time") == [12.0, 22.0, 32.0, 42.0]


def test_the_window_fits_1280_pixels_with_room_for_larger_fonts(window):
    # every dock's buttons fold into a » menu when narrow, drop-downs and titles shrink or wrap:
    # the offscreen fonts are smaller than a desktop's, so the minimum leaves a quarter spare
    assert window.minimumSizeHint().width() <= 1000
    for dock in (window.runs_dock, window.queue_dock, window.log_dock):
        assert dock.minimumSizeHint().width() <= 400
