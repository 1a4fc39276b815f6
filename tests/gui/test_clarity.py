"""What a user met within an hour (issue 19): plot ranges with little data, read-outs that stayed
on screen, the confusion matrix without a keyboard, run colours that moved, an info glyph that
drew as a box, a failed Try that kept the last verdict, and run names that differed between views."""

from __future__ import annotations

from PIL import Image
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QAbstractButton, QApplication, QComboBox, QGroupBox, QLabel, QLineEdit, QWidget

from engine.events import EpochEnd, Evaluation, RunStarted, StageStarted
from engine.review import run_predictions
from engine.runs import annotate_run, list_runs, run_info
from mgd_gui.plots.accuracy import AccuracyPanel
from mgd_gui.plots.area import PlotArea
from mgd_gui.plots.classes import ConfusionPanel
from mgd_gui.plots.losses import LossPanel
from mgd_gui.run.record import RunRecord
from tests.gui.test_review import finished_run  # noqa: F401 - a fixture: a tiny trained run

WAIT_MS = 120_000  # generous: a shared 2-core machine can be slow


def one_epoch(name: str = "a", accuracy: float = 50.0, elapsed: float = 12.0, run_dir: str | None = None) -> RunRecord:
    """A run with one finished epoch: one accuracy point (train and test alike), 12 s in."""
    record = RunRecord(label=name)
    events = [RunStarted(run_dir or f"/runs/{name}", {"name": name}, "cpu").to_dict(),
              StageStarted("student", 2, 4).to_dict(),
              dict(EpochEnd("student", 1, 2, {"total": 1.5}, accuracy, accuracy, 0.05, 1.0).to_dict(),
                   elapsed=elapsed)]
    for event in events:
        record.feed(event)
    return record


def shown(qtbot, panel):
    qtbot.addWidget(panel)
    panel.resize(480, 360)
    panel.show()
    return panel


def view_range(panel) -> list[list[float]]:
    panel.item.vb.updateAutoRange()  # what the next paint shows
    return panel.item.vb.viewRange()


# ----------------------------------------------------------------------------- 1. plot ranges


def test_one_accuracy_point_gets_a_sensible_range(qtbot):
    panel = shown(qtbot, AccuracyPanel())
    panel.set_records([one_epoch(accuracy=50.0)])
    (x0, x1), (y0, y1) = view_range(panel)
    assert -0.1 <= x0 <= 0.0 and 1.0 <= x1 <= 1.2  # epochs from 0, one at least
    assert 40.0 <= y0 <= 48.0 and 52.0 <= y1 <= 60.0  # a few points around 50 %, not -20 to 60
    panel.set_records([one_epoch(accuracy=99.5)])
    (_, _), (y0, y1) = view_range(panel)
    assert 85.0 <= y0 <= 95.0 and 99.5 < y1 <= 101.0  # inside 0..100 (but a small margin)


def test_wall_time_axis_starts_at_zero_and_covers_a_minute(qtbot):
    panel = shown(qtbot, LossPanel())
    panel.x_axis = "time"
    panel.set_records([one_epoch(elapsed=12.0)])  # 0.2 min
    (x0, x1), (y0, y1) = view_range(panel)
    assert -0.1 <= x0 <= 0.0 and 1.0 <= x1 <= 1.2
    assert y0 < 1.5 < y1 and y1 - y0 >= 0.2


def test_an_empty_log_scale_losses_plot_has_a_sane_range(qtbot):
    panel = shown(qtbot, LossPanel())
    panel.log_y.setChecked(True)
    panel.set_records([])
    assert view_range(panel) == [[0.0, 1.0], [-1.0, 1.0]]  # epochs 0 to 1, losses 0.1 to 10
    panel.log_y.setChecked(False)
    assert view_range(panel) == [[0.0, 1.0], [0.0, 1.0]]


# ----------------------------------------------------------------------------- 2. read-outs


def confusion_run(name: str = "c") -> RunRecord:
    record = one_epoch(name)
    record.feed(Evaluation("student", "student", 1, 60.0, ["a", "b", "c"],
                           [[5, 1, 0], [0, 4, 2], [1, 0, 6]]).to_dict())
    return record


def scene_point(panel, x: float, y: float) -> QPointF:
    return panel.item.vb.mapViewToScene(QPointF(x, y))


def readout(panel) -> str:
    """The read-out on the plot now ("" when none shows)."""
    text = panel.hover_text
    return text.textItem.toPlainText() if text.scene() is not None and text.isVisible() else ""


def leave(panel) -> None:
    QApplication.sendEvent(panel.plot.viewport(), QEvent(QEvent.Type.Leave))


