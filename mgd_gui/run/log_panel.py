"""The log panel: the engine's messages and the window's own, coloured by level, and below them
the story of the run selected in the Runs panel (its events told as they were told live), so
the log always ends with the run the plots show."""

from __future__ import annotations

import html
import time

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QWidget

from mgd_gui import theme

Line = tuple[str, str, float]  # level, message, when


class LogPanel(QPlainTextEdit):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setPlaceholderText("Messages of the engine appear here while a run trains.")
        self._session: list[Line] = []  # the session's lines
        self.story_of: str | None = None  # the run whose story ends the log (None: none)
        self._story: list[Line] = []

    def add(self, message: str, level: str = "info", when: float | None = None) -> None:
        """A line of the session; ``when`` (seconds since the epoch) dates it."""
        line = (level, message, when or time.time())
        self._session.append(line)
        del self._session[:-5000]
        if self.story_of is None:
            self._append(line)
        else:
            self._render()  # the session's lines stay above the selected run's story

    def show_story(self, run: str, title: str, lines: list[Line]) -> None:
        """End the log with the story of ``run`` (a key: its folder), under ``title``; it replaces
        the story shown before."""
        self.story_of = run
        self._story = [("info", f"— {title} —", time.time()), *lines, ("info", "— end of its log —", time.time())]
        self._render()

    def clear_story(self) -> None:
        if self.story_of is not None:
            self.story_of, self._story = None, []
            self._render()

    def text(self) -> str:
        return self.toPlainText()

    def _render(self) -> None:
        self.clear()
        for line in self._session + self._story:
            self._append(line)

    def _append(self, line: Line) -> None:
        level, message, when = line
        stamp = time.strftime("%H:%M:%S", time.localtime(when))
        color = {"error": theme.error_color(), "warning": "#d97706"}.get(level)
        text = html.escape(message).replace("\n", "<br>")
        if color:
            text = f"<span style='color:{color}'>{text}</span>"
        self.appendHtml(f"<span style='color:{theme.muted_color()}'>{stamp}</span> {text}")
