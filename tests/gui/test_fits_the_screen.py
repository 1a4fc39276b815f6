"""Every window and dialog of the studio fits the screen at 1024x700, 1280x800 and 1920x1080: its
frame inside the screen's available area, its buttons in sight, resizable, closed by Escape.

The offscreen platform has one screen of its own size: :func:`mgd_gui.screen.simulate` makes the
studio size its windows for each of the three screens instead (the same hook as
``docs/make_screenshots.py --screens``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtWidgets import QApplication, QWidget

from engine.runs import list_runs, run_info
from mgd_gui import screen
from tests.gui.test_compare import make_runs

SIZES = [(1024, 700), (1280, 800), (1920, 1080)]
QT_MAX = 16777215
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def area(request):
    """Simulate a screen of the parametrized size (the whole of it is available)."""
    size = request.param
    screen.simulate(size)
    yield QRect(0, 0, *size)
    screen.simulate(None)


def on_screen(window: QWidget, area: QRect) -> None:
    frame = window.frameGeometry()
    assert area.contains(frame), f"{window.windowTitle()!r}: frame {frame} is not inside the screen {area}"


def in_sight(widget: QWidget) -> None:
    """Shown, and not cut off by its window's edge or a parent's (the whole of it can be seen and clicked)."""
    name = widget.text() if hasattr(widget, "text") else widget.objectName() or widget.metaObject().className()
    assert widget.isVisible(), f"{name!r} is hidden"
    seen = widget.visibleRegion().boundingRect()
    assert seen.size() == widget.size(), f"{name!r}: only {seen} of {widget.size()} is in sight"


def resizable(window: QWidget, area: QRect) -> None:
    assert window.maximumSize() == QSize(QT_MAX, QT_MAX), "a fixed or capped size"
    minimum = window.minimumSize()
    assert 0 < minimum.width() <= area.width() and 0 < minimum.height() <= area.height()
    assert window.size() != minimum or window.size() == screen.room(window), "sized at its minimum only"


def escape_closes(qtbot, dialog) -> None:
    """The dialog takes the keyboard once shown (activation arrives a moment later), and Escape closes it."""
    qtbot.waitUntil(dialog.isActiveWindow, timeout=2000)
    qtbot.keyClick(QApplication.focusWidget() or dialog, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=2000)


def show_main(window, area: QRect) -> None:
    window.resize(area.size() - screen.DECORATION)
    window.move(0, 0)
    QApplication.processEvents()


# ----------------------------------------------------------------------------- 1. Compare


@pytest.mark.parametrize("area", SIZES, indirect=True, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_compare_dialog_fits_the_screen_and_escape_closes_it(qtbot, window, studio_home, area):
    paths, _ = make_runs(studio_home)
    show_main(window, area)
    window.runs.refresh()
    window.runs.select(paths[:4])
    window.runs.buttons["compare"].click()
    dialog = window.compare_dialog
    qtbot.waitExposed(dialog)
    on_screen(dialog, area)
    resizable(dialog, area)
    for button in (dialog.copy_button, dialog.csv_button, dialog.buttons.button(dialog.buttons.StandardButton.Close)):
        in_sight(button)
    for table in (dialog.baselines, dialog.students):  # what does not fit scrolls
        table.horizontalScrollBar().setValue(table.horizontalScrollBar().maximum())
        last = table.columnCount() - 1
        right = table.columnViewportPosition(last) + table.columnWidth(last)
        assert right <= table.viewport().width(), "the last column cannot be scrolled to"
    escape_closes(qtbot, dialog)


ESCAPE_UNDER_X = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication, QTreeWidget
    from engine.runs import run_info
    from mgd_gui.compare_dialog import CompareDialog

    app = QApplication([])
    main = QTreeWidget()  # the main window, active, its runs list holding the keyboard
    main.resize(800, 600)
    main.show()
    main.activateWindow()
    QTest.qWaitForWindowActive(main, 5000)
    main.setFocus()
    dialog = CompareDialog([run_info(Path(p)) for p in json.loads(sys.argv[1])], main)
    dialog.show()  # as the window opens it: show and raise
    dialog.raise_()
    for _ in range(20):
        QTest.qWait(50)
    active = type(app.activeWindow()).__name__
    QTest.keyClick(app.focusWidget() or main, Qt.Key.Key_Escape)
    QTest.qWait(200)
    print(active, "open" if dialog.isVisible() else "closed")
""")


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="needs xvfb-run (an X server without a window manager)")
def test_escape_closes_the_compare_dialog_under_an_x_server(studio_home):
    """Under X the window manager (here: none) may leave the main window active when a dialog
    opens: the dialog takes the keyboard itself, or Escape would go to the main window."""
    import json

    paths, _ = make_runs(studio_home)
    out = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", sys.executable, "-c", ESCAPE_UNDER_X,
                          json.dumps([str(p) for p in paths[:4]])], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**__import__("os").environ, "QT_QPA_PLATFORM": "xcb"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["CompareDialog", "closed"], out.stdout + out.stderr[-2000:]