def test_read_outs_hide_when_the_pointer_leaves(qtbot):
    losses = shown(qtbot, LossPanel())
    losses.set_records([one_epoch()])
    view_range(losses)
    losses._mouse_moved((scene_point(losses, 1.0, 1.5),))  # over the epoch's loss
    assert "1.5" in readout(losses)
    leave(losses)
    assert readout(losses) == "" and not losses.hover_dot.isVisible()

    confusion = shown(qtbot, ConfusionPanel())
    confusion.set_records([confusion_run()])
    view_range(confusion)
    # through the rate limiter, as the pointer moves: the move it still holds when the pointer
    # leaves must not bring the read-out back
    confusion.plot.scene().sigMouseMoved.emit(scene_point(confusion, 1.0, 2.0))
    qtbot.waitUntil(lambda: "true c → predicted b" in readout(confusion), timeout=2000)
    confusion._mouse_moved((scene_point(confusion, 2.0, 2.0),))
    confusion.plot.scene().sigMouseMoved.emit(scene_point(confusion, 0.0, 0.0))
    leave(confusion)
    qtbot.wait(100)
    assert readout(confusion) == ""


# ----------------------------------------------------------------------------- 3. keyboard


def test_a_confusion_cell_opens_from_the_keyboard(qtbot):
    panel = shown(qtbot, ConfusionPanel())
    record = confusion_run()
    panel.set_records([record])
    panel.activateWindow()
    panel.plot.setFocus()
    qtbot.waitUntil(panel.plot.hasFocus, timeout=2000)
    assert panel.cursor == (0, 0) and panel.cursor_box.isVisible()
    for key in (Qt.Key.Key_Right, Qt.Key.Key_Right, Qt.Key.Key_Right, Qt.Key.Key_Down):  # stops at the edge
        qtbot.keyClick(panel.plot, key)
    assert panel.cursor == (1, 2) and (panel.cursor_box.pos().x(), panel.cursor_box.pos().y()) == (2.0, 1.0)
    assert "true b → predicted c" in readout(panel)
    with qtbot.waitSignal(panel.cell_clicked, timeout=1000) as opened:
        qtbot.keyClick(panel.plot, Qt.Key.Key_Return)
    assert opened.args[:4] == [record, "student", 1, 2] and opened.args[4]["confusion"][1][2] == 2
    qtbot.keyClick(panel.plot, Qt.Key.Key_Left)
    with qtbot.waitSignal(panel.cell_clicked, timeout=1000) as opened:
        qtbot.keyClick(panel.plot, Qt.Key.Key_Enter)
    assert opened.args[2:4] == [1, 1]
    panel.plot.clearFocus()
    qtbot.waitUntil(lambda: not panel.cursor_box.isVisible(), timeout=2000)


# ----------------------------------------------------------------------------- 4. run colours


def drawn_colours(area: PlotArea) -> dict[str, str]:
    """Each overlaid run's colour in the accuracy panel, by its label."""
    area.accuracy.refresh(force=True)
    return {name.split(" · ")[0]: colour for _, name, colour, _ in area.accuracy._legend_entries}


def test_a_run_keeps_its_colour_whatever_is_drawn_beside_it(qtbot):
    area = PlotArea()
    qtbot.addWidget(area)
    a, b, c = (one_epoch(n, 40.0 + 10 * i) for i, n in enumerate("ABC"))
    area.set_records([a, b])
    first = drawn_colours(area)
    area.set_records([b, c])
    second = drawn_colours(area)
    area.set_records([a, b, c])
    third = drawn_colours(area)
    assert first["B"] == second["B"] == third["B"] and first["A"] == third["A"] and second["C"] == third["C"]
    assert len(set(third.values())) == 3  # still three colours
    assert third["C"] in area.run_legend.text() and third["A"] in area.run_legend.text()

    # a run that has no folder yet keeps its colour when the folder is known, and the record read
    # back from that folder later (a finished run reopened) has it too
    live = RunRecord(label="live")  # as the window makes it, before the engine's first event
    area.set_records([a, live])
    colour = area.run_styles.style(live)[0]
    assert colour in area.run_legend.text() and colour not in third.values()
    live.feed(RunStarted("/runs/live", {"name": "live"}, "cpu").to_dict())
    live.feed(StageStarted("student", 2, 4).to_dict())
    live.feed(EpochEnd("student", 1, 2, {"total": 1.5}, 70.0, 70.0, 0.05, 1.0).to_dict())
    area.set_records([c, live])
    assert drawn_colours(area)["live"] == colour
    area.set_records([b, one_epoch("live", run_dir="/runs/live")])
    assert drawn_colours(area)["live"] == colour


# ----------------------------------------------------------------------------- 5. the info glyph


def texts(widget: QWidget) -> list[str]:
    found = [widget.toolTip()]
    if isinstance(widget, (QLabel, QAbstractButton)):
        found.append(widget.text())
    if isinstance(widget, QComboBox):
        found += [widget.itemText(i) for i in range(widget.count())]
    if isinstance(widget, QLineEdit):
        found += [widget.text(), widget.placeholderText()]
    if isinstance(widget, QGroupBox):
        found.append(widget.title())
    return found


