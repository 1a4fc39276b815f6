"""Noise robustness: test accuracy against the std of Gaussian input noise, teacher vs student."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt

from mgd_gui.plots.base import PlotPanel
from mgd_gui.theme import series_color

MODEL_STYLE = {"teacher": (Qt.PenStyle.DashLine, "s", 0), "student": (Qt.PenStyle.SolidLine, "o", 1)}


class NoisePanel(PlotPanel):
    title = "Noise robustness"
    x_label = "noise std"
    y_label = "test accuracy (%)"
    empty_text = "Noise curves appear after the teacher and student evaluations"
    legend_offset = (4, -4)  # accuracy falls with noise: the bottom left stays free
    x_floor, x_min_span = 0.0, 0.1  # from no noise

    def data_key(self) -> Any:
        return tuple((id(r), tuple(sorted((k, len(v[0])) for k, v in r.noise.items()))) for r in self.records)

    def draw(self) -> None:
        for r, record in enumerate(self.records):
            run_color, run_symbol = self.run_style(record)
            for model, (levels, accs) in sorted(record.noise.items(), key=lambda kv: kv[0] != "teacher"):
                style, symbol, color_index = MODEL_STYLE.get(model, (Qt.PenStyle.DotLine, "t", 2))
                color = run_color if self.compare else series_color(color_index)
                self.curve((r, model), self.label(record, model), levels, accs, color, style=style,
                           symbol=run_symbol if self.compare else symbol, symbol_size=7)
