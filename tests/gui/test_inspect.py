"""The Inspect view: opened from the runs panel, computed in the background, cancellable."""

from __future__ import annotations

import shutil

import pytest
from PySide6.QtWidgets import QLabel

from engine.runs import list_runs
from tests.inspect_runs import inspect_runs

WAIT_MS = 120_000  # generous: a shared 2-core machine can be slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return inspect_runs(tmp_path_factory)


@pytest.fixture
def listed(runs, studio_home):
    """The two tiny runs inside the studio's runs folder, so the runs panel lists them."""
    root = studio_home / "runs"
    root.mkdir(parents=True, exist_ok=True)
    for name in ("mgd", "kd"):
        shutil.copytree(runs[name], root / name)
    return root


def idle(dialog) -> bool:
    return dialog.running is None


def cells(dialog) -> list[QLabel]:
    return [w for w in dialog.maps_grid_widget.findChildren(QLabel) if w.objectName() == "camCell"]


def test_inspect_a_run_from_the_runs_panel(qtbot, window, listed, tmp_path):
    panel = window.runs
    panel.refresh()
    panel.select([listed / "mgd"])
    assert panel.buttons["inspect"].isEnabled()
    panel.buttons["inspect"].click()
    dialog = window.inspect_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.running == "inspect" and dialog.cancel_button.isEnabled()  # in the background
    qtbot.waitUntil(lambda: idle(dialog), timeout=WAIT_MS)
    assert dialog.error is None, dialog.error
    assert dialog.bar.isHidden() and not dialog.cancel_button.isEnabled()

    # maps: one row per class (the first image of each), columns image, teacher, 2 heads, student
    assert len(cells(dialog)) == 10 * 5
    assert dialog.images.text().count(",") == 9
    first = cells(dialog)[1].pixmap().toImage()
    dialog.target_buttons["true"].setChecked(True)
    assert len(cells(dialog)) == 50
    dialog.target_buttons["predicted"].setChecked(True)
    assert cells(dialog)[1].pixmap().toImage() == first
    assert "features[3]" in dialog.layers.text() and "2x2" in dialog.layers.text()
    dialog.stage.setCurrentIndex(1)  # one stage earlier: finer maps, computed again in the background
    assert dialog.running == "maps" and not dialog.bar.isHidden()
    qtbot.waitUntil(lambda: idle(dialog), timeout=WAIT_MS)
    assert "features[2]" in dialog.layers.text() and "4x4" in dialog.layers.text()
    assert len(cells(dialog)) == 50 and cells(dialog)[1].pixmap().toImage() != first

    # codes: teacher and student plots for both granularities, titled with the variance kept
    assert len(dialog.plots) == 4
    titles = [plot.getPlotItem().titleLabel.text for plot, _ in dialog.plots]
    assert all("of variance" in t and "5-NN" in t for t in titles)
    assert dialog.method.findData("pca") == 0
    dialog.compute_codes()  # projected again in the background
    assert dialog.running == "codes"
    qtbot.waitUntil(lambda: idle(dialog), timeout=WAIT_MS)
    assert dialog.error is None and len(dialog.plots) == 4
    dialog.show_image(7)  # what a hover shows
    assert not dialog.preview.pixmap().isNull() and "#7" in dialog.preview_text.text()

    # gain: without a second run, the run's teacher against its student
    assert dialog.gain_table.rowCount() == 10 and "teacher" in dialog.gain_title.text()
    index = dialog.other.findData(str(listed / "kd"))
    assert index >= 0 and dialog.other.count() == 1  # the run itself is not offered
    dialog.other.setCurrentIndex(index)
    dialog.compare_button.click()
    qtbot.waitUntil(lambda: idle(dialog), timeout=WAIT_MS)
    assert dialog.error is None, dialog.error
    gain = dialog.inspection.gain
    assert gain is not None and "kd-mgd" in gain.names[1]
    assert dialog.b_only.count() == min(200, len(gain.b_only)) and dialog.a_only.count() == min(200, len(gain.a_only))
    assert dialog.tabs.currentIndex() == 2

    # images picked in the window
    dialog.images.setText("0, 5, 17")
    dialog.maps_button.click()
    qtbot.waitUntil(lambda: idle(dialog), timeout=WAIT_MS)
    assert dialog.inspection.cams.indices == [0, 5, 17] and len(cells(dialog)) == 3 * 5

    # the same report as mgd-train inspect
    dialog.save_report(tmp_path / "report")
    qtbot.waitUntil(lambda: idle(dialog), timeout=WAIT_MS)
    assert dialog.saved and (tmp_path / "report" / "index.html").is_file()
    assert (tmp_path / "report" / "gain_per_class.png").is_file()
    dialog.close()


def test_inspect_can_be_cancelled_and_started_again(qtbot, listed):
    from mgd_gui.inspect_view import InspectDialog

    dialog = InspectDialog(listed / "mgd", list_runs(listed))
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.running == "inspect"
    dialog.cancel()
    qtbot.waitUntil(lambda: idle(dialog), timeout=WAIT_MS)
    assert dialog.error == "cancelled" and dialog.inspection is None
    assert dialog.status.text().startswith("Cancelled") and dialog.maps_button.text() == "Inspect"
    assert not cells(dialog)
    dialog.maps_button.click()  # start again
    assert dialog.running == "inspect"
    qtbot.waitUntil(lambda: idle(dialog), timeout=WAIT_MS)
    assert dialog.error is None and dialog.inspection is not None and len(cells(dialog)) == 50
    assert dialog.maps_button.text() == "Compute maps"
    dialog.close()


def test_errors_are_shown_in_the_view(qtbot, listed):
    from mgd_gui.inspect_view import InspectDialog

    (listed / "kd" / "checkpoints" / "student.pt").unlink()
    dialog = InspectDialog(listed / "kd", [])
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: idle(dialog), timeout=WAIT_MS)
    assert "no trained student" in dialog.status.text() and dialog.inspection is None
    dialog.close()


def test_inspect_needs_a_trained_student(window, listed):
    (listed / "kd" / "checkpoints" / "student.pt").unlink()
    window.runs.refresh()
    window.runs.select([listed / "kd"])
    assert not window.runs.buttons["inspect"].isEnabled()
    window.runs.select([listed / "mgd"])
    assert window.runs.buttons["inspect"].isEnabled()
