"""The centre of the window: the plots in two tabs, and what they are showing."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QComboBox, QGridLayout, QHBoxLayout, QLabel, QSizePolicy, QSplitter, QTabWidget,
                               QVBoxLayout, QWidget)

from mgd_gui import theme
from mgd_gui.plots.accuracy import AccuracyPanel
from mgd_gui.plots.base import PlotPanel, RunStyles, run_chips
from mgd_gui.plots.classes import ClassAccuracyPanel, ConfusionPanel
from mgd_gui.plots.heads import HeadsPanel
from mgd_gui.plots.losses import LossPanel
from mgd_gui.plots.noise import NoisePanel
from mgd_gui.run.record import RunRecord

# One panel redraws per tick, in turn: each visible panel at most twice a second however
# fast events arrive, and no tick paints them all at once (the GUI thread stays free).
REFRESH_MS = 125


class PlotArea(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.setSpacing(4)
        top = QHBoxLayout()
        top.setSpacing(6)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        top.addWidget(self.banner, 1)
        self.x_axis = QComboBox()
        for key, text in (("epoch", "epoch"), ("step", "step"), ("time", "wall time")):
            self.x_axis.addItem(text, key)
        self.x_axis.setToolTip("The x axis of the losses and accuracies: the epoch, the step within the stage, "
                               "or the run's wall time in minutes (pauses and the gaps between sessions left out)")
        x_label = QLabel("x axis")
        x_label.setBuddy(self.x_axis)
        top.addWidget(x_label)
        top.addWidget(self.x_axis)
        layout.addLayout(top)
        self.run_legend = QLabel()  # the overlaid runs, once for every panel: colour and marker
        self.run_legend.setWordWrap(True)
        self.run_legend.setTextFormat(Qt.TextFormat.RichText)
        self.run_legend.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.run_legend.hide()
        layout.addWidget(self.run_legend)
        self.x_axis.currentIndexChanged.connect(lambda *_: self.set_x_axis(self.x_axis.currentData()))

        self.losses = LossPanel()
        self.accuracy = AccuracyPanel()
        self.heads = HeadsPanel()
        self.noise = NoisePanel()
        self.class_accuracy = ClassAccuracyPanel()
        self.confusion = ConfusionPanel()
        self.run_styles = RunStyles()  # each run's colour and marker, the same in every panel for the window's life
        for panel in self.panels():
            panel.run_styles = self.run_styles

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        training = QWidget()
        grid = QGridLayout(training)
        grid.setContentsMargins(0, 4, 0, 0)
        grid.setSpacing(6)
        grid.addWidget(self.losses, 0, 0)
        grid.addWidget(self.accuracy, 0, 1)
        grid.addWidget(self.heads, 1, 0)
        grid.addWidget(self.noise, 1, 1)
        self.tabs.addTab(training, "Training")
        classes = QSplitter(Qt.Orientation.Horizontal)
        classes.addWidget(self.class_accuracy)
        classes.addWidget(self.confusion)
        classes.setSizes([1, 1])
        self.tabs.addTab(classes, "Classes")
        layout.addWidget(self.tabs, 1)

        self.records: list[RunRecord] = []
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self._tick)
        self._turn = 0
        self.timer.start()
        self.tabs.currentChanged.connect(lambda *_: self.refresh())
        self.set_records([])

    def set_x_axis(self, axis: str) -> None:
        """``epoch``, ``step`` or ``time`` for the panels whose curves run over training."""
        index = self.x_axis.findData(axis)
        if index >= 0 and index != self.x_axis.currentIndex():
            self.x_axis.setCurrentIndex(index)  # comes back here through the signal
            return
        for panel in self.panels():
            if panel.uses_x_axis:
                panel.x_axis = axis
        self.refresh(force=True)

    def panels(self) -> list[PlotPanel]:
        return [self.losses, self.accuracy, self.heads, self.noise, self.class_accuracy, self.confusion]

    def set_records(self, records: list[RunRecord]) -> None:
        self.records = list(records)
        overlay = len(records) > 1
        for panel in self.panels():
            panel.records = list(records)  # drawn on the next refresh of a visible panel
            panel.shared_run_legend = overlay
            panel._drawn_key = None  # noqa: SLF001
        self._update_banner()
        self.refresh()

    def _update_banner(self) -> None:
        muted = theme.muted_color()
        if not self.records:
            text = "No run shown. Press <b>Run</b> to train the experiment, or select runs in the Runs panel."
        elif len(self.records) == 1:
            r = self.records[0]
            text = f"Showing <b>{r.label}</b> <span style='color:{muted}'>({r.status})</span>"
        else:
            text = (f"<b>Comparing {len(self.records)} runs</b> <span style='color:{muted}'>(each run a colour "
                    "and a marker; the line styles are named under each plot)</span>")
        if text != self.banner.text():
            self.banner.setText(text)
        self.run_styles.assign(self.records)
        legend = run_chips([(r.label, self.run_styles.style(r)) for r in self.records]) if len(self.records) > 1 \
            else ""
        if legend != self.run_legend.text():
            self.run_legend.setText(legend)
        self.run_legend.setVisible(bool(legend))

    def _tick(self) -> None:
        """Redraw the next visible panel whose data changed."""
        self._update_banner()
        panels = self.panels()
        for i in range(len(panels)):
            panel = panels[(self._turn + i) % len(panels)]
            if panel.isVisible() and panel.needs_redraw():
                panel.refresh()
                self._turn = (self._turn + i + 1) % len(panels)
                return

    def refresh(self, force: bool = False) -> None:
        """Redraw the visible panels whose data changed (hidden ones catch up when shown)."""
        self._update_banner()
        for panel in self.panels():
            if force or panel.isVisible():
                panel.refresh()

    def apply_theme(self) -> None:
        for panel in self.panels():
            panel.apply_theme()
        self._update_banner()
