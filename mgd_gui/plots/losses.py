"""Losses by name: per step (smoothed lines) and per epoch (dots), for one stage."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QCheckBox, QComboBox

from mgd_gui.plots.base import STYLES, PlotPanel
from mgd_gui.plots.decimate import smooth
from engine.plan import STAGE_TITLES as STAGE_NAMES
from mgd_gui.run.record import STAGES
from mgd_gui.theme import series_color

SMOOTHING = (("raw", 0.0), ("EMA 0.6", 0.6), ("EMA 0.8", 0.8), ("EMA 0.9", 0.9), ("EMA 0.95", 0.95))


class LossPanel(PlotPanel):
    title = "Losses"
    x_label = "epoch"
    y_label = "loss"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.stage = QComboBox()
        self.stage.addItem("latest", "auto")
        for s in STAGES:
            self.stage.addItem(STAGE_NAMES[s], s)
        self.stage.setToolTip("Which stage's losses to show (the latest stage that has data, by default)")
        self.smoothing = QComboBox()
        for text, weight in SMOOTHING:
            self.smoothing.addItem(text, weight)
        self.smoothing.setCurrentIndex(1)
        self.smoothing.setToolTip("Exponential smoothing of the per-step losses (dots are the epoch means)")
        self.log_y = QCheckBox("log")
        self.log_y.setToolTip("Logarithmic loss axis")
        for w in (self.stage, self.smoothing, self.log_y):
            self.add_control(w)
        self.stage.currentIndexChanged.connect(lambda *_: self.refresh())
        self.smoothing.currentIndexChanged.connect(lambda *_: self.refresh())
        self.log_y.toggled.connect(self._log_toggled)

    def _log_toggled(self, on: bool) -> None:
        self.item.setLogMode(y=on)
        self.refresh(force=True)

    def control_state(self) -> Any:
        return self.stage.currentData(), self.smoothing.currentData(), self.log_y.isChecked()

    def shown_stage(self) -> str | None:
        chosen = self.stage.currentData()
        if chosen != "auto":
            return chosen
        latest = None
        for record in self.records:
            stages = record.stages_with(record.step_losses) or record.stages_with(record.epoch_losses)
            live = record.position.get("stage")
            candidate = live if live in stages else (stages[-1] if stages else None)
            if candidate and (latest is None or STAGES.index(candidate) > STAGES.index(latest)):
                latest = candidate
        return latest

    def draw(self) -> None:
        stage = self.shown_stage()
        self._set_title(f"<b>{self.title}</b>")
        if stage is None:
            return
        weight = self.smoothing.currentData()
        for r, record in enumerate(self.records):
            names = record.loss_names(stage)
            for n, name in enumerate(names):
                color = series_color(r if self.compare else n)
                style = STYLES[n % len(STYLES)] if self.compare else STYLES[0]
                steps = record.step_losses.get(stage, {}).get(name)
                label = self.label(record, name)
                if steps is not None and len(steps):
                    self.curve((r, "step", name), label, steps.x, smooth(steps.y, weight), color, style=style,
                               width=1.8)
                epochs = record.epoch_losses.get(stage, {}).get(name)
                if epochs is not None and len(epochs):
                    self.curve((r, "epoch", name), label + " (epoch mean)", epochs.x, epochs.y, color, style=None,
                               symbol="o", symbol_size=5, legend=steps is None or not len(steps))
        self._set_title(f"<b>{self.title}</b> · {STAGE_NAMES.get(stage, stage)}")
