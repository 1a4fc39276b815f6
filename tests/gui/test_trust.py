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
