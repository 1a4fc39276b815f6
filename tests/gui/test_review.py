"""Image-level review from the window: a confusion cell's test images with the teacher's and the
student's top predictions, and Try with an image file (opened or dropped in)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from engine.review import run_predictions
from tests.inspect_runs import inspect_runs


@pytest.fixture
def finished_run(tmp_path_factory, studio_home):
    source = inspect_runs(tmp_path_factory)["mgd"]
    target = studio_home / "runs" / "20260101-120000-kd-mgd"
    shutil.copytree(source, target)
    return target


def click_cell(qtbot, panel, true: int, predicted: int) -> None:
    vb = panel.item.getViewBox()
    scene = vb.mapViewToScene(QPointF(predicted, true))
    pos = panel.plot.mapFromScene(scene)
    qtbot.mouseClick(panel.plot.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(pos.x(), pos.y()))


def test_clicking_a_confusion_cell_shows_its_test_images(qtbot, window, finished_run):
    window.runs.refresh()
    window.reopen_run(finished_run)
    plots = window.plots
    plots.tabs.setCurrentIndex(1)
    plots.refresh(force=True)
    qtbot.wait(50)
    confusion = plots.confusion
    m = confusion.matrix
    off = m - np.diag(np.diag(m))
    t, p = (int(v) for v in np.unravel_index(np.argmax(off), m.shape))
    assert m[t, p] > 0
    click_cell(qtbot, confusion, t, p)
    dialog = window.review_dialog
    assert dialog.isVisible() and dialog.tabs.currentIndex() == 0
    assert f"True {t} → predicted {p}" in dialog.cell_title.text()
    qtbot.waitUntil(lambda: dialog.cell_result is not None or dialog.error is not None, timeout=60000)
    assert dialog.error is None
    assert dialog.cell_result["count"] == m[t, p] == dialog.cell_list.count()
    text = dialog.cell_list.item(0).text()
    assert text.startswith("#") and "teacher: " in text and "student: " in text
    assert text.split("student: ")[1].startswith(f"{p} ")  # the student's top class is the cell's column
    assert f"{int(m[t, p])} test image" in dialog.cell_status.text()


def test_try_an_image_file_opened_or_dropped(qtbot, window, finished_run, tmp_path):
    window.runs.refresh()
    window.runs.select([finished_run])
    assert window.runs.buttons["try"].isEnabled()
    window.runs.buttons["try"].click()
    dialog = window.review_dialog
    assert dialog.tabs.currentIndex() == 1
    pred = run_predictions(finished_run)
    path = tmp_path / "a digit.png"
    Image.fromarray(pred.images[3].numpy()[0], mode="L").save(path)

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                      Qt.KeyboardModifier.NoModifier)
    # Qt delivers a drop only inside a drag the window system started: hand it to the handler
    dialog.drop.dropEvent(drop)
    assert drop.isAccepted()
    qtbot.waitUntil(lambda: dialog.try_result is not None or dialog.error is not None, timeout=60000)
    assert dialog.error is None
    student = dialog.tables["student"]
    assert student.rowCount() == 5 and dialog.tables["teacher"].rowCount() == 5
    best = pred.classes[int(pred.student[3].argmax())]
    assert student.item(0, 0).text() == best
    probs = [float(student.item(r, 1).text().rstrip("%")) for r in range(5)]
    assert probs == sorted(probs, reverse=True) and abs(probs[0] - 100 * pred.student[3].max()) < 0.06
    assert "8×8 gray" in dialog.try_status.text() and not dialog.drop.pixmap().isNull()

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    dialog.try_image(str(bad))
    qtbot.waitUntil(lambda: dialog.error is not None, timeout=60000)
    assert "not an image in an allowed format" in dialog.try_status.text()
