"""Per-class accuracy and the confusion matrix of the latest test evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import QComboBox, QGraphicsRectItem

from mgd_gui.plots.base import PlotPanel
from mgd_gui.run.record import RunRecord
from mgd_gui.theme import series_color

MODELS = ("student", "teacher")
#: the arrow keys move the confusion matrix's keyboard cell by (rows, columns)
CELL_MOVES = {Qt.Key.Key_Up: (-1, 0), Qt.Key.Key_Down: (1, 0), Qt.Key.Key_Left: (0, -1), Qt.Key.Key_Right: (0, 1)}
OPEN_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space)


def per_class_accuracy(confusion: list[list[int]]) -> np.ndarray:
    m = np.asarray(confusion, dtype=float)
    if m.ndim != 2 or not m.size:
        return np.zeros(0)
    totals = m.sum(axis=1)
    return np.where(totals > 0, 100.0 * np.diag(m) / np.maximum(totals, 1), np.nan)


class _EvaluationPanel(PlotPanel):
    """A panel showing one model's latest Evaluation, chosen with a drop-down."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = QComboBox()
        self.model.addItem("auto", "auto")
        for m in MODELS:
            self.model.addItem(m, m)
        self.model.setToolTip("Whose latest test evaluation to show (auto: the student's, else the teacher's)")
        self.add_control(self.model)
        self.model.setMinimumContentsLength(max(len(m) for m in MODELS))
        self.model.currentIndexChanged.connect(lambda *_: self.refresh())

    def control_state(self) -> Any:
        return self.model.currentData()

    def evaluation(self, record: RunRecord) -> tuple[str, dict] | None:
        chosen = self.model.currentData()
        for name in (MODELS if chosen == "auto" else (chosen,)):
            ev = record.evaluations.get(name)
            if ev and ev.get("confusion"):
                return name, ev
        return None

    def data_key(self) -> Any:
        return tuple((id(r), tuple((k, v.get("epoch"), v.get("accuracy")) for k, v in r.evaluations.items()))
                     for r in self.records)


class ClassAccuracyPanel(_EvaluationPanel):
    title = "Per-class accuracy"
    x_label = "class"
    y_label = "test accuracy (%)"
    empty_text = "Per-class accuracy appears after the first test evaluation"
    bar_width = 0.8
    classes: list[str] = []

    def draw(self) -> None:
        found = [(r, self.evaluation(r)) for r in self.records]
        found = [(r, f) for r, f in found if f]
        self._set_title(f"<b>{self.title}</b>")
        if not found:
            return
        width = 0.8 / len(found)
        self.bar_width = width
        classes: list[str] = []
        for i, (record, (model, ev)) in enumerate(found):
            acc = per_class_accuracy(ev["confusion"])
            x = np.arange(len(acc)) - 0.4 + width * (i + 0.5)
            color = self.run_style(record)[0] if self.compare else series_color(1 if model == "student" else 0)
            name = self.label(record, f"{model}, epoch {ev.get('epoch')}")
            self.extra(pg.BarGraphItem(x=x, height=np.nan_to_num(acc), width=width * 0.9, brush=pg.mkBrush(color),
                                       pen=pg.mkPen(color)), name if self.compare else None, color)
            if not self.compare:
                self._set_title(f"<b>{self.title}</b> · {name}")
            self.series.append((name, x, acc))
            classes = classes or list(ev.get("classes") or record.classes) or [str(c) for c in range(len(acc))]
        self.classes = classes
        self.set_ticks("bottom", classes)
        self.item.setXRange(-0.6, len(classes) - 0.4, padding=0)
        self.item.setYRange(0, 105, padding=0)

    def hover_at(self, x, y, px, py):
        for name, xs, ys in self.series:
            if not len(xs):
                continue
            i = int(np.argmin(np.abs(xs - x)))
            if abs(xs[i] - x) <= self.bar_width / 2 and np.isfinite(ys[i]) and i < len(self.classes):
                return xs[i], ys[i], f"{name}\nclass {self.classes[i]}: {ys[i]:.1f}%"
        return None


