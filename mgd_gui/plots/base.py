"""The common frame of every plot: title, controls, hover read-out, PNG and CSV export.

A panel draws a list of :class:`~mgd_gui.run.record.RunRecord` (one run, or several to
compare). Curves are kept between redraws and updated with ``setData`` (cheap while a
run streams in); a panel redraws only when the data it shows has changed.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QSizePolicy, QToolButton, QVBoxLayout,
                               QWidget)

from mgd_gui import theme
from mgd_gui.icons import icon
from mgd_gui.plots.decimate import decimate
from mgd_gui.run.record import RunRecord

pg.setConfigOptions(antialias=True, foreground="k", background="w")

STYLES = (Qt.PenStyle.SolidLine, Qt.PenStyle.DashLine, Qt.PenStyle.DotLine, Qt.PenStyle.DashDotLine,
          Qt.PenStyle.DashDotDotLine)
HOVER_PIXELS = 18


class PlotPanel(QWidget):
    title = ""
    x_label = ""
    y_label = ""
    empty_text = "No data yet: run an experiment or select runs"
    legend_offset = (-4, 4)  # where the data leave room: negative x = from the right, negative y = from the bottom

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.records: list[RunRecord] = []
        self.series: list[tuple[str, np.ndarray, np.ndarray]] = []  # what is drawn: for CSV and hover
        self._curves: dict[Any, pg.PlotDataItem] = {}
        self._used: set[Any] = set()
        self._extras: list[Any] = []  # bars, lines, images: recreated on each draw
        self._drawn_key: Any = None

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        header = QHBoxLayout()
        header.setSpacing(4)
        self.title_label = QLabel(f"<b>{self.title}</b>")
        # a long title (model, epoch, accuracy) may be clipped rather than widen the window
        self.title_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.title_label.setMinimumWidth(60)
        header.addWidget(self.title_label, 1)
        self.controls = QHBoxLayout()
        self.controls.setSpacing(4)
        header.addLayout(self.controls)
        for name, tip, slot in (("png", "Save the plot as a PNG image", self._ask_png),
                                ("csv", "Save the plotted data as CSV", self._ask_csv)):
            button = QToolButton()
            button.setIcon(icon(name))
            button.setToolTip(tip)
            button.setAutoRaise(True)
            button.clicked.connect(slot)
            header.addWidget(button)
        layout.addLayout(header)

        self.plot = pg.PlotWidget()
        self.item = self.plot.getPlotItem()
        self.item.setLabel("bottom", self.x_label)
        self.item.setLabel("left", self.y_label)
        self.item.showGrid(x=True, y=True, alpha=0.2)
        self.item.setDownsampling(auto=True, mode="peak")
        self.item.setClipToView(True)
        self.item.setMenuEnabled(True)
        self.legend = self.item.addLegend(offset=self.legend_offset, labelTextSize="7.5pt", verSpacing=-8,
                                          horSpacing=12)
        for name in ("left", "bottom"):
            self.item.getAxis(name).enableAutoSIPrefix(False)
        layout.addWidget(self.plot, 1)

        self.empty = QLabel(self.empty_text, self.plot)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.empty.setWordWrap(True)

        self.hover_text = pg.TextItem(anchor=(0, 1), fill=pg.mkBrush(30, 30, 30, 200), color="w")
        self.hover_text.setZValue(100)
        self.hover_dot = pg.ScatterPlotItem(size=9, pen=pg.mkPen("w", width=1.5), brush=pg.mkBrush(0, 0, 0, 0))
        self.hover_dot.setZValue(99)
        self._hover_proxy = pg.SignalProxy(self.plot.scene().sigMouseMoved, rateLimit=30, slot=self._mouse_moved)
        self._apply_colors()

    def _set_title(self, html: str) -> None:
        self.title_label.setText(html)
        self.title_label.setToolTip(html.replace("<b>", "").replace("</b>", ""))

    def add_control(self, widget: QWidget) -> QWidget:
        """A control in the header; drop-downs may shrink so that the window fits 1280 pixels."""
        if isinstance(widget, QComboBox):
            widget.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            widget.setMinimumContentsLength(5)
        self.controls.addWidget(widget)
        return widget

    # -- theme ---------------------------------------------------------------------------
    def apply_theme(self) -> None:
        self._apply_colors()
        for key in list(self._curves):  # legend labels take the text colour when created
            self.item.removeItem(self._curves.pop(key))
        self.refresh(force=True)

    def _apply_colors(self) -> None:
        bg, fg = theme.plot_colors()
        self.plot.setBackground(bg)
        for name in ("left", "bottom", "right", "top"):
            axis = self.item.getAxis(name)
            axis.setPen(pg.mkPen(fg))
            axis.setTextPen(pg.mkPen(fg))
        self.legend.setLabelTextColor(fg)
        self.legend.setBrush(pg.mkBrush(bg + "c0"))
        self.legend.setPen(pg.mkPen(fg + "40"))
        self.empty.setStyleSheet(f"color: {theme.muted_color()};")
        self._fg = fg

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().resizeEvent(event)
        self.empty.setGeometry(0, 0, self.plot.width(), self.plot.height())

    # -- drawing -------------------------------------------------------------------------
    def set_records(self, records: list[RunRecord]) -> None:
        self.records = list(records)
        self.refresh(force=True)

    def data_key(self) -> Any:
        """What the drawing depends on; a redraw happens only when it changes."""
        return tuple((id(r), r.version) for r in self.records)

    def needs_redraw(self) -> bool:
        return (self.data_key(), self.control_state()) != self._drawn_key

    def refresh(self, force: bool = False) -> None:
        key = (self.data_key(), self.control_state())
        if not force and key == self._drawn_key:
            return
        self._drawn_key = key
        self.series = []
        self._used = set()
        for extra in self._extras:
            self.item.removeItem(extra)
        self._extras = []
        self.draw()
        for k in [k for k in self._curves if k not in self._used]:
            self.item.removeItem(self._curves.pop(k))
        self.empty.setVisible(not self.series)
        entries = len(self.legend.items)
        self.legend.setColumnCount(1 if entries <= 4 else 2 if entries <= 10 else 3)
        self.legend.setVisible(bool(entries))
        self.empty.setGeometry(0, 0, self.plot.width(), self.plot.height())

    def control_state(self) -> Any:
        """The values of the panel's own controls (stage, model, smoothing...)."""
        return None

    def draw(self) -> None:
        raise NotImplementedError

    @property
    def compare(self) -> bool:
        return len(self.records) > 1

    def label(self, record: RunRecord, name: str) -> str:
        return f"{record.label} · {name}" if self.compare else name

    def curve(self, key: Any, name: str, x, y, color: str, *, style: Qt.PenStyle = Qt.PenStyle.SolidLine,
              width: float = 2.0, symbol: str | None = None, symbol_size: int = 6, legend: bool = True,
              hover: bool = True) -> pg.PlotDataItem:
        """Draw (or update) one curve; ``key`` identifies it between redraws."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        dx, dy = decimate(x, y)
        pen = pg.mkPen(color, width=width, style=style) if style is not None else None
        full_key = (key, name, legend)
        item = self._curves.get(full_key)
        if item is None:
            item = self.item.plot(name=name if legend else None)
            self._curves[full_key] = item
        item.setData(dx, dy, pen=pen, symbol=symbol, symbolSize=symbol_size, symbolBrush=pg.mkBrush(color),
                     symbolPen=pg.mkPen(color))
        self._used.add(full_key)
        if hover:
            self.series.append((name, x, y))
        return item

    def extra(self, item: Any, legend_name: str | None = None) -> Any:
        """Add an item that is rebuilt on every draw (bars, reference lines, images)."""
        self.item.addItem(item)
        if legend_name:
            self.legend.addItem(item, legend_name)
        self._extras.append(item)
        return item

    def set_ticks(self, axis: str, labels: list[str], positions=None, max_labels: int = 24) -> None:
        positions = list(range(len(labels))) if positions is None else list(positions)
        step = max(1, -(-len(labels) // max_labels))
        ticks = [(p, str(t)) for i, (p, t) in enumerate(zip(positions, labels)) if i % step == 0]
        self.item.getAxis(axis).setTicks([ticks, []] if ticks else None)

    # -- hover ---------------------------------------------------------------------------
    def hover_at(self, x: float, y: float, px: float, py: float) -> tuple[float, float, str] | None:
        """The point nearest to (x, y) in pixels, as (x, y, text); panels may override."""
        best = None
        log_x, log_y = self.item.ctrl.logXCheck.isChecked(), self.item.ctrl.logYCheck.isChecked()
        for name, xs, ys in self.series:
            if not len(xs):
                continue
            vx = np.log10(np.clip(xs, 1e-300, None)) if log_x else xs
            vy = np.log10(np.clip(ys, 1e-300, None)) if log_y else ys
            d = ((vx - x) / px) ** 2 + ((vy - y) / py) ** 2
            i = int(np.nanargmin(d)) if np.isfinite(d).any() else -1
            if i >= 0 and (best is None or d[i] < best[0]):
                best = (d[i], vx[i], vy[i], f"{name}\n{self.x_label or 'x'} {xs[i]:.4g}: {ys[i]:.4g}")
        if best is None or best[0] > HOVER_PIXELS ** 2:
            return None
        return best[1], best[2], best[3]

    def _mouse_moved(self, args: tuple) -> None:
        pos: QPointF = args[0]
        vb = self.item.getViewBox()
        if not self.item.sceneBoundingRect().contains(pos) or not (self.series or self._extras):
            self._hide_hover()
            return
        point = vb.mapSceneToView(pos)
        px, py = vb.viewPixelSize()
        found = self.hover_at(point.x(), point.y(), px or 1e-9, py or 1e-9)
        if found is None:
            self._hide_hover()
            return
        x, y, text = found
        if self.hover_text.scene() is None:
            self.item.addItem(self.hover_text, ignoreBounds=True)
            self.item.addItem(self.hover_dot, ignoreBounds=True)
        self.hover_text.setText(text)
        self.hover_text.setPos(x, y)
        self.hover_dot.setData([x], [y])
        self.hover_text.show()
        self.hover_dot.show()

    def _hide_hover(self) -> None:
        self.hover_text.hide()
        self.hover_dot.hide()

    # -- saving --------------------------------------------------------------------------
    def csv_rows(self) -> list[list[Any]]:
        rows: list[list[Any]] = [["series", self.x_label or "x", self.y_label or "y"]]
        for name, xs, ys in self.series:
            rows.extend([name, float(x), float(y)] for x, y in zip(xs, ys))
        return rows

    def save_csv(self, path: str | Path) -> Path:
        path = Path(path)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(self.csv_rows())
        return path

    def save_png(self, path: str | Path) -> Path:
        path = Path(path)
        self._hide_hover()
        if not self.plot.grab().save(str(path), "PNG"):
            raise OSError(f"{path}: could not write the image")
        return path

    def _default_name(self, suffix: str) -> str:
        base = self.title.lower().replace(" ", "-").replace("/", "-") or "plot"
        return f"{base}{suffix}"

    def _ask_png(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Save {self.title} as PNG", self._default_name(".png"),
                                              "PNG images (*.png)")
        if path:
            self.save_png(path)

    def _ask_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Save {self.title} data as CSV", self._default_name(".csv"),
                                              "CSV files (*.csv)")
        if path:
            self.save_csv(path)
