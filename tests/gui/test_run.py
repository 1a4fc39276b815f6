"""Runs started from the window: a tiny real run on the demo set, pause/resume/stop,
resuming an interrupted run, failures, and closing during a run."""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine.errors import TrainingError
from engine.events import EpochEnd, Log, RunFailed, RunStarted, StageStarted, StepLosses
from tests.gui.helpers import TINY, apply, wait_idle


def summary_of(path: Path) -> dict:
    return json.loads((Path(path) / "summary.json").read_text())


def test_tiny_demo_run_from_the_window_fills_the_plots(qtbot, window, tmp_path):
    apply(window, TINY)
    assert window.actions_["run"].isEnabled()
    window.actions_["run"].trigger()
    assert window.state == "running" and not window.actions_["run"].isEnabled()
    wait_idle(qtbot, window)

    record = window.live
    assert record.status == "finished", window.log.text()
    assert summary_of(record.run_dir)["status"] == "finished"
    assert window.progress.bar.value() == 1000 and window.progress.label.text().startswith("Finished")
    assert "student stage finished" in window.log.text()

    plots = window.plots
    plots.refresh(force=True)
    plots.tabs.setCurrentIndex(1)
    plots.refresh(force=True)
    for panel in plots.panels():
        panel.refresh(force=True)
    names = {name for name, _, _ in plots.losses.series}
    assert {"total", "ce", "kd"} <= names and any(n.startswith("code") for n in names)  # student stage by default
    acc = {name for name, _, _ in plots.accuracy.series}
    assert {"teacher test", "student test"} <= acc and any(n.startswith("head1") for n in acc)
    assert len(plots.heads.series[0][1]) == 2  # the paper's two heads
    assert {name for name, _, _ in plots.noise.series} == {"teacher", "student"}
    assert len(plots.class_accuracy.series[0][2]) == 10
    assert plots.confusion.matrix.shape == (10, 10) and plots.confusion.matrix.sum() == 355

    # the runs panel lists the run with its key figures
    window.runs.refresh()
    item = window.runs.tree.topLevelItem(0)
    assert item.text(1) == "finished" and item.text(7) not in ("", "–")

    # plots save as PNG and CSV
    png = plots.accuracy.save_png(tmp_path / "acc.png")
    assert png.stat().st_size > 1000
    csv_text = plots.losses.save_csv(tmp_path / "losses.csv").read_text().splitlines()
    assert csv_text[0] == "series,epoch,loss" and len(csv_text) > 10
    confusion_csv = plots.confusion.save_csv(tmp_path / "confusion.csv").read_text().splitlines()
    assert len(confusion_csv) == 11 and confusion_csv[1].startswith("0,")


def test_pause_resume_stop_and_resume_the_run(qtbot, window):
    apply(window, {**TINY, "teacher.schedule.epochs": 2})
    steps: list[dict] = []
    window.runner.event.connect(lambda e: steps.append(e) if e["event"] == "StepLosses" else None)
    window.start_run()
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=180000)

    window.actions_["pause"].trigger()
    assert window.actions_["pause"].text() == "Resume"
    qtbot.waitUntil(lambda: window.state == "paused", timeout=60000)
    count = len(steps)
    qtbot.wait(600)
    assert len(steps) <= count + 1  # nothing trains while paused (one step may have been in flight)
    count = len(steps)

    window.actions_["pause"].trigger()  # resume
    assert window.state == "running" and window.actions_["pause"].text() == "Pause"
    qtbot.waitUntil(lambda: len(steps) > count, timeout=60000)

    window.actions_["stop"].trigger()
    assert window.state == "stopping"
    wait_idle(qtbot, window)
    run_dir = window.live.run_dir
    assert window.live.status == "stopped"
    assert summary_of(run_dir)["status"] == "stopped"
    assert (run_dir / "checkpoints" / "teacher_last.pt").exists()
    assert "resume" in window.progress.label.text().lower()

    # the interrupted run is resumed from the runs panel and finishes
    window.runs.refresh()
    window.runs.select([run_dir])
    assert window.runs.buttons["resume"].isEnabled()
    window.runs.buttons["resume"].click()
    assert window.state == "running"
    wait_idle(qtbot, window)
    assert window.live.status == "finished", window.log.text()
    assert summary_of(run_dir)["status"] == "finished"
    teacher_epochs = window.live.accuracy["teacher"]["test"].x
    assert teacher_epochs == [1.0, 2.0]


