"""The Inspect view of a finished run: what the teacher, each granularity head and the student
attend to (Grad-CAM), the granularity codes in two dimensions, and where the student gains
over another run.

Everything is computed by :mod:`engine.inspect` in the background (one :class:`mgd_gui.tasks.Tasks` lane,
progress in the window, Cancel); this module only shows the results.
"""

from __future__ import annotations

import html
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QComboBox, QFileDialog, QGridLayout,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QProgressBar, QPushButton, QRadioButton, QScrollArea, QSizePolicy, QSpinBox,
                               QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from engine.runs import RunInfo, run_info
from mgd_gui import theme
from mgd_gui.icons import icon
from mgd_gui.screen import FittedDialog
from mgd_gui.tasks import Tasks

CELL = 84  # pixels of one image in the map grid
THUMB = 56  # pixels of one image in the gain lists
PREVIEW = 128  # pixels of the hovered image
MINIMUM = QSize(760, 520)  # the smallest the window can be made


# ----------------------------------------------------------------------------- engine calls (worker thread)


def _inspect(run_dir: str, per_class: int, indices: list[int] | None, progress, cancelled):
    from engine.inspect.analysis import inspect_run

    return inspect_run(run_dir, images_per_class=per_class, indices=indices, progress=progress, cancelled=cancelled)


def _maps(inspection, indices: list[int], stages_back: int, progress, cancelled):
    from engine.inspect.cam import class_activation_maps

    return class_activation_maps(inspection.models, inspection.test, indices, stages_back=stages_back,
                                 progress=progress, cancelled=cancelled)


def _compare(inspection, other_dir: str, progress, cancelled):
    from engine.inspect.analysis import compare_runs, load_run_models

    other = load_run_models(other_dir)
    return other, compare_runs(inspection, other, progress=progress, cancelled=cancelled)


def _codes(inspection, method: str, progress, cancelled):
    from engine.inspect.codes import code_projections

    return code_projections(inspection.outputs, method=method, seed=int(inspection.models.config.seed),
                            progress=progress, cancelled=cancelled)


def _methods() -> list[str]:
    from engine.inspect.codes import available_methods

    return available_methods()


def _report(inspection, out_dir: str, progress, cancelled):
    from engine.inspect.report import write_report

    progress(0, 1)
    files = write_report(inspection, out_dir)
    progress(1, 1)
    return files


ENGINE: dict[str, Callable[..., Any]] = {"inspect": _inspect, "maps": _maps, "codes": _codes, "compare": _compare,
                                         "report": _report}


# ----------------------------------------------------------------------------- small helpers


