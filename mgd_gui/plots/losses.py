"""Losses by name: per step (smoothed lines) and per epoch (dots), for one stage."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QComboBox, QMenu

from engine.plan import STAGE_TITLES as STAGE_NAMES
from mgd_gui.plots.base import STYLES, PlotPanel
from mgd_gui.plots.decimate import smooth
from mgd_gui.run.record import STAGES
from mgd_gui.theme import series_color

SMOOTHING = (("raw", 0.0), ("EMA 0.6", 0.6), ("EMA 0.8", 0.8), ("EMA 0.9", 0.9), ("EMA 0.95", 0.95))


class LossPanel(PlotPanel):
    title = "Losses"
    x_label = "epoch"
    y_label = "loss"
    uses_x_axis = True
    x_floor, x_min_span = 0.0, 1.0  # training starts at 0 (epoch, step or minute): one unit at least

    def __init__(self, parent=None):
        super().__init__(parent)
        self.stage = QComboBox()
        self.stage.addItem("latest", "auto")
        for s in STAGES:
            self.stage.addItem(STAGE_NAMES[s], s)
        self.stage.setToolTip("Which stage's losses to show (the latest stage that has data, by default)")
        self.add_control(self.stage)
        self.stage.setMinimumContentsLength(max(len(self.stage.itemText(i)) for i in range(self.stage.count())))
        self.stage.currentIndexChanged.connect(lambda *_: self.refresh())
        # smoothing and the log axis live in the panel's menu: the header stays one line at 1280 px
        smoothing_menu = QMenu("Smoothing of the per-step losses", self.menu)
        self.menu.insertMenu(self.menu_anchor, smoothing_menu)
        group = QActionGroup(self)
        self.smoothing_actions: list[QAction] = []
        for text, weight in SMOOTHING:
            act = QAction(text, self, checkable=True)
            act.setData(weight)
            act.triggered.connect(lambda *_: self.refresh())
            group.addAction(act)
            smoothing_menu.addAction(act)
            self.smoothing_actions.append(act)
        self.smoothing_actions[1].setChecked(True)
        self.log_y = QAction("Logarithmic loss axis", self, checkable=True)
        self.log_y.toggled.connect(self._log_toggled)
        self.menu.insertAction(self.menu_anchor, self.log_y)
        self.menu.insertSeparator(self.menu_anchor)

    def smoothing(self) -> float:
        return next((a.data() for a in self.smoothing_actions if a.isChecked()), 0.0)

    def set_smoothing(self, weight: float) -> None:
        for act in self.smoothing_actions:
            act.setChecked(act.data() == weight)
        self.refresh()

    def _log_toggled(self, on: bool) -> None:
        self.item.setLogMode(y=on)
        self.refresh(force=True)

    def control_state(self) -> Any:
        return self.stage.currentData(), self.smoothing(), self.log_y.isChecked(), self.x_axis

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
        weight = self.smoothing()
        for r, record in enumerate(self.records):
            names = record.loss_names(stage)
            run_color, run_symbol = self.run_style(record)
            for n, name in enumerate(names):
                color = run_color if self.compare else series_color(n)
                style = STYLES[n % len(STYLES)] if self.compare else STYLES[0]
                steps = record.step_losses.get(stage, {}).get(name)
                label = self.label(record, name)
                if steps is not None and len(steps):
                    self.curve((r, "step", name), label, self.xs(steps), smooth(steps.y, weight), color, style=style,
                               width=1.8)
                epochs = record.epoch_losses.get(stage, {}).get(name)
                if epochs is not None and len(epochs):
                    self.curve((r, "epoch", name), label + " (epoch mean)", self.xs(epochs), epochs.y, color,
                               style=None, symbol=run_symbol if self.compare else "o", symbol_size=5,
                               legend=steps is None or not len(steps))
        self._set_title(f"<b>{self.title}</b> · {STAGE_NAMES.get(stage, stage)}")