# ----------------------------------------------------------------------------- 2. the docks' buttons


@pytest.mark.parametrize("area", [(1024, 700)], indirect=True, ids=["1024x700"])
def test_every_queue_and_runs_action_is_in_sight_at_the_default_layout(qtbot, window, area):
    show_main(window, area)
    window.queue_dock.raise_()  # tabbed with the log
    QApplication.processEvents()
    panel = window.queue_panel
    assert set(panel.buttons) == {"start", "pause", "up", "down", "cancel", "clear", "table"}
    for button in panel.buttons.values():
        in_sight(button)
    for key in ("refresh", "reopen", "resume", "export", "inspect", "try", "compare"):
        in_sight(window.runs.buttons[key])
    in_sight(window.runs.manage_button)


# ----------------------------------------------------------------------------- 3. Inspect


@pytest.mark.parametrize("area", SIZES, indirect=True, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_inspect_window_fits_the_screen(qtbot, window, studio_home, area):
    from mgd_gui.inspect_view import InspectDialog

    paths, _ = make_runs(studio_home)  # runs without a student: the inspection fails at once, the window stays
    show_main(window, area)
    dialog = InspectDialog(paths[0], list_runs(studio_home / "runs"), window)
    dialog.show()
    qtbot.waitExposed(dialog)
    qtbot.waitUntil(lambda: dialog.running is None, timeout=120_000)
    on_screen(dialog, area)
    resizable(dialog, area)
    close = next(b for b in dialog.findChildren(type(dialog.cancel_button)) if b.text() == "Close")
    for widget in (dialog.maps_button, dialog.compare_button, dialog.report_button, dialog.cancel_button, close,
                   dialog.other):
        in_sight(widget)
    assert dialog.status.isVisible() and dialog.status.visibleRegion().boundingRect().width() > 200
    escape_closes(qtbot, dialog)


# ----------------------------------------------------------------------------- 4. Inspect's Save report


@pytest.fixture(scope="module")
def inspect_runs_(tmp_path_factory):
    from tests.inspect_runs import inspect_runs

    return inspect_runs(tmp_path_factory)


def test_save_report_proposes_a_folder_that_works(qtbot, inspect_runs_, tmp_path):
    from mgd_gui.inspect_view import InspectDialog

    run = tmp_path / "mgd"
    shutil.copytree(inspect_runs_["mgd"], run)
    dialog = InspectDialog(run, [])
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.running is None, timeout=120_000)
    assert dialog.error is None, dialog.error
    proposed = run / "inspect"
    assert not proposed.exists()
    asked = []

    def cancel(title, start):  # the chooser, cancelled
        asked.append((Path(start), Path(start).is_dir()))
        return ""

    dialog.choose_folder = cancel
    dialog.report_button.click()
    assert asked == [(proposed, True)]  # the proposed folder exists while the chooser shows it
    assert not proposed.exists()  # and a folder not chosen leaves no trace

    def accept(title, start):  # the chooser, the proposed folder accepted
        asked.append((Path(start), Path(start).is_dir()))
        return str(start)

    dialog.choose_folder = accept
    dialog.report_button.click()
    assert asked[-1] == (proposed, True)
    qtbot.waitUntil(lambda: dialog.running is None, timeout=120_000)
    assert dialog.error is None, dialog.error
    assert dialog.saved and Path(dialog.saved["html"]) == proposed / "index.html" and (proposed / "index.html").is_file()
    dialog.close()


# ----------------------------------------------------------------------------- 5., 6. the model picker


def test_the_model_search_list_is_as_wide_as_its_rows(qtbot, window):
    pytest.importorskip("timm")
    from engine.models.sources import catalog

    window.resize(1024, 700)
    window.form.show_section("student")
    picker = window.form.editor("student.arch")
    picker.set_catalog(catalog())
    picker.set_counts({name: 2_540_000 + i for i, name in enumerate(picker.matches("timm:mobilenet"))})
    picker.search.setFocus()
    qtbot.keyClicks(picker.search, "timm:mobilenet")
    popup = picker.completer.popup()
    qtbot.waitUntil(popup.isVisible, timeout=5000)
    model = picker.completer.completionModel()
    texts = [model.index(r, 0).data() for r in range(model.rowCount())]
    assert len(texts) > 5 and any("timm:mobilenet_edgetpu_v2_xs" in t and "2.54 M" in t for t in texts)
    longest = max(popup.fontMetrics().horizontalAdvance(t) for t in texts)
    assert popup.viewport().width() >= longest, f"the list is {popup.viewport().width()} px for rows of {longest} px"
    assert popup.width() > picker.search.width()  # wider than its field
    assert popup.geometry().right() <= screen.available_area(picker).right()