def pixmap(rgb: np.ndarray, size: int) -> QPixmap:
    """An ``H x W x 3`` uint8 array as a ``size`` x ``size`` pixmap (nearest: tiny images stay crisp)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    image = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(image.scaled(size, size, Qt.AspectRatioMode.IgnoreAspectRatio,
                                          Qt.TransformationMode.FastTransformation))


def parse_indices(text: str) -> list[int]:
    """``"3, 17 42"`` -> ``[3, 17, 42]`` (ValueError naming the bad part)."""
    out = []
    for part in text.replace(",", " ").split():
        if not part.isdigit():
            raise ValueError(f"{part!r} is not a test image number")
        if int(part) not in out:
            out.append(int(part))
    return out


def _muted(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet(f"color: {theme.muted_color()};")
    return label


# ----------------------------------------------------------------------------- the view


class InspectDialog(FittedDialog):
    """Inspect one run (maps, codes, gain against a second run), computed in the background."""

    finished_job = Signal(str, object)  # kind, error (None when it worked): for tests and the log

    def __init__(self, run_dir: str | Path, runs: list[RunInfo] = (), parent: QWidget | None = None,
                 per_class: int = 1, engine: dict[str, Callable[..., Any]] | None = None):
        super().__init__(parent)
        self.run_dir = Path(run_dir)
        self._labels = {Path(info.path): info.label for info in runs}  # each run's name, as the Runs panel's
        self.run_name = self.label_of(self.run_dir)
        self.engine = dict(ENGINE, **(engine or {}))
        self.setWindowTitle(f"Inspect – {self.run_name}")
        self.setObjectName("inspectDialog")
        self.inspection = None
        self.running: str | None = None
        self.error: str | None = None
        self.saved: dict | None = None

        self.jobs = Tasks(self, name="mgd-inspect")
        self.jobs.on_answer(self._done)
        self.jobs.progress.connect(lambda kind, token, p: self._progress(kind, int(p.done), int(p.total or 0)))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(6)
        self.header = QLabel(f"<b>{html.escape(self.run_name)}</b>")
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.header.setWordWrap(True)
        layout.addWidget(self.header)
        self.notes = _muted("")
        self.notes.hide()
        layout.addWidget(self.notes)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("First"))
        self.per_class = QSpinBox()
        self.per_class.setRange(1, 50)
        self.per_class.setValue(per_class)
        self.per_class.setToolTip("Maps for the first N test images of each class")
        self.per_class.valueChanged.connect(lambda _v: self.images.clear())
        controls.addWidget(self.per_class)
        controls.addWidget(QLabel("of each class, or images"))
        self.images = QLineEdit()
        self.images.setPlaceholderText("test image numbers, e.g. 3, 17, 42 (or click points in Codes)")
        self.images.setToolTip("The test images to map; empty: the first N of each class")
        self.images.returnPressed.connect(self.compute_maps)
        controls.addWidget(self.images, 1)
        self.maps_button = QPushButton("Compute maps")
        self.maps_button.setToolTip("Grad-CAM of the teacher, each granularity head and the student for these images")
        self.maps_button.clicked.connect(self._maps_clicked)
        controls.addWidget(self.maps_button)
        layout.addLayout(controls)
        controls = QHBoxLayout()  # a second row: the window fits a 1024 px screen
        controls.addWidget(QLabel("Compare with"))
        self.other = QComboBox()
        self.other.setToolTip("A second run on the same data (for example KD without MGD, same seed)")
        self.other.setMinimumWidth(200)
        self.other.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.other.setMinimumContentsLength(40)  # a long run name is elided, not a reason to widen the window
        for info in runs:
            if info.path != self.run_dir and info.has_student:
                acc = f", {info.student_acc:.2f}%" if info.student_acc is not None else ""
                self.other.addItem(f"{info.label} ({info.distiller}, MGD {info.mode}{acc})", str(info.path))
        controls.addWidget(self.other)
        self.compare_button = QPushButton("Compare")
        self.compare_button.setIcon(icon("compare"))
        self.compare_button.setToolTip("Per-class accuracy of both students and the images one gets right and "
                                       "the other wrong")
        self.compare_button.clicked.connect(self.compare)
        controls.addWidget(self.compare_button)
        controls.addStretch(1)
        self.report_button = QPushButton("Save report…")
        self.report_button.setIcon(icon("export"))
        self.report_button.setToolTip("Write the figures as PNG files and one self-contained HTML page "
                                      "(as mgd-train inspect does)")
        self.report_button.clicked.connect(self._save_report_dialog)
        controls.addWidget(self.report_button)
        layout.addLayout(controls)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_maps_tab(), "Maps")
        self.tabs.addTab(self._build_codes_tab(), "Codes")
        self.tabs.addTab(self._build_gain_tab(), "Gain")
        layout.addWidget(self.tabs, 1)

        bottom = QHBoxLayout()
        self.status = QLabel("")
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bottom.addWidget(self.status, 1)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setFixedWidth(220)
        self.bar.setTextVisible(False)
        bottom.addWidget(self.bar)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setIcon(icon("stop"))
        self.cancel_button.setToolTip("Stop the computation in progress")
        self.cancel_button.clicked.connect(self.cancel)
        bottom.addWidget(self.cancel_button)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        bottom.addWidget(close)
        layout.addLayout(bottom)

        self.fit(QSize(1180, 820), MINIMUM)
        self._update_buttons()
        self.start()

    # -- tabs ----------------------------------------------------------------------------
    def _build_maps_tab(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        row = QHBoxLayout()
        self.target_group = QButtonGroup(page)
        self.target_buttons: dict[str, QRadioButton] = {}
        for key, text, tip in (("predicted", "Predicted class", "Each model's map for the class it predicts"),
                               ("true", "True class", "Each model's map for the image's label")):
            button = QRadioButton(text)
            button.setToolTip(tip)
            self.target_group.addButton(button)
            self.target_buttons[key] = button
            row.addWidget(button)
            button.toggled.connect(lambda on: on and self._show_maps())
        self.target_buttons["predicted"].setChecked(True)
        row.addSpacing(12)
        row.addWidget(QLabel("Feature map"))
        self.stage = QComboBox()
        for back, text in ((0, "last stage"), (1, "one stage earlier"), (2, "two stages earlier")):
            self.stage.addItem(text, back)
        self.stage.setToolTip("Which stage output the maps are taken on: the last one (usual Grad-CAM) or an "
                              "earlier, finer one (tiny images have 2x2 maps at the last stage)")
        self.stage.currentIndexChanged.connect(lambda _i: self.compute_maps())
        row.addWidget(self.stage)
        row.addSpacing(12)
        self.layers = _muted("")
        row.addWidget(self.layers, 1)
        v.addLayout(row)
        self.maps_area = QScrollArea()
        self.maps_area.setWidgetResizable(True)
        self.maps_grid_widget = QWidget()
        self.maps_grid = QGridLayout(self.maps_grid_widget)
        self.maps_grid.setHorizontalSpacing(6)
        self.maps_grid.setVerticalSpacing(2)
        self.maps_area.setWidget(self.maps_grid_widget)
        v.addWidget(self.maps_area, 1)
        v.addWidget(_muted("Grad-CAM (torchcam) on each model's last stage output whose map is larger than 1x1; a "
                           "granularity head's map is taken through its decoded logits on the teacher's features. "
                           "Under each map: the model's prediction and confidence, green when right."))
        return page

    def _build_codes_tab(self) -> QWidget:
        page = QWidget()
        outer = QVBoxLayout(page)
        row = QHBoxLayout()
        row.addWidget(QLabel("Projection"))
        self.method = QComboBox()
        self.method.addItem("PCA", "pca")
        self.method.setToolTip("How the codes go to two dimensions: PCA, or t-SNE / UMAP when scikit-learn / "
                               "umap-learn is installed (pip install \"mgd-studio[projections]\")")
        self.method.currentIndexChanged.connect(lambda _i: self.compute_codes())
        row.addWidget(self.method)
        row.addWidget(_muted("Codes are centred per image (the code loss compares softmax(code / T), which ignores "
                             "a constant shift); separation: leave-one-out 5-NN accuracy in the plane."), 1)
        outer.addLayout(row)
        h = QHBoxLayout()
        outer.addLayout(h, 1)
        self.codes_area = QScrollArea()
        self.codes_area.setWidgetResizable(True)
        self.codes_widget = QWidget()
        self.codes_grid = QGridLayout(self.codes_widget)
        self.codes_area.setWidget(self.codes_widget)
        h.addWidget(self.codes_area, 1)
        side = QVBoxLayout()
        self.preview = QLabel()
        self.preview.setFixedSize(PREVIEW, PREVIEW)
        self.preview.setStyleSheet("border: 1px solid #888;")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        side.addWidget(self.preview)
        self.preview_text = QLabel("Hover a point to see its image; click it to add it to the maps.")
        self.preview_text.setWordWrap(True)
        self.preview_text.setFixedWidth(PREVIEW + 40)
        side.addWidget(self.preview_text)
        side.addStretch(1)
        h.addLayout(side)
        self.plots: list[tuple[pg.PlotWidget, Any]] = []
        return page

    def _build_gain_tab(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        self.gain_title = QLabel("")
        self.gain_title.setWordWrap(True)
        v.addWidget(self.gain_title)
        top = QHBoxLayout()
        self.gain_plot = pg.PlotWidget()
        self.gain_plot.setMinimumHeight(160)  # the window fits 1024x700 (a taller one scales the plot)
        self.gain_plot.setLabel("left", "test accuracy (%)")
        self.gain_plot.setMouseEnabled(False, False)
        self.gain_legend = self.gain_plot.addLegend(offset=(-10, 4), colCount=2)
        top.addWidget(self.gain_plot, 3)
        self.gain_table = QTableWidget(0, 5)
        self.gain_table.setHorizontalHeaderLabels(["Class", "Images", "A", "B", "B − A"])
        self.gain_table.verticalHeader().hide()
        self.gain_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.gain_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        top.addWidget(self.gain_table, 2)
        v.addLayout(top, 3)
        self.b_only_label = QLabel("")
        v.addWidget(self.b_only_label)
        self.b_only = self._thumb_list()
        v.addWidget(self.b_only, 1)
        self.a_only_label = QLabel("")
        v.addWidget(self.a_only_label)
        self.a_only = self._thumb_list()
        v.addWidget(self.a_only, 1)
        return page

    @staticmethod
    def _thumb_list() -> QListWidget:
        w = QListWidget()
        w.setViewMode(QListWidget.ViewMode.IconMode)
        w.setIconSize(QSize(THUMB, THUMB))
        w.setFlow(QListWidget.Flow.LeftToRight)
        w.setWrapping(True)
        w.setResizeMode(QListWidget.ResizeMode.Adjust)
        w.setMinimumHeight(THUMB + 34)
        w.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        return w

    # -- jobs ----------------------------------------------------------------------------
    def _submit(self, kind: str, text: str, *args) -> None:
        self.running = kind
        self.error = None
        fn = self.engine[kind]
        self.bar.setValue(0)
        self.bar.show()
        self.status.setText(text)
        self.status.setStyleSheet("")
        self._update_buttons()
        # the engine's functions take a progress callback and a "cancelled?" callable last
        self.jobs.submit(kind, lambda task, *a: fn(*a, task.progress, lambda: task.cancelled), *args, state=True)

    def start(self) -> None:
        """Inspect the run: load its models, maps of the first images of each class, codes, teacher-student gap."""
        self._submit("inspect", f"Inspecting {self.run_name}…", str(self.run_dir), self.per_class.value(), None)

    def compute_maps(self) -> None:
        if self.inspection is None or self.running:
            return
        try:
            indices = parse_indices(self.images.text())
        except ValueError as exc:
            self._show_error(str(exc))
            return
        if not indices:
            from engine.inspect.cam import first_per_class

            indices = first_per_class(self.inspection.test.labels, self.per_class.value())
        self._submit("maps", f"Computing the maps of {len(indices)} images…", self.inspection, indices,
                     int(self.stage.currentData()))

    def compute_codes(self) -> None:
        if self.inspection is None or self.running:
            return
        method = self.method.currentData()
        self._submit("codes", f"Projecting the codes ({method.upper()})…", self.inspection, method)

    def compare(self) -> None:
        other = self.other.currentData()
        if self.inspection is None or self.running or not other:
            return
        self._submit("compare", f"Comparing with {self.label_of(other)}…", self.inspection, other)

    def save_report(self, out_dir: str | Path) -> None:
        if self.inspection is None or self.running:
            return
        self._submit("report", f"Writing the report to {out_dir}…", self.inspection, str(out_dir))

    def _save_report_dialog(self) -> None:
        """Propose the run's ``inspect`` folder, made now so that the chooser opens and accepts it
        (removed again, while empty, when another folder is chosen or the chooser is cancelled)."""
        proposed = self.run_dir / "inspect"
        made = not proposed.exists()
        try:
            proposed.mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only run folder: propose the run folder itself
            proposed, made = self.run_dir, False
        chosen = self.choose_folder("Write the report to", proposed)
        if made and (not chosen or Path(chosen).resolve() != proposed.resolve()):
            try:
                proposed.rmdir()
            except OSError:  # not empty any more: something was written into it meanwhile
                pass
        if chosen:
            self.save_report(chosen)

    def choose_folder(self, title: str, start: Path) -> str:
        """The folder the user picks in the file chooser, starting at ``start`` ("" when cancelled)."""
        return QFileDialog.getExistingDirectory(self, title, str(start))

    def cancel(self) -> None:
        if self.running:
            self.jobs.cancel(self.running, drop=False)  # the computation says Cancelled at its next batch
            self.status.setText("Cancelling…")
            self.cancel_button.setEnabled(False)

    def _progress(self, kind: str, done: int, total: int) -> None:
        if kind == self.running and total:
            self.bar.setValue(int(1000 * done / total))

    def _done(self, kind: str, token: int, result: Any, error: Any) -> None:
        if kind != self.running:
            return
        self.running = None
        self.bar.setValue(1000 if error is None else 0)
        self.bar.hide()
        if error is not None:
            from engine.inspect.progress import Cancelled

            if isinstance(error, Cancelled):
                self.status.setText("Cancelled." + ("" if self.inspection is not None else
                                                    " Press Inspect to start again."))
                self.status.setStyleSheet(f"color: {theme.muted_color()};")
                self.error = "cancelled"
            else:
                details = getattr(error, "details", "") or "".join(traceback.format_exception(error))
                self._show_error(f"{type(error).__name__}: {error}" if not _is_engine_error(error) else str(error))
                self.error = f"{error}\n{details}"
        else:
            if kind == "inspect":
                self._show_inspection(result)
            elif kind == "codes":
                self.inspection.projections = result
                self._show_codes()
                self.status.setText(f"Codes projected by {self.method.currentText()}.")
            elif kind == "maps":
                self.inspection.cams = result
                self._show_maps()
                self.status.setText(f"Maps of {len(result.indices)} images.")
            elif kind == "compare":
                other, gain = result
                self.inspection.other, self.inspection.gain = other, gain
                self._show_gain(gain, "gain")
                self.tabs.setCurrentIndex(2)
                self.status.setText(f"Compared with {self.label_of(other.run_dir)}.")
            elif kind == "report":
                self.saved = {k: str(v) for k, v in result.items()}
                self.status.setText(f"Wrote {len(result) - 1} PNG files and {result['html']}.")
        self._update_buttons()
        self.finished_job.emit(kind, error)

    def _show_error(self, text: str) -> None:
        self.status.setText(text)
        self.status.setToolTip(text)
        self.status.setStyleSheet(f"color: {theme.error_color()};")

    def _update_buttons(self) -> None:
        idle = self.running is None
        ready = idle and self.inspection is not None
        self.maps_button.setEnabled(idle)
        self.compare_button.setEnabled(ready and self.other.count() > 0)
        self.report_button.setEnabled(ready)
        self.cancel_button.setEnabled(not idle)
        # cancelled or failed before anything loaded: the same button starts the inspection again
        self.maps_button.setText("Inspect" if idle and self.inspection is None else "Compute maps")

    def _maps_clicked(self) -> None:
        if self.inspection is None:
            if self.running is None:
                self.start()
        else:
            self.compute_maps()

    def label_of(self, run_dir: str | Path) -> str:
        """A run's name as the studio shows it everywhere (:attr:`RunInfo.label`: a renamed run by its name)."""
        path = Path(run_dir)
        return self._labels.get(path) or run_info(path).label

    # -- showing ---------------------------------------------------------------------------
    def _show_inspection(self, inspection) -> None:
        self.inspection = inspection
        self.method.blockSignals(True)  # the projections installed here (torch is loaded by now)
        for method in _methods():
            if self.method.findData(method) < 0:
                self.method.addItem({"tsne": "t-SNE", "umap": "UMAP"}.get(method, method), method)
        self.method.blockSignals(False)
        m, out = inspection.models, inspection.outputs
        acc = {k: out.accuracy(k) for k in out.predictions}
        parts = [f"<b>{html.escape(self.run_name)}</b> · {m.config.distiller.name}, MGD {m.config.granularity.mode} "
                 f"· data {inspection.test.name} ({len(inspection.test)} test images)"]
        if m.teacher is not None:
            parts.append(f"teacher {m.teacher_arch} {acc['teacher']:.2f}%")
        parts += [f"head {g} {acc[g]:.2f}%" for g in out.granularities if g in acc]
        parts.append(f"student {m.student_arch} {acc['student']:.2f}%")
        self.header.setText(" · ".join(parts))
        if inspection.notes:
            self.notes.setText("\n".join(f"• {n}" for n in inspection.notes))
            self.notes.show()
        self._show_maps()
        self._show_codes()
        if inspection.gain is not None:
            self._show_gain(inspection.gain, "gain")
        elif inspection.gap is not None:
            self._show_gain(inspection.gap, "gap")
        else:
            self.gain_title.setText("This run has no teacher: choose a second run and press Compare.")
        self.status.setText(f"Inspected {self.run_name}.")

    def _clear(self, grid: QGridLayout) -> None:
        while grid.count():
            item = grid.takeAt(0)
            widget = item.widget()
            if widget is not None:
                widget.setParent(None)  # gone now, not at the next event loop turn
                widget.deleteLater()

    def target(self) -> str:
        return "true" if self.target_buttons["true"].isChecked() else "predicted"

    def _show_maps(self) -> None:
        if self.inspection is None or self.inspection.cams is None:
            return
        from engine.inspect.report import cam_cells

        cams = self.inspection.cams
        headers, rows, captions = cam_cells(self.inspection, self.target())
        self._clear(self.maps_grid)
        for c in range(self.maps_grid.columnCount()):
            self.maps_grid.setColumnStretch(c, 0)
            self.maps_grid.setColumnMinimumWidth(c, 0)
        for r in range(self.maps_grid.rowCount()):
            self.maps_grid.setRowStretch(r, 0)
        bold = QFont()
        bold.setBold(True)
        # side by side blocks of rows when the window is wide enough for them
        width = len(headers) * (CELL + 6) + 24
        blocks = max(1, min(3, self.maps_area.viewport().width() // width, -(-len(rows) // 5)))
        per_block = -(-len(rows) // blocks)
        for b in range(blocks):
            left = b * (len(headers) + 1)
            if b:
                self.maps_grid.setColumnMinimumWidth(left - 1, 18)
            for c, text in enumerate(headers):
                label = QLabel(text)
                label.setFont(bold)
                label.setToolTip(cams.layers.get(text, ""))
                self.maps_grid.addWidget(label, 0, left + c)
        for r, (cells, caps) in enumerate(zip(rows, captions)):
            left, row = (r // per_block) * (len(headers) + 1), r % per_block
            for c, rgb in enumerate(cells):
                image = QLabel()
                image.setObjectName("camCell")
                image.setPixmap(pixmap(rgb, CELL))
                image.setFixedSize(CELL, CELL)
                self.maps_grid.addWidget(image, 1 + 2 * row, left + c)
                text, colour = (caps[c], None) if isinstance(caps[c], str) else caps[c]
                caption = QLabel(text)
                if colour:
                    caption.setStyleSheet(f"color: {colour};")
                self.maps_grid.addWidget(caption, 2 + 2 * row, left + c)
        self.maps_grid.setColumnStretch(blocks * (len(headers) + 1), 1)
        self.maps_grid.setRowStretch(1 + 2 * per_block, 1)
        self.layers.setText("Feature maps: " + "; ".join(f"{k}: {v}" for k, v in cams.layers.items()))
        self.images.setText(", ".join(str(i) for i in cams.indices))

    def _show_codes(self) -> None:
        from engine.inspect.render import class_colours

        self._clear(self.codes_grid)
        self.plots = []
        inspection = self.inspection
        projections = inspection.projections
        if not projections:
            self.codes_grid.addWidget(_muted("No granularity codes: this run has no granularity heads."), 0, 0)
            return
        colours = class_colours(len(inspection.classes))
        brushes = [pg.mkBrush(QColor(c)) for c in colours]
        bg, fg = theme.plot_colors()
        roles = {"teacher": 0, "student": 1}
        rows = {g: r for r, g in enumerate(dict.fromkeys(p.granularity for p in projections))}
        for p in projections:
            plot = pg.PlotWidget()
            plot.setObjectName("codesPlot")
            plot.setBackground(bg)
            plot.setMinimumSize(320, 300)
            plot.hideAxis("left")
            plot.hideAxis("bottom")
            plot.setTitle(f"{p.title}<br>5-NN in 2-D {p.separation:.1f}% (chance {p.chance:.1f}%)", color=fg,
                          size="9pt")
            scatter = pg.ScatterPlotItem(x=p.points[:, 0], y=p.points[:, 1], size=6, pen=None,
                                         brush=[brushes[int(c)] for c in p.labels],
                                         data=np.arange(len(p.labels)), hoverable=True,
                                         hoverSize=10, hoverPen=pg.mkPen(fg, width=1.5))
            scatter.sigHovered.connect(self._hovered)
            scatter.sigClicked.connect(self._clicked)
            plot.addItem(scatter)
            self.codes_grid.addWidget(plot, rows[p.granularity], roles.get(p.role, 0))
            self.plots.append((plot, scatter))
        legend = QLabel("  ".join(f'<span style="color:{colours[i]}">●</span> {c}'
                                  for i, c in enumerate(inspection.classes)))
        legend.setWordWrap(True)
        self.codes_grid.addWidget(legend, len(rows), 0, 1, 2)

    def show_image(self, index: int) -> None:
        """Show test image ``index`` in the preview beside the code plots."""
        from engine.inspect.render import image_rgb

        test = self.inspection.test
        label = int(test.labels[index])
        self.preview.setPixmap(pixmap(image_rgb(test.image(index)), PREVIEW))
        student = self.inspection.outputs.predictions["student"][index]
        self.preview_text.setText(f"test image #{index}\nclass {test.classes[label]}\n"
                                  f"student says {test.classes[int(student)]}")

    def _hovered(self, item, points, ev) -> None:
        if len(points):
            self.show_image(int(points[0].data()))

    def _clicked(self, item, points, ev) -> None:
        if not len(points) or self.running:
            return
        index = int(points[0].data())
        try:
            chosen = parse_indices(self.images.text())
        except ValueError:
            chosen = []
        if index not in chosen:
            chosen.append(index)
        self.images.setText(", ".join(map(str, chosen)))
        self.compute_maps()

    def _show_gain(self, gain, key: str) -> None:
        from engine.inspect.render import image_rgb

        a, b = gain.names
        intro = ("This run's student (B) against the other run's (A), on the same test images." if key == "gain"
                 else "This run's teacher (A) and student (B): choose a second run and press Compare to see where "
                      "the student gains over another run's.")
        self.gain_title.setText(f"{intro}<br><b>A</b> {a}: {gain.accuracy[0]:.2f}% · <b>B</b> {b}: "
                                f"{gain.accuracy[1]:.2f}% · right only by B: {len(gain.b_only)} · right only by A: "
                                f"{len(gain.a_only)}")
        rows = gain.per_class
        self.gain_plot.clear()
        self.gain_legend.clear()
        x = np.arange(len(rows))
        for values, offset, colour, name in ((["a"], -0.2, "#94a3b8", f"A {a}"), (["b"], 0.2, "#2563eb", f"B {b}")):
            heights = [r[values[0]] or 0.0 for r in rows]
            self.gain_plot.addItem(pg.BarGraphItem(x=x + offset, height=heights, width=0.4, brush=colour, pen=None,
                                                   name=name))
        self.gain_plot.getAxis("bottom").setTicks([[(i, r["class"]) for i, r in enumerate(rows)]])
        self.gain_plot.setYRange(0, 125)  # room for the legend above the bars
        self.gain_plot.getAxis("left").setTicks([[(v, str(v)) for v in range(0, 101, 20)]])
        self.gain_table.setRowCount(len(rows))
        self.gain_table.setHorizontalHeaderLabels(["Class", "Images", "A %", "B %", "B − A"])
        for i, r in enumerate(rows):
            diff = r["b"] - r["a"] if r["a"] is not None and r["b"] is not None else None
            values = [r["class"], str(r["images"]), f"{r['a']:.1f}" if r["a"] is not None else "–",
                      f"{r['b']:.1f}" if r["b"] is not None else "–", f"{diff:+.1f}" if diff is not None else "–"]
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if c == 4 and diff:
                    item.setForeground(QColor("#15803d" if diff > 0 else "#b91c1c"))
                self.gain_table.setItem(i, c, item)
        test, classes = self.inspection.test, self.inspection.classes
        for widget, label, indices, wrong, right_name, wrong_name in (
                (self.b_only, self.b_only_label, gain.b_only, gain.pred_a, "B", "A"),
                (self.a_only, self.a_only_label, gain.a_only, gain.pred_b, "A", "B")):
            label.setText(f"Right by {right_name}, wrong by {wrong_name}: {len(indices)} "
                          f"image{'' if len(indices) == 1 else 's'}"
                          + (" (the first 200)" if len(indices) > 200 else ""))
            widget.clear()
            for i in indices[:200]:
                item = QListWidgetItem(QIcon(pixmap(image_rgb(test.image(i)), THUMB)),
                                       f"{classes[int(gain.labels[i])]}→{classes[int(wrong[i])]}")
                item.setToolTip(f"test image #{i}: {classes[int(gain.labels[i])]}; {wrong_name} says "
                                f"{classes[int(wrong[i])]}")
                widget.addItem(item)

    # -- closing ---------------------------------------------------------------------------
    def done(self, result: int) -> None:  # Close, Esc and the window's close button all end here
        self.jobs.close()  # a computation in progress stops at its next batch; its answer is dropped
        super().done(result)


def _is_engine_error(error: BaseException) -> bool:
    from engine.errors import MGDError

    return isinstance(error, MGDError)
