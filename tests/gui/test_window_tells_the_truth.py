"""What the window says about the set-up and the runs can be trusted (issue 10's defects):
a missing data folder is marked at its field, a reopened run shows its whole log, unsaved
edits are never lost silently, the status bar keeps the progress, and so on."""

from __future__ import annotations

from pathlib import Path

from mgd_gui import paths


def cifar_preset() -> Path:
    return paths.resources_dir() / "presets" / "cifar100_resnet56_to_resnet20.yaml"


def test_a_missing_data_folder_is_marked_at_the_field_and_nothing_is_downloaded(qtbot, make_window, tmp_path):
    window = make_window(probe=True)
    window.load_preset(str(cifar_preset()))
    missing = tmp_path / "nowhere"
    window.form.set_field("data.root", str(missing))
    assert window.form.config().data.download is True
    # Download is ticked: the preview says the run fetches it, and does not tell to tick it
    qtbot.waitUntil(lambda: "not downloaded yet" in window.preview.info.text(), timeout=60000)
    text = window.preview.info.text()
    assert "Download is ticked" in text and "set download" not in text
    assert str(missing / "cifar-100-python") in text
    qtbot.waitUntil(lambda: not window.lookups.pending(), timeout=60000)
    assert "data.root" not in window.form.errors()
    assert not missing.exists()  # the look-ups never download (nor create the folder)

    # without Download, the missing folder is marked at its field and Run is off
    window.form.set_field("data.download", False)
    qtbot.waitUntil(lambda: window.form.error_text("data.root") != "", timeout=60000)
    assert "not found" in window.form.error_text("data.root")
    assert not window.actions_["run"].isEnabled()


def test_run_waits_for_the_check_of_the_latest_edit(qtbot, make_window, tmp_path):
    started = []

    def engine(config, **kwargs):
        started.append(config)
        return {"status": "finished", "student": {}}

    window = make_window(probe=True, engine=engine)
    qtbot.waitUntil(lambda: window.lookups.started and not window.lookups.pending(), timeout=60000)
    assert window.actions_["run"].isEnabled()
    window.form.set_field("data.dataset", "imagefolder")
    window.form.set_field("data.root", str(tmp_path / "no-such-images"))
    assert window.lookups.pending() and window.actions_["run"].isEnabled()
    window.start_run()  # clicked before the engine has checked the edit
    assert not started and window.state == "idle"
    assert "Checking the set-up" in window.progress.label.text()
    qtbot.waitUntil(lambda: window.form.error_text("data.root") != "", timeout=60000)
    qtbot.wait(50)
    assert not started and not window.runner.active  # refused: the run never started
    assert "Run not started" in window.log.text() and "image folder not found" in window.log.text()
    assert not window.actions_["run"].isEnabled()

    # a set-up the engine accepts starts as soon as the check answers
    window.form.set_field("data.dataset", "demo")
    window.form.set_field("data.root", None)
    qtbot.waitUntil(lambda: window.actions_["run"].isEnabled(), timeout=60000)
    window.form.set_field("name", "checked-first")
    assert window.lookups.pending()
    window.start_run()
    assert not started
    qtbot.waitUntil(lambda: len(started) == 1, timeout=60000)
    assert started[0].data.dataset == "demo" and started[0].name == "checked-first"


def write_finished_run(root: Path, name: str = "demo", started: str = "2026-01-01T10:00:00", seed: int = 0,
                       folder: str | None = None) -> Path:
    """A run folder as the engine leaves it: config, summary and the events of a short run."""
    import json

    from engine.config import ExperimentConfig, save_config
    from engine.events import (EpochEnd, PlanReady, RunFinished, RunStarted, StageFinished, StageStarted,
                               StepLosses)

    path = root / (folder or f"{started.replace('-', '').replace(':', '').replace('T', '-')}-{name}")
    path.mkdir(parents=True)
    save_config(ExperimentConfig(name=name, seed=seed), path / "config.yaml")
    summary = {"name": name, "status": "finished", "started": started, "seed": seed, "mode": "stable",
               "distiller": "kd", "data": {"dataset": "demo"},
               "student": {"arch": "resnet8", "best_acc": 71.5, "best_epoch": 2}}
    (path / "summary.json").write_text(json.dumps(summary))
    events = [PlanReady({"stages": [{"name": "student", "action": "train", "epochs": 2, "done": False}]}),
              RunStarted(str(path), {"name": name}, "cpu"), StageStarted("student", 2, 3, parameters=1234)]
    for epoch in (1, 2):
        events += [StepLosses("student", epoch, s, 3, {"total": 1.0 / (epoch + s)}, 0.05) for s in (1, 2, 3)]
        events.append(EpochEnd("student", epoch, 2, {"total": 0.5 / epoch}, 60.0 + epoch, 65.0 + epoch, 0.05, 1.5))
    events += [StageFinished("student", 3.0, {}), RunFinished(str(path), summary)]
    with open(path / "metrics.jsonl", "w") as fh:
        for event in events:
            fh.write(json.dumps(event.to_dict()) + "\n")
    return path