class ConfusionPanel(_EvaluationPanel):
    """Clicking a cell emits ``cell_clicked(record, model, true, predicted, evaluation)``; so does
    Enter on the keyboard's cell (the matrix takes the focus with Tab or a click, the arrow keys
    move the framed cell, whose read-out shows)."""

    cell_clicked = Signal(object, str, int, int, object)
    title = "Confusion matrix"
    x_label = "predicted class"
    y_label = "true class"
    empty_text = "The confusion matrix appears after the first test evaluation"
    max_text_classes = 12

    def __init__(self, parent=None):
        super().__init__(parent)
        self.item.invertY(True)
        self.item.setAspectLocked(False)
        self.item.showGrid(x=False, y=False)
        self.matrix = np.zeros((0, 0))
        self.classes: list[str] = []
        # no axis label on the bar (it lands over the bar); the tooltip and the hover say what it shows
        self.shown: tuple[RunRecord, str, dict] | None = None  # the record, model and evaluation drawn
        self.plot.scene().sigMouseClicked.connect(self._clicked)
        self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("viridis"), interactive=False,
                                        width=12)
        self.plot.setToolTip("Colour: the share of the true class (row) predicted as each class (column). "
                             "Click a cell to see its test images (or, with the matrix focused, move with the "
                             "arrow keys and press Enter).")
        self._bar_attached = False
        self.cursor: tuple[int, int] | None = None  # (true, predicted) of the keyboard's cell
        self._keyboard = False  # the matrix has the focus from the keyboard (or a key was pressed): frame the cell
        self.cursor_box = QGraphicsRectItem(-0.5, -0.5, 1.0, 1.0)
        pen = pg.mkPen("#ff2d55", width=3)
        pen.setCosmetic(True)
        self.cursor_box.setPen(pen)
        self.cursor_box.setZValue(98)
        self.cursor_box.hide()
        self.plot.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.plot.installEventFilter(self)

    def draw(self) -> None:
        self.matrix = np.zeros((0, 0))
        self.shown = None
        self._set_title(f"<b>{self.title}</b>")
        found = next(((r, f) for r in self.records if (f := self.evaluation(r))), None)
        if not found:
            self._show_cursor()  # no cell to frame
            return
        record, (model, ev) = found
        self.shown = (record, model, ev)
        m = np.asarray(ev["confusion"], dtype=float)
        self.matrix = m
        self.classes = list(ev.get("classes") or record.classes) or [str(i) for i in range(len(m))]
        rates = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        image = pg.ImageItem(rates.T)  # ImageItem is indexed [x][y]: x = predicted, y = true
        image.setRect(-0.5, -0.5, m.shape[1], m.shape[0])
        self.extra(image)
        if not self._bar_attached:
            self.colorbar.setImageItem(image, insert_in=self.item)
            self._bar_attached = True
        else:
            self.colorbar.setImageItem(image)
        if len(m) <= self.max_text_classes:
            for t in range(m.shape[0]):
                for p in range(m.shape[1]):
                    if m[t, p]:
                        text = pg.TextItem(str(int(m[t, p])), anchor=(0.5, 0.5),
                                           color="k" if rates[t, p] > 0.6 else "w")
                        text.setPos(p, t)
                        self.extra(text)
        self.set_ticks("bottom", self.classes)
        self.set_ticks("left", self.classes)
        self.item.setRange(xRange=(-0.5, m.shape[1] - 0.5), yRange=(-0.5, m.shape[0] - 0.5), padding=0)
        prefix = f"{record.label} · " if self.compare else ""
        self._set_title(f"<b>{self.title}</b> · {prefix}{model}, epoch {ev.get('epoch')}, "
                                 f"{float(ev.get('accuracy') or 0):.1f}%")
        # for CSV: one series per true class, x = predicted class index, y = count
        for t in range(m.shape[0]):
            self.series.append((f"true {self.classes[t]}", np.arange(m.shape[1], dtype=float), m[t]))
        if self.cursor is not None:  # the keyboard's cell stays inside a matrix of other classes
            self.cursor = (min(self.cursor[0], m.shape[0] - 1), min(self.cursor[1], m.shape[1] - 1))
        self._show_cursor()

    def hover_at(self, x, y, px, py):
        m = self.matrix
        p, t = int(round(x)), int(round(y))
        if not m.size or not (0 <= t < m.shape[0] and 0 <= p < m.shape[1]):
            return None
        total = m[t].sum()
        share = 100 * m[t, p] / total if total else 0.0
        return p, t, (f"true {self.classes[t]} → predicted {self.classes[p]}\n"
                      f"{int(m[t, p])} images ({share:.1f}% of class {self.classes[t]})"
                      + ("\nclick or press Enter to see them" if m[t, p] else ""))

    def cell_at(self, scene_pos) -> tuple[int, int] | None:
        """(true, predicted) of the cell under a scene position, or None outside the matrix."""
        m = self.matrix
        vb = self.item.getViewBox()
        if not m.size or not vb.sceneBoundingRect().contains(scene_pos):
            return None
        point = vb.mapSceneToView(scene_pos)
        p, t = int(round(point.x())), int(round(point.y()))
        return (t, p) if 0 <= t < m.shape[0] and 0 <= p < m.shape[1] else None

    def _clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or self.shown is None:
            return
        cell = self.cell_at(event.scenePos())
        if cell is not None:
            self.cursor = cell
            self._show_cursor()
            self.open_cell(*cell)

    def open_cell(self, true: int, predicted: int) -> None:
        """Emit ``cell_clicked`` for a cell of the matrix shown."""
        if self.shown is not None:
            record, model, ev = self.shown
            self.cell_clicked.emit(record, model, true, predicted, ev)

    # -- the keyboard's cell ---------------------------------------------------------------
    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt name
        if watched is self.plot:
            kind = event.type()
            if kind == QEvent.Type.KeyPress and self.matrix.size and self._key(event.key()):
                return True
            if kind in (QEvent.Type.FocusIn, QEvent.Type.FocusOut):
                self._keyboard = kind == QEvent.Type.FocusIn and event.reason() != Qt.FocusReason.MouseFocusReason
                self._show_cursor()
        return super().eventFilter(watched, event)

    def _key(self, key) -> bool:
        """Move the keyboard's cell or open it; False for a key that is not the matrix's."""
        rows, cols = self.matrix.shape
        t, p = self.cursor if self.cursor is not None else (0, 0)
        if key in CELL_MOVES or key in OPEN_KEYS:
            self._keyboard = True
        if key in CELL_MOVES:
            dt, dp = CELL_MOVES[key]
            self.cursor = (min(max(t + dt, 0), rows - 1), min(max(p + dp, 0), cols - 1))
            self._show_cursor()
            return True
        if key in OPEN_KEYS:
            self.cursor = (t, p)
            self._show_cursor()
            self.open_cell(t, p)
            return True
        return False

    def _show_cursor(self) -> None:
        """Frame the keyboard's cell, with its read-out, while the matrix has the keyboard's focus."""
        focused = self._keyboard and self.plot.hasFocus() and bool(self.matrix.size)
        if focused and self.cursor is None:
            self.cursor = (0, 0)
        if not focused:
            if self.cursor_box.isVisible():
                self.cursor_box.hide()
                self._hide_hover()
            return
        if self.cursor_box.scene() is None:
            self.item.addItem(self.cursor_box, ignoreBounds=True)
        t, p = self.cursor
        self.cursor_box.setPos(p, t)
        self.cursor_box.show()
        found = self.hover_at(p, t, 1.0, 1.0)
        if found is not None:
            self.show_readout(*found)

    def csv_rows(self) -> list[list[Any]]:
        if not self.matrix.size:
            return [["true \\ predicted"]]
        rows: list[list[Any]] = [["true \\ predicted", *self.classes]]
        for t, name in enumerate(self.classes):
            rows.append([name, *[int(v) for v in self.matrix[t]]])
        return rows
