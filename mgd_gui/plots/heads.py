"""Each granularity head's best test accuracy after self-analysis, next to the teacher's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

from mgd_gui.plots.base import PlotPanel
from mgd_gui.theme import series_color


def head_name(head: dict) -> str:
    return f"d={head.get('dim')} · T={head.get('temperature'):g}" if head.get("temperature") is not None \
        else f"d={head.get('dim')}"


class HeadsPanel(PlotPanel):
    title = "Granularity heads"
    x_label = "head (code width d, temperature T)"
    y_label = "test accuracy (%)"
    empty_text = "Head accuracies appear after the self-analysis stage"

    def data_key(self) -> Any:
        return tuple((id(r), len(r.heads), r.teacher_acc, r.has_stage("heads")) for r in self.records)

    def empty_message(self) -> str:
        if self.records and all(r.has_stage("heads") is False for r in self.records):
            return ("No granularity heads in this run: MGD is off, so there is no self-analysis stage"
                    if len(self.records) == 1 else "None of these runs has granularity heads (MGD off)")
        return self.empty_text

    def draw(self) -> None:
        with_heads = [r for r in self.records if r.heads]
        if not with_heads:
            return
        count = max(len(r.heads) for r in with_heads)
        width = 0.8 / len(with_heads)
        labels = []
        for r, record in enumerate(with_heads):
            x = np.arange(len(record.heads)) - 0.4 + width * (r + 0.5)
            y = np.array([float(h.get("test_acc") or 0.0) for h in record.heads])
            color = self.run_style(record)[0] if self.compare else series_color(4)  # its colour of the other panels
            bars = pg.BarGraphItem(x=x, height=y, width=width * 0.9, brush=pg.mkBrush(color),
                                   pen=pg.mkPen(color))
            self.extra(bars, f"{record.label} · heads" if self.compare else None, color)
            self.series.append((self.label(record, "heads"), x, y))
            if r == 0:
                labels = [head_name(h) for h in record.heads]
            if record.teacher_acc is not None:
                line_color = color if self.compare else series_color(0)
                pen = pg.mkPen(line_color, width=1.5, style=Qt.PenStyle.DashLine)
                if self.compare:
                    # overlaid runs: the teacher lines are named in the legend, not on the plot
                    line = pg.InfiniteLine(pos=record.teacher_acc, angle=0, pen=pen)
                    self.extra(line)
                    self._legend_entries.append((line, f"{record.label} · teacher", color, "╸ ╸"))
                else:
                    line = pg.InfiniteLine(pos=record.teacher_acc, angle=0, pen=pen,
                                           label=f"teacher {record.teacher_acc:.1f}%",
                                           labelOpts={"position": 0.92, "color": self._fg,
                                                      "anchors": [(1, 1), (1, 1)]})
                    self.extra(line)
        self.set_ticks("bottom", labels + [""] * (count - len(labels)))
        self.item.setXRange(-0.6, count - 0.4, padding=0)
        top = max([float(h.get("test_acc") or 0) for r in with_heads for h in r.heads]
                  + [r.teacher_acc or 0 for r in with_heads])
        self.item.setYRange(0, max(10.0, top * 1.12), padding=0)

    def hover_at(self, x, y, px, py):
        teachers = {self.label(r, "heads"): r.teacher_acc for r in self.records}
        for name, xs, ys in self.series:
            for xi, yi in zip(xs, ys):
                if abs(x - xi) < 0.4 / max(1, len(self.records)) and 0 <= y <= max(yi, 0) + 5 * py:
                    teacher = teachers.get(name)
                    return xi, yi, f"{name}\n{yi:.2f}%" + (f" (teacher {teacher:.2f}%)" if teacher is not None else "")
        return None
