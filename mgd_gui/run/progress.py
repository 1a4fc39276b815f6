"""The status bar's view of the progress: the engine's latest ``Progress`` event as text
(stage, epoch, step, ETA: :func:`engine.progress.describe`) and a bar. The engine decides the
figures, for a run alone, a group training together and a run of several processes alike
(:class:`engine.progress.WorkProgress`); this widget only displays them."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from engine.progress import describe

__all__ = ["ProgressWidget", "progress_text"]


def progress_text(progress: dict[str, Any] | None, prefix: str = "") -> str:
    """The line of a Progress event's figures (``event.to_dict()``), after ``prefix`` ("Paused")."""
    text = describe(progress) if progress else "Starting…"
    return f"{prefix} · {text}" if prefix else text


class ProgressWidget(QWidget):
    """The latest Progress event's text and fraction (a bar over all the work at hand)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        self.label = QLabel("Ready")
        self.label.setMinimumWidth(330)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setFixedWidth(260)
        self.bar.setFormat("%p%")
        self.bar.setTextVisible(True)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        self.latest: dict[str, Any] | None = None  # the latest Progress event (as a dict) of the work shown

    def begin(self) -> None:
        """New work: no figures yet."""
        self.latest = None
        self.bar.setValue(0)
        self.label.setText(progress_text(None))

    def show_progress(self, progress: dict[str, Any], *, text: bool = True, prefix: str = "") -> None:
        """Display a Progress event: the bar always, the text unless ``text`` is False (while a
        pause or a stop is on its way, its own line stays)."""
        self.latest = dict(progress)
        fraction = progress.get("fraction")
        if isinstance(fraction, (int, float)):
            self.bar.setValue(int(round(1000 * min(1.0, max(0.0, float(fraction))))))
        if text:
            self.label.setText(progress_text(progress, prefix))

    def end(self, text: str, complete: bool) -> None:
        if complete:
            self.bar.setValue(1000)
        self.label.setText(text)
        self.latest = None

    def set_text(self, text: str) -> None:
        self.label.setText(text)