def test_a_reopened_run_shows_its_whole_log(window, studio_home):
    run = write_finished_run(studio_home / "runs")
    window.runs.refresh()
    window.reopen_run(run)
    text = window.log.text()
    assert "Plan: student (2 epochs)" in text
    assert "student: 2 epochs × 3 steps, 1,234 trainable parameters" in text
    assert "student epoch 1/2: loss 0.5000, train 61.00%, test 66.00%" in text
    assert "student epoch 2/2" in text and "student stage finished" in text
    assert "Finished: student resnet8 71.50% (best, epoch 2)" in text
    assert text.index("epoch 1/2") < text.index("epoch 2/2") < text.index("Finished:")


def test_pause_shows_in_the_runs_table_and_the_log(qtbot, make_window):
    import time

    from engine.events import Paused, Resumed, RunStarted, StageStarted

    def engine(config, *, control, subscribers, runs_root, **kw):
        emit = subscribers[0]
        folder = Path(runs_root) / "20260101-100000-paused"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text("name: paused\n")
        emit(RunStarted(str(folder), {"name": "paused"}, "cpu"))
        emit(StageStarted("teacher", 2, 3))
        while not control.stop_requested:
            if control.paused:
                emit(Paused("teacher"))
                control.wait_while_paused()
                emit(Resumed("teacher"))
            time.sleep(0.01)
        return {"status": "stopped", "stopped_in": "teacher"}

    window = make_window(engine=engine)
    window.start_run()
    qtbot.waitUntil(lambda: window.runs.tree.topLevelItemCount() == 1, timeout=10000)
    item = lambda: window.runs.tree.topLevelItem(0)  # noqa: E731
    assert item().text(1) == "running"
    window.toggle_pause()
    qtbot.waitUntil(lambda: window.state == "paused", timeout=10000)
    assert item().text(1) == "paused"
    assert "Paused in the teacher stage" in window.log.text()
    window.toggle_pause()
    qtbot.waitUntil(lambda: item().text(1) == "running", timeout=10000)
    assert "Resumed the teacher stage" in window.log.text()
    window.stop_run()
    qtbot.waitUntil(lambda: window.state == "idle", timeout=10000)


def test_unsaved_edits_are_asked_about_and_the_title_shows_them(qtbot, window, tmp_path):
    assert window.windowTitle() == "demo (preset)[*] — MGD Studio" and not window.isWindowModified()
    window.form.set_field("student.schedule.epochs", 3)
    assert window.isWindowModified() and window.presets.currentText() == "(custom)"

    asked = []
    window.ask_unsaved = lambda: asked.append("preset") or "cancel"
    window.load_preset(str(cifar_preset()))
    assert asked == ["preset"]
    assert window.form.config().student.schedule.epochs == 3  # the edit is kept
    assert window.presets.currentText() == "(custom)" and window.isWindowModified()

    window.ask_unsaved = lambda: asked.append("close") or "cancel"
    window.close()
    assert asked[-1] == "close" and window.isVisible()

    # "save" writes the file (Save As for a preset) and the title names it
    target = tmp_path / "mine.yaml"
    window.save_as = lambda: window.save_to(target)
    window.ask_unsaved = lambda: asked.append("save") or "save"
    window.load_preset(str(cifar_preset()))
    from engine.config import load_config

    assert load_config(target).student.schedule.epochs == 3
    assert window.form.config().name.startswith("cifar100")  # then the preset was loaded
    assert window.windowTitle().startswith("cifar100_resnet56_to_resnet20 (preset)")

    # a saved file is not asked about; an edit to it is, and the title says so
    window.load_path(target)
    assert window.windowTitle() == "mine.yaml[*] — MGD Studio" and not window.isWindowModified()
    count = len(asked)
    window.load_preset(str(cifar_preset()))
    assert len(asked) == count  # nothing unsaved: no question
    window.load_path(target)
    window.form.set_field("seed", 5)
    assert window.isWindowModified()
    window.ask_unsaved = lambda: asked.append("discard") or "discard"
    window.load_preset(str(paths.demo_preset()))
    assert asked[-1] == "discard" and window.form.config().name == "demo" and not window.isWindowModified()
    assert load_config(target).seed == 0  # discarded, not saved


