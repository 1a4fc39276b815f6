"""The dialog that reports a failed run: the message, what it means, the details on demand.

A resizable dialog of its own (a message box has a fixed size that squeezes a traceback into a
few wrapped lines): the details are the engine's traceback, unwrapped, in a scrolling box.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (QDialogButtonBox, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QStyle,
                               QVBoxLayout, QWidget)

from mgd_gui.screen import FittedDialog

KIND_ADVICE = {
    "input": "The set-up needs a change (a file, a folder or a setting); fix it and run again.",
    "nan": "The training diverged. Try a lower learning rate, then resume or run again.",
    "oom": "The device ran out of memory. Lower the batch size or choose a smaller model.",
}
MINIMUM = QSize(420, 200)
WITH_DETAILS = QSize(860, 600)  # the size asked for once the traceback shows (the screen permitting)


class ErrorDialog(FittedDialog):
    """The message and advice, and the details (a traceback) behind Show details."""

    def __init__(self, parent: QWidget | None, text: str, informative: str, details: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Run failed")
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        symbol = QLabel()
        size = self.style().pixelMetric(QStyle.PixelMetric.PM_MessageBoxIconSize, None, self)
        symbol.setPixmap(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxCritical).pixmap(size, size))
        symbol.setAlignment(Qt.AlignmentFlag.AlignTop)
        top.addWidget(symbol)
        column = QVBoxLayout()
        self.message = QLabel(text)
        self.informative = QLabel(informative)
        for label in (self.message, self.informative):
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            column.addWidget(label)
        column.addStretch(1)
        top.addLayout(column, 1)
        layout.addLayout(top)

        self.details = QPlainTextEdit(details)
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.details.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.details.hide()
        layout.addWidget(self.details, 1)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.buttons.rejected.connect(self.reject)
        self.details_button = QPushButton("Show details…")
        self.details_button.setCheckable(True)
        self.details_button.setAutoDefault(False)
        self.details_button.toggled.connect(self.show_details)
        self.details_button.setVisible(bool(details))
        self.buttons.addButton(self.details_button, QDialogButtonBox.ButtonRole.ActionRole)
        layout.addWidget(self.buttons)
        self.fit(QSize(560, self._height(560)), MINIMUM)

    def _height(self, width: int) -> int:
        """The height the contents need at ``width`` (the labels wrap)."""
        layout = self.layout()
        return layout.totalHeightForWidth(width) if layout.hasHeightForWidth() else self.sizeHint().height()

    def show_details(self, shown: bool = True) -> None:
        self.details.setVisible(shown)
        self.details_button.setChecked(shown)
        self.details_button.setText("Hide details" if shown else "Show details…")
        wanted = WITH_DETAILS.expandedTo(self.size()) if shown else QSize(self.width(), self._height(self.width()))
        self.fit(wanted, MINIMUM, centre=not self.isVisible())

    # the message box's names, for the window and the tests
    def text(self) -> str:
        return self.message.text()

    def informativeText(self) -> str:  # noqa: N802 - as QMessageBox's
        return self.informative.text()

    def detailedText(self) -> str:  # noqa: N802 - as QMessageBox's
        return self.details.toPlainText()


def error_dialog(parent: QWidget, failure: dict) -> ErrorDialog:
    """A non-blocking dialog for ``failure`` (message, kind, stage, details, run_dir)."""
    stage = failure.get("stage") or "setup"
    text = f"The run failed in the {stage} stage:\n\n{failure.get('message', '')}"
    advice = KIND_ADVICE.get(failure.get("kind") or "", "See the details for the engine's traceback.")
    where = failure.get("run_dir")
    saved = f"\n\nWhat was saved is kept in {where}." if where and Path(where).is_dir() else ""
    return ErrorDialog(parent, text, advice + saved, str(failure.get("details") or ""))