def failing_engine(config, *, run_dir=None, runs_root, subscribers, control, resume):
    """A stand-in for run_experiment that fails in the teacher stage, as the engine does."""
    emit = subscribers[0]
    folder = Path(runs_root) / "fake-run"
    emit(RunStarted(str(folder), {"name": "fake"}, "cpu"))
    emit(StageStarted("teacher", 2, 3))
    emit(StepLosses("teacher", 1, 1, 3, {"total": 2.0, "ce": 2.0}, 0.05))
    emit(EpochEnd("teacher", 1, 2, {"total": 2.0}, 10.0, 12.0, 0.05, 0.1))
    emit(Log("about to fail", "warning"))
    emit(RunFailed(str(folder), "teacher", "teacher: the loss became nan at epoch 2, step 1", "nan",
                   "Traceback (most recent call last):\n  ...\nTrainingError: nan"))
    raise TrainingError("teacher: the loss became nan at epoch 2, step 1", kind="nan")


def test_an_engine_failure_shows_the_error_and_the_window_survives(qtbot, make_window):
    window = make_window(engine=failing_engine)
    window.start_run()
    qtbot.waitUntil(lambda: window.error_box is not None and window.error_box.isVisible(), timeout=10000)
    box = window.error_box
    assert "the loss became nan" in box.text()
    assert "lower learning rate" in box.informativeText()
    assert "TrainingError" in box.detailedText()  # the details are there, expandable
    box.close()
    assert window.state == "idle" and window.live.status == "failed"
    assert window.actions_["run"].isEnabled()
    assert "Run failed" in window.log.text()
    assert window.plots.losses.records[0] is window.live  # what arrived before the failure is kept

    # the window still works: a second run with a working engine finishes
    window.runner.engine = lambda config, **kw: {"status": "finished", "student": {}}
    window.start_run()
    wait_idle(qtbot, window)
    assert window.live.status == "finished"


def test_a_real_engine_failure_bad_teacher_checkpoint(qtbot, window, tmp_path):
    bogus = tmp_path / "teacher.pt"
    bogus.write_text("this is not a checkpoint")
    apply(window, {**TINY, "teacher.checkpoint": str(bogus)})
    window.start_run()  # the background check is off in this window: the engine refuses it
    qtbot.waitUntil(lambda: window.error_box is not None and window.error_box.isVisible(), timeout=180000)
    assert "teacher.pt" in window.error_box.text()
    failure = window.last_failure
    assert failure["kind"] == "input" and failure["field"] == "teacher.checkpoint"
    assert not failure["run_dir"] and not list(window.runs_root.glob("*"))  # refused at plan time: no run folder
    assert "kept in" not in window.error_box.informativeText()
    window.error_box.close()
    # the refusal is marked at the field, with Run off until the set-up changes
    assert "teacher.pt" in window.form.error_text("teacher.checkpoint")
    assert not window.actions_["run"].isEnabled()
    window.form.set_field("teacher.checkpoint", None)
    assert window.form.error_text("teacher.checkpoint") == ""
    assert window.actions_["run"].isEnabled(), (window.state, window.runner.active, window.form.errors())


def test_closing_during_a_run_stops_it_cleanly(qtbot, window):
    apply(window, {**TINY, "teacher.schedule.epochs": 50})
    steps: list = []
    window.runner.event.connect(lambda e: steps.append(e) if e["event"] == "StepLosses" else None)
    window.start_run()
    qtbot.waitUntil(lambda: len(steps) >= 1, timeout=180000)
    asked = []
    window.confirm_close = lambda: asked.append(True) or True
    window.close()
    assert asked and window.isVisible()  # it waits for the run to stop
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=180000)
    assert not window.runner.active
    run_dir = window.live.run_dir
    assert summary_of(run_dir)["status"] == "stopped"
    assert (run_dir / "checkpoints" / "teacher_last.pt").exists()


def test_closing_during_a_run_can_be_cancelled(qtbot, make_window):
    release = []

    def slow_engine(config, *, control, subscribers, **kw):
        subscribers[0](RunStarted(str(Path(kw["runs_root"]) / "slow"), {"name": "slow"}, "cpu"))
        while not control.stop_requested and not release:
            time.sleep(0.02)
        return {"status": "stopped" if control.stop_requested else "finished"}

    window = make_window(engine=slow_engine)
    window.start_run()
    window.confirm_close = lambda: False
    window.close()
    assert window.isVisible() and window.runner.active
    release.append(True)
    wait_idle(qtbot, window)
    assert window.live.status == "finished"
