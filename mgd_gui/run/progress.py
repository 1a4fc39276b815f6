"""The status bar's view of a run's progress: stage, epoch, step and ETA as text, and a bar
over the whole run. The figures come from the engine's plan and events alone
(:class:`engine.plan.PlanProgress`); this widget only displays them."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from engine.plan import GroupProgress, PlanProgress, format_duration

__all__ = ["ProgressWidget", "GroupProgress", "PlanProgress", "format_duration"]


class ProgressWidget(QWidget):
    """Stage, epoch, step and ETA as text, and a bar over the whole run."""

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
        self.model: PlanProgress | None = None

    def begin(self, model: PlanProgress) -> None:
        self.model = model
        self.bar.setValue(0)
        self.label.setText(model.text())

    def refresh(self) -> None:
        if self.model is not None:
            self.bar.setValue(int(1000 * self.model.fraction()))
            self.label.setText(self.model.text())

    def end(self, text: str, complete: bool) -> None:
        if complete:
            self.bar.setValue(1000)
        self.label.setText(text)
        self.model = None

    def set_text(self, text: str) -> None:
        self.label.setText(text)
