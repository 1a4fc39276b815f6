"""Train and test accuracy per epoch, for each stage (and each head during self-analysis)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox

from engine.plan import STAGE_TITLES as STAGE_NAMES
from mgd_gui.plots.base import STYLES, PlotPanel
from mgd_gui.run.record import STAGES
from mgd_gui.theme import series_color

STAGE_COLORS = {"teacher": 0, "heads": 4, "student": 1}


class AccuracyPanel(PlotPanel):
    title = "Accuracy"
    x_label = "epoch"
    y_label = "accuracy (%)"
    legend_offset = (-4, -4)  # accuracy climbs: the bottom right stays free
    uses_x_axis = True
    x_floor, x_min_span = 0.0, 1.0  # training starts at 0 (epoch, step or minute): one unit at least

    def __init__(self, parent=None):
        super().__init__(parent)
        self.stage = QComboBox()
        self.stage.addItem("all stages", "all")
        for s in STAGES:
            self.stage.addItem(STAGE_NAMES[s], s)
        self.stage.setToolTip("Stages to show: solid lines are test accuracy, dashed lines training accuracy")
        self.add_control(self.stage)
        self.stage.setMinimumContentsLength(max(len(self.stage.itemText(i)) for i in range(self.stage.count())))
        self.stage.currentIndexChanged.connect(lambda *_: self.refresh())

    def control_state(self) -> Any:
        return self.stage.currentData(), self.x_axis

    def draw(self) -> None:
        chosen = self.stage.currentData()
        for r, record in enumerate(self.records):
            run_color, run_symbol = self.run_style(record)
            for stage in record.stages_with(record.accuracy):
                if chosen not in ("all", stage):
                    continue
                table = record.accuracy[stage]
                heads = [k for k in table if k.startswith("head") and k[4:5].isdigit()]
                if stage == "heads" and heads and not self.compare:
                    # each head's own test accuracy says more than their mean
                    for h, key in enumerate(heads):
                        self.curve((r, stage, key), f"{key} test", self.xs(table[key]), table[key].y,
                                   series_color(4 + 2 * h), style=Qt.PenStyle.SolidLine, width=1.5, symbol="t",
                                   symbol_size=5)
                    continue
                color = run_color if self.compare else series_color(STAGE_COLORS.get(stage, 5))
                stage_style = STYLES[STAGES.index(stage) % len(STYLES)] if self.compare and stage in STAGES else None
                name = STAGE_NAMES.get(stage, stage).lower()
                if "test" in table:
                    self.curve((r, stage, "test"), self.label(record, f"{name} test"), self.xs(table["test"]),
                               table["test"].y, color, style=stage_style or Qt.PenStyle.SolidLine,
                               symbol=run_symbol if self.compare else "o", symbol_size=5 if self.compare else 4)
                if "train" in table and not self.compare:
                    self.curve((r, stage, "train"), self.label(record, f"{name} train"), self.xs(table["train"]),
                               table["train"].y, color, style=Qt.PenStyle.DashLine, width=1.5)