def test_the_memory_estimate_reads_in_mib_below_one_gib():
    from mgd_gui.setup.model_picker import memory_text

    text, too_large = memory_text("resnet8", estimate=12 * 2**20, capacity=None, device="cpu", image_size=8,
                                  batch_size=8)
    assert text == "training needs about 12 MiB at 8 px, batch 8" and not too_large
    assert "0.0 GiB" not in memory_text("m", estimate=40 * 2**20, capacity=16 * 2**30, device="cuda:0", image_size=32,
                                        batch_size=64)[0]
    from mgd_gui.setup.model_picker import memory_size

    assert memory_size(int(0.95 * 2**30)) == "973 MiB"
    assert memory_size(3.5 * 2**20) == "3.5 MiB"
    assert memory_size(300 * 2**10) == "300 KiB"
    assert memory_size(2**30) == "1.0 GiB" and memory_size(2**30 - 2**18) == "1.0 GiB"  # not "1024 MiB"
    assert memory_size(12.34 * 2**30) == "12.3 GiB"


# ----------------------------------------------------------------------------- 7. the other dialogs, the window


def _student_runs(studio_home: Path) -> list[Path]:
    paths, _ = make_runs(studio_home)
    for path in paths:  # a student checkpoint (never loaded here): the runs are offered for export
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "student.pt").write_bytes(b"")
    return paths


@pytest.mark.parametrize("area", SIZES, indirect=True, ids=lambda s: f"{s[0]}x{s[1]}")
def test_export_review_and_the_error_dialog_fit_the_screen(qtbot, window, studio_home, area):
    from mgd_gui.export_dialog import ExportDialog
    from mgd_gui.review_view import ReviewDialog
    from mgd_gui.run.error_dialog import error_dialog

    paths = _student_runs(studio_home)
    show_main(window, area)
    export = ExportDialog(list_runs(studio_home / "runs"), paths[0], window)
    export.show()
    qtbot.waitExposed(export)
    on_screen(export, area)
    resizable(export, area)
    in_sight(export.export_button)
    escape_closes(qtbot, export)

    review = ReviewDialog(paths[0], run_info(paths[0]).label, window)
    review.show()
    qtbot.waitExposed(review)
    on_screen(review, area)
    resizable(review, area)
    review.tabs.setCurrentIndex(1)
    in_sight(review.open_button)
    escape_closes(qtbot, review)

    traceback = "Traceback (most recent call last):\n" + "".join(
        f'  File "/a/long/path/to/site-packages/engine/stage_{i}.py", line {i}, in train\n    loss = step(batch)\n'
        for i in range(60)) + "TrainingError: nan"
    box = error_dialog(window, {"message": "teacher: the loss became nan at epoch 2, step 1", "kind": "nan",
                                "stage": "teacher", "details": traceback, "run_dir": str(paths[0])})
    box.open()
    qtbot.waitExposed(box)
    assert box.detailedText() == traceback and "lower learning rate" in box.informativeText()
    box.details_button.click()  # the traceback shown: the dialog grows, still on the screen
    assert box.details.isVisible()
    on_screen(box, area)
    resizable(box, area)
    assert box.details.width() >= min(800, area.width() - 100)  # room for a traceback's lines
    in_sight(box.buttons.button(box.buttons.StandardButton.Close))
    escape_closes(qtbot, box)


@pytest.mark.parametrize("area", SIZES, indirect=True, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_main_window_fits_the_screen(qtbot, studio_home, area):
    from mgd_gui.main_window import MainWindow

    window = MainWindow(probe=False)
    qtbot.addWidget(window)
    window.ask_unsaved = lambda: "discard"
    window.confirm_close = lambda: True
    assert window.size().width() <= area.width() and window.size().height() <= area.height()
    window.show()
    qtbot.waitExposed(window)
    window.move(0, 0)
    on_screen(window, area)
    for dock in (window.experiment_dock, window.runs_dock, window.log_dock):
        assert dock.isVisible() and dock.width() > 300 and dock.height() > 120, dock.objectName()
    for action in window.toolbar.actions():
        button = window.toolbar.widgetForAction(action)
        if button is not None and not action.isSeparator():
            in_sight(button)
    window.lookups.close()
