"""The log panel: the engine's messages and the window's own, coloured by level."""

from __future__ import annotations

import html
import time

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QWidget

from mgd_gui import theme


class LogPanel(QPlainTextEdit):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setPlaceholderText("Messages of the engine appear here while a run trains.")
        self.lines: list[tuple[str, str]] = []

    def add(self, message: str, level: str = "info", when: float | None = None) -> None:
        """A line; ``when`` (seconds since the epoch) dates it, e.g. an event read back from a run."""
        self.lines.append((level, message))
        stamp = time.strftime("%H:%M:%S", time.localtime(when)) if when else time.strftime("%H:%M:%S")
        color = {"error": theme.error_color(), "warning": "#d97706"}.get(level)
        text = html.escape(message).replace("\n", "<br>")
        if color:
            text = f"<span style='color:{color}'>{text}</span>"
        self.appendHtml(f"<span style='color:{theme.muted_color()}'>{stamp}</span> {text}")

    def text(self) -> str:
        return self.toPlainText()