def test_status_tips_do_not_hide_the_progress(qtbot, window):
    from PySide6.QtGui import QStatusTipEvent
    from PySide6.QtWidgets import QApplication

    window.progress.set_text("teacher · epoch 3/15 · ETA 0:42")
    window.progress.bar.setValue(300)
    button = window.toolbar.widgetForAction(window.actions_["open"])
    QApplication.sendEvent(button, QStatusTipEvent(window.actions_["open"].statusTip()))  # the mouse over it
    window.actions_["run"].showStatusText(window)  # a menu item hovered
    qtbot.wait(20)
    assert window.statusBar().currentMessage() == ""
    assert window.progress.isVisible() and window.progress.bar.isVisible()
    assert window.progress.label.text() == "teacher · epoch 3/15 · ETA 0:42" and window.progress.bar.value() == 300


def test_an_invalid_architecture_from_a_file_does_not_stay_in_the_drop_down(window, tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("name: old\nteacher:\n  arch: resnet999\n")
    assert window.load_path(path)
    combo = window.form.editor("teacher.arch").combo
    assert combo.currentText() == "resnet999 (unknown)" and "teacher.arch" in window.form.errors()
    assert not window.actions_["run"].isEnabled()
    window.load_preset(str(paths.demo_preset()))
    assert combo.findData("resnet999") < 0 and combo.currentData() == "resnet20"
    # chosen away from by hand: gone as well
    window.load_path(path)
    combo.setCurrentIndex(combo.findData("resnet56"))
    assert combo.findData("resnet999") < 0 and window.form.config().teacher.arch == "resnet56"
    assert "teacher.arch" not in window.form.errors()


def test_the_log_ends_with_the_story_of_the_run_the_plots_show(window, studio_home):
    # issue 19: after filtering and selecting one run, the log still told the end of another
    a = write_finished_run(studio_home / "runs", name="first", started="2026-01-01T10:00:00")
    b = write_finished_run(studio_home / "runs", name="second", started="2026-01-02T10:00:00")
    window.runs.refresh()
    window.reopen_run(a)
    assert "log of first" in window.log.text()
    window.runs.select([b])
    window.runs.selection_changed.emit([b])  # as a click in the list does
    text = window.log.text()
    assert "log of second" in text and "log of first" not in text  # one story: the selected run's
    assert text.rstrip().endswith("— end of its log —")
    assert [r.label for r in window.plots.records] == ["second"]
    window.log.add("a message of the session")  # session lines stay above the story
    text = window.log.text()
    assert text.index("a message of the session") < text.index("log of second")
    window.runs.selection_changed.emit([])  # nothing selected: no story
    assert "log of second" not in window.log.text() and "a message of the session" in window.log.text()


def test_the_toolbar_does_not_shift_when_pause_becomes_resume(window):
    bar = window.toolbar
    pause = bar.widgetForAction(window.actions_["pause"])
    stop = bar.widgetForAction(window.actions_["stop"])
    before = (pause.width(), stop.x())
    window.actions_["pause"].setText("Resume")
    bar.layout().activate()
    assert pause.sizeHint().width() <= pause.minimumWidth() or pause.sizeHint().width() <= before[0]
    assert (pause.width(), stop.x()) == before


def test_the_runs_panels_actions_have_keys(qtbot, window, studio_home):
    from PySide6.QtCore import Qt

    run = write_finished_run(studio_home / "runs", name="keyed")
    window.runs.refresh()
    window.runs.select([run])
    window.runs.tree.setFocus()
    qtbot.waitUntil(window.runs.tree.hasFocus, timeout=5000)
    asked = []
    window.runs.ask_text = lambda title, label, text, multiline=False: asked.append(title) or "renamed by key"
    qtbot.keyClick(window.runs.tree, Qt.Key.Key_F2)
    assert asked and window.runs.infos[run].label == "renamed by key"
    assert "log of renamed by key" in window.log.text()  # the selected run's story under its new name
    window.runs.select([run])
    qtbot.keyClick(window.runs.tree, Qt.Key.Key_Return)
    assert "log of renamed by key" in window.log.text()  # Open: its plots, its log, its set-up
    assert "(F2)" in window.runs.buttons["rename"].toolTip()
