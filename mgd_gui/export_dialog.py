"""Export a run's student (weights, TorchScript, ONNX, model card) to a chosen folder."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLineEdit, QPlainTextEdit, QToolButton, QVBoxLayout, QWidget)

from engine.config import EXPORT_FORMATS
from engine.runs import RunInfo
from mgd_gui import theme
from mgd_gui.screen import FittedDialog
from mgd_gui.tasks import Tasks

FORMAT_HELP = {"weights": "safetensors state dict (load into the same architecture)",
               "torchscript": "a traced module: x -> logits, no MGD Studio needed",
               "onnx": "ONNX graph with a dynamic batch size (for ONNX Runtime and others)"}


def _default_export(run_dir, out_dir, formats):
    from engine.runs import export_run  # imports torch: in the worker thread

    return export_run(run_dir, out_dir, formats)


class ExportDialog(FittedDialog):
    """Pick a run, formats and a folder; the export runs in the background (:class:`mgd_gui.tasks.Tasks`)."""

    exported = Signal(object)  # {format: path}
    failed = Signal(str)

    def __init__(self, runs: list[RunInfo], selected: Path | None = None, parent: QWidget | None = None,
                 exporter=_default_export):
        super().__init__(parent)
        self.setWindowTitle("Export the student")
        self.exporter = exporter
        self.runs = [r for r in runs if r.has_student]
        self.result: dict | None = None
        self.error: str | None = None

        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.run_combo = QComboBox()
        self.run_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.run_combo.setMinimumContentsLength(40)  # a long run name is elided, the dialog stays on screen
        for info in self.runs:  # each run by its name in the Runs panel (RunInfo.label), then its folder
            acc = f", {info.student_acc:.2f}%" if info.student_acc is not None else ""
            folder = "" if info.label.endswith(info.path.name) else f"  {info.path.name}"
            self.run_combo.addItem(f"{info.label}  ({info.student_arch}{acc}){folder}", str(info.path))
        if selected is not None:
            index = self.run_combo.findData(str(selected))
            if index >= 0:
                self.run_combo.setCurrentIndex(index)
        self.run_combo.setToolTip("The run whose best student to export")
        form.addRow("Run", self.run_combo)

        formats = QHBoxLayout()
        self.format_boxes: dict[str, QCheckBox] = {}
        for fmt in EXPORT_FORMATS:
            box = QCheckBox(fmt)
            box.setChecked(True)
            box.setToolTip(FORMAT_HELP.get(fmt, fmt))
            box.toggled.connect(self._update_button)
            self.format_boxes[fmt] = box
            formats.addWidget(box)
        formats.addStretch(1)
        form.addRow("Formats", formats)

        folder = QHBoxLayout()
        self.folder = QLineEdit()
        self.folder.setToolTip("Folder to write the files and the model card into")
        self.folder.textChanged.connect(self._update_button)
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip("Choose a folder")
        browse.clicked.connect(self._browse)
        folder.addWidget(self.folder, 1)
        folder.addWidget(browse)
        form.addRow("Folder", folder)
        layout.addLayout(form)

        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        self.report.setPlaceholderText("The written files, or the exact failure, appear here.")
        self.report.setMinimumHeight(120)
        layout.addWidget(self.report, 1)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.ActionRole)
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.export_now)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

        self.tasks = Tasks(self, name="mgd-export")
        self.tasks.done.connect(lambda _kind, _token, files: self._done(files, None))
        self.tasks.failed.connect(lambda _kind, _token, exc: self._done(
            None, f"{type(exc).__name__}: {exc}\n\n{getattr(exc, 'details', '')}"))
        self.run_combo.currentIndexChanged.connect(self._run_changed)
        self._run_changed()
        self.fit(QSize(640, max(360, self.sizeHint().height())), QSize(480, 300))

    def _run_changed(self, *_) -> None:
        path = self.run_combo.currentData()
        if path:
            self.folder.setText(str(Path(path) / "export"))
        self._update_button()

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Export to", self.folder.text())
        if chosen:
            self.folder.setText(chosen)

    def formats(self) -> list[str]:
        return [f for f, box in self.format_boxes.items() if box.isChecked()]

    def _update_button(self, *_) -> None:
        self.export_button.setEnabled(bool(self.run_combo.currentData() and self.formats() and
                                           self.folder.text().strip()))

    def export_now(self) -> None:
        run_dir, out, formats = self.run_combo.currentData(), self.folder.text().strip(), self.formats()
        if not (run_dir and out and formats):
            return
        self.export_button.setEnabled(False)
        self.result, self.error = None, None
        self.report.setPlainText(f"Exporting {', '.join(formats)} to {out} …")
        self.tasks.submit("export", self.exporter, run_dir, out, formats)

    def _done(self, files, error) -> None:
        self._update_button()
        if error:
            self.error = error
            self.report.setStyleSheet(f"color: {theme.error_color()};")
            self.report.setPlainText(f"Export failed.\n\n{error}")
            self.failed.emit(error)
            return
        self.result = {k: str(v) for k, v in files.items()}
        self.report.setStyleSheet("")
        lines = [f"Exported {len(self.result)} files:"] + [f"  {k:<12} {v}" for k, v in self.result.items()]
        self.report.setPlainText("\n".join(lines))
        self.exported.emit(self.result)
