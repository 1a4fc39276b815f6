"""Image-level review of a run: the test images of a confusion cell with the teacher's and the
student's top predictions beside each, and *Try*: an image file of the user's (opened or
dropped in) classified by the run's student and teacher, top-5 with probabilities.

The engine computes everything (:mod:`engine.review`) in the window's background thread
(:class:`mgd_gui.tasks.Tasks`, the newest request of a kind wins); this module shows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QFrame, QGridLayout, QHBoxLayout,
                               QHeaderView, QLabel, QListWidget, QListWidgetItem, QProgressBar, QPushButton,
                               QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from mgd_gui import theme
from mgd_gui.screen import FittedDialog
from mgd_gui.setup.data_preview import to_pixmap
from mgd_gui.tasks import Tasks

THUMB = 64  # pixels of a test image in the cell's grid
PREVIEW = 160  # pixels of the tried image
IMAGE_FILES = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp *.ppm *.pgm)"
DROP_TEXT = "Drop an image file here\nor choose one with Open image…"


# ----------------------------------------------------------------------------- engine calls (worker thread)


def _cell(run_dir: str, true: int, predicted: int, model: str) -> dict:
    from engine.review import confusion_cell

    return confusion_cell(run_dir, true, predicted, model=model, k=3, limit=120)


def _try(run_dir: str, path: str) -> dict:
    from engine.review import classify_image

    return classify_image(run_dir, path, k=5)


def top_text(ranked: list[tuple[str, float]] | None) -> str:
    """``5 71%, 3 20%, 8 5%``."""
    if ranked is None:
        return "–"
    return ", ".join(f"{name} {pct:.0f}%" if pct >= 0.5 else f"{name} <1%" for name, pct in ranked)


class DropLabel(QLabel):
    """A label that takes an image file dropped on it."""

    dropped = Signal(str)

    def __init__(self, text: str, parent: QWidget | None = None):
        super().__init__(text, parent)
        self.setAcceptDrops(True)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setMinimumSize(PREVIEW + 40, PREVIEW + 40)

    @staticmethod
    def _file(event) -> str | None:
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        local = [u.toLocalFile() for u in urls if u.isLocalFile()]
        return local[0] if local else None

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt name
        if self._file(event):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt name
        path = self._file(event)
        if path:
            event.acceptProposedAction()
            self.dropped.emit(path)


class ReviewDialog(FittedDialog):
    """One run's images: a confusion cell's test images, and Try with an image file."""

    def __init__(self, run_dir: Path, label: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.run_dir = Path(run_dir)
        self.label = label
        self.setWindowTitle(f"Review · {label}")
        self.fit(QSize(900, 640), QSize(560, 420))
        self.cell_result: dict | None = None
        self.try_result: dict | None = None
        self.error: str | None = None
        self.jobs = Tasks(self, name="mgd-review")
        self.jobs.on_answer(self._done)

        layout = QVBoxLayout(self)
        self.tabs = QTabWidget()
        layout.addWidget(self.tabs, 1)

        # -- a confusion cell ------------------------------------------------------------
        cell = QWidget()
        v = QVBoxLayout(cell)
        self.cell_title = QLabel("Click a cell of the confusion matrix (Classes tab) to see its test images.")
        self.cell_title.setWordWrap(True)
        self.cell_status = QLabel()
        self.cell_status.setWordWrap(True)
        self.cell_list = QListWidget()
        self.cell_list.setViewMode(QListWidget.ViewMode.IconMode)
        self.cell_list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.cell_list.setMovement(QListWidget.Movement.Static)
        self.cell_list.setIconSize(QSize(THUMB, THUMB))
        self.cell_list.setGridSize(QSize(210, THUMB + 64))
        self.cell_list.setWordWrap(True)
        self.cell_list.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        v.addWidget(self.cell_title)
        v.addWidget(self.cell_status)
        v.addWidget(self.cell_list, 1)
        self.tabs.addTab(cell, "Confusion cell")

        # -- try an image --------------------------------------------------------------------
        trial = QWidget()
        grid = QGridLayout(trial)
        self.drop = DropLabel(DROP_TEXT)
        self.drop.dropped.connect(self.try_image)
        self.open_button = QPushButton("Open image…")
        self.open_button.clicked.connect(self._open_image)
        self.try_status = QLabel("The image goes through the run's preprocessing: the data set's channels and "
                                 "size, then its mean and standard deviation.")
        self.try_status.setWordWrap(True)
        self.tables: dict[str, QTableWidget] = {}
        tables = QHBoxLayout()
        for role in ("student", "teacher"):
            box = QVBoxLayout()
            title = QLabel(f"<b>{role.capitalize()}</b>")
            table = QTableWidget(0, 3)
            table.setHorizontalHeaderLabels(["class", "probability", ""])
            table.verticalHeader().setVisible(False)
            table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
            table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
            table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
            table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
            box.addWidget(title)
            box.addWidget(table, 1)
            tables.addLayout(box, 1)
            self.tables[role] = table
            table.setProperty("title", title)
        grid.addWidget(self.drop, 0, 0)
        grid.addWidget(self.open_button, 1, 0)
        grid.addWidget(self.try_status, 2, 0, 1, 2)
        grid.addLayout(tables, 0, 1, 2, 1)
        grid.setColumnStretch(1, 1)
        grid.setRowStretch(3, 1)
        self.tabs.addTab(trial, "Try an image")

    # -- requests --------------------------------------------------------------------------
    def show_cell(self, true: int, predicted: int, model: str, classes: list[str] | None = None,
                  shown_count: int | None = None, evaluation: dict | None = None) -> None:
        """Ask for the test images of a cell of ``model``'s confusion matrix."""
        self.tabs.setCurrentIndex(0)
        names = classes or []
        tn = names[true] if true < len(names) else str(true)
        pn = names[predicted] if predicted < len(names) else str(predicted)
        self.cell_title.setText(f"<b>True {tn} → predicted {pn}</b> by the {model} of {self.label}")
        self.cell_list.clear()
        self.cell_result = None
        self._expected = (shown_count, evaluation or {})
        self._status(self.cell_status, "Computing the predictions of the teacher and the student on the test set…")
        self.jobs.submit("cell", _cell, str(self.run_dir), int(true), int(predicted), model)

    def try_image(self, path: str) -> None:
        self.tabs.setCurrentIndex(1)
        self._clear_try()
        self._status(self.try_status, f"Classifying {Path(path).name}…")
        self.jobs.submit("try", _try, str(self.run_dir), str(path))

    def _open_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Try an image", str(Path.home()), IMAGE_FILES)
        if path:
            self.try_image(path)

    # -- answers ---------------------------------------------------------------------------
    def _status(self, label: QLabel, text: str, error: bool = False) -> None:
        label.setText(text)
        label.setStyleSheet(f"color: {theme.error_color()};" if error else "")

    def _done(self, kind: str, token: int, result: Any, error: Any) -> None:
        label = self.cell_status if kind == "cell" else self.try_status
        if error is not None:
            self.error = str(error)
            if kind == "try":  # nothing of an earlier image stays beside the error
                self._clear_try()
            self._status(label, f"Cannot {'review the cell' if kind == 'cell' else 'classify the image'}: {error}",
                         error=True)
            return
        self.error = None
        if kind == "cell":
            self._show_cell(result)
        else:
            self._show_try(result)

    def _show_cell(self, result: dict) -> None:
        self.cell_result = result
        self.cell_list.clear()
        for item in result["items"]:
            text = (f"#{item['index']}\nteacher: {top_text(item['teacher'])}\n"
                    f"student: {top_text(item['student'])}")
            entry = QListWidgetItem(QIcon(to_pixmap(item["image"], THUMB)), text)
            entry.setToolTip(f"test image {item['index']}\nteacher's top 3: {top_text(item['teacher'])}\n"
                             f"student's top 3: {top_text(item['student'])}")
            entry.setTextAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
            self.cell_list.addItem(entry)
        count, shown = result["count"], len(result["items"])
        words = [f"{count} test image{'s' if count != 1 else ''}" + (f" (the first {shown} shown)" if shown < count
                                                                        else "")]
        expected, evaluation = self._expected
        if result["model"] == "student" and result.get("student_epoch"):
            words.append(f"the student at its best epoch ({result['student_epoch']})")
        if expected is not None and expected != count:
            epoch = evaluation.get("epoch")
            words.append(f"the matrix shown counts {expected} (its evaluation of epoch {epoch}, not of the best "
                         "weights)")
        if not count:
            words.append("no test image falls in this cell")
        words += result.get("notes") or []
        self._status(self.cell_status, "; ".join(words) + ". Each image: the teacher's and the student's top 3.")

    def _clear_try(self) -> None:
        """The Try tab without an image: no picture, no verdicts, no tables."""
        self.try_result = None
        self.drop.clear()
        self.drop.setText(DROP_TEXT)
        for role, table in self.tables.items():
            table.property("title").setText(f"<b>{role.capitalize()}</b>")
            table.setRowCount(0)

    def _show_try(self, result: dict) -> None:
        self.try_result = result
        h, w = result["size"]
        pixmap = to_pixmap(result["image"], PREVIEW)
        self.drop.setPixmap(pixmap)
        channels = "gray" if result["channels"] == 1 else "RGB"
        self._status(self.try_status, f"{Path(result['file']).name}, as the models see it: {w}×{h} {channels}, "
                                      "normalised with the run's mean and std. Drop or open another image.")
        for role, table in self.tables.items():
            ranked = result[role]
            title: QLabel = table.property("title")
            if ranked is None:
                title.setText(f"<b>{role.capitalize()}</b> (none in this run)")
                table.setRowCount(0)
                continue
            title.setText(f"<b>{role.capitalize()}</b>: {ranked[0][0]} ({ranked[0][1]:.1f}%)")
            table.setRowCount(len(ranked))
            for row, (name, pct) in enumerate(ranked):
                table.setItem(row, 0, QTableWidgetItem(name))
                cell = QTableWidgetItem(f"{pct:.1f}%" if pct >= 0.05 else "<0.1%")
                cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                table.setItem(row, 1, cell)
                bar = QProgressBar()
                bar.setRange(0, 1000)
                bar.setValue(int(round(10 * pct)))
                bar.setTextVisible(False)
                bar.setMaximumHeight(12)
                table.setCellWidget(row, 2, bar)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.jobs.close()  # an answer on its way is dropped
        super().closeEvent(event)