def test_field_notes_use_no_glyph_the_font_may_lack(qtbot):
    from mgd_gui.setup.form import ConfigForm

    form = ConfigForm()
    qtbot.addWidget(form)
    form.set_note("comparison.baselines", "Run queues 2 runs")
    assert form.note_text("comparison.baselines") == "Run queues 2 runs"
    widgets = [form, *form.findChildren(QWidget)]
    assert not [t for w in widgets for t in texts(w) if "\u24d8" in t]
    row = form._rows["comparison.baselines"]
    assert not row.note_box.isHidden() and row.note_mark.text()
    for label in (row.note_mark, row.note):  # every character of the note in the label's own font
        metrics = QFontMetrics(label.font())
        assert all(metrics.inFontUcs4(ord(ch)) for ch in label.text()), label.text()
    form.set_note("comparison.baselines", None)
    assert row.note_box.isHidden() and form.note_text("comparison.baselines") == ""


# ----------------------------------------------------------------------------- 6. Try an image


def test_a_failed_try_clears_the_last_image_and_verdict(qtbot, finished_run, tmp_path):  # noqa: F811
    from mgd_gui.review_view import ReviewDialog

    dialog = ReviewDialog(finished_run, run_info(finished_run).label)
    qtbot.addWidget(dialog)
    dialog.show()
    pred = run_predictions(finished_run)
    good = tmp_path / "a digit.png"
    Image.fromarray(pred.images[3].numpy()[0], mode="L").save(good)
    dialog.try_image(str(good))
    qtbot.waitUntil(lambda: dialog.try_result is not None or dialog.error is not None, timeout=WAIT_MS)
    assert dialog.error is None and not dialog.drop.pixmap().isNull()
    title = dialog.tables["student"].property("title")
    assert "%" in title.text() and dialog.tables["student"].rowCount() == 5

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    dialog.try_image(str(bad))
    qtbot.waitUntil(lambda: dialog.error is not None, timeout=WAIT_MS)
    assert "not an image in an allowed format" in dialog.try_status.text()
    assert dialog.drop.pixmap().isNull() and "Drop an image" in dialog.drop.text()  # no picture left
    for role, table in dialog.tables.items():  # no verdict left
        assert table.rowCount() == 0 and table.property("title").text() == f"<b>{role.capitalize()}</b>"
    assert dialog.try_result is None
    dialog.close()


# ----------------------------------------------------------------------------- 7. run names


def test_a_renamed_run_is_named_so_in_inspect_and_export(qtbot, finished_run):  # noqa: F811
    from mgd_gui.export_dialog import ExportDialog
    from mgd_gui.inspect_view import InspectDialog

    annotate_run(finished_run, name="my best run")
    runs = list_runs(finished_run.parent)
    dialog = InspectDialog(finished_run, runs)
    qtbot.addWidget(dialog)
    assert "my best run" in dialog.windowTitle() and "my best run" in dialog.header.text()
    dialog.show()
    dialog.start()
    qtbot.waitUntil(lambda: dialog.running is None, timeout=WAIT_MS)
    assert dialog.error is None, dialog.error
    assert dialog.header.text().startswith("<b>my best run</b>") and "kd-mgd" not in dialog.header.text()
    assert dialog.status.text() == "Inspected my best run."
    dialog.close()

    export = ExportDialog(runs, finished_run)
    qtbot.addWidget(export)
    assert export.run_combo.currentText().startswith("my best run  (")


def test_a_comparison_run_reads_the_same_in_the_runs_panel_and_export(qtbot, studio_home):
    from mgd_gui.export_dialog import ExportDialog
    from mgd_gui.runs_panel import COL, RunsPanel
    from tests.gui.test_compare import make_runs

    paths, _ = make_runs(studio_home)
    run = paths[3]  # comparison-demo/s1-kd-off, its experiment named demo-kd-off-s1
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "checkpoints" / "student.pt").write_bytes(b"")  # listed by Export: it has a student
    panel = RunsPanel(studio_home / "runs")
    qtbot.addWidget(panel)
    panel.refresh()
    name = next(panel.tree.topLevelItem(i).text(COL["Name"]) for i in range(panel.tree.topLevelItemCount())
                if panel.tree.topLevelItem(i).data(0, Qt.ItemDataRole.UserRole) == run)
    assert name == "demo › s1-kd-off"
    export = ExportDialog(list(panel.infos.values()), run)
    qtbot.addWidget(export)
    assert export.run_combo.currentText().startswith(f"{name}  (") and "demo-kd-off-s1" not in \
        export.run_combo.currentText()

