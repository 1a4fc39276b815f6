"""The common frame of every plot: title, controls, hover read-out, PNG and CSV export.

A panel draws a list of :class:`~mgd_gui.run.record.RunRecord` (one run, or several to
compare). Curves are kept between redraws and updated with ``setData`` (cheap while a
run streams in); a panel redraws only when the data it shows has changed.
"""

from __future__ import annotations

import csv
import html
import math
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, Qt
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QMenu, QSizePolicy, QToolButton,
                               QVBoxLayout, QWidget)

from mgd_gui import theme
from mgd_gui.icons import icon
from mgd_gui.plots.decimate import decimate
from mgd_gui.run.record import RunRecord
from mgd_gui.theme import SERIES_COLORS, series_color

pg.setConfigOptions(antialias=True, foreground="k", background="w")

STYLES = (Qt.PenStyle.SolidLine, Qt.PenStyle.DashLine, Qt.PenStyle.DotLine, Qt.PenStyle.DashDotLine,
          Qt.PenStyle.DashDotDotLine)
#: one marker per overlaid run (with its colour), so up to eight runs stay apart in print too
RUN_SYMBOLS = ("o", "s", "t", "d", "+", "star", "t1", "x")
HOVER_PIXELS = 18
#: where a panel's legend goes: "auto" is inside the plot for one run, beside it when overlaying
LEGEND_MODES = (("auto", "Automatic (outside when overlaying runs)"), ("inside", "Inside the plot"),
                ("outside", "Under the plot"), ("hidden", "Hidden"))
#: x axes of the training curves: the epoch, the step within the stage, the run's wall time
X_AXES = {"epoch": "epoch", "step": "step", "time": "wall time (min)"}
_GLYPHS = {Qt.PenStyle.SolidLine: "━━", Qt.PenStyle.DashLine: "╸ ╸", Qt.PenStyle.DotLine: "┅┅",
           Qt.PenStyle.DashDotLine: "╸·╸", Qt.PenStyle.DashDotDotLine: "╸··"}
_SYMBOL_GLYPHS = {"o": "●", "s": "■", "t": "▼", "d": "◆", "+": "✚", "star": "★", "t1": "▲", "x": "✖"}


def unbroken(text: str) -> str:
    """``text`` as rich text that never breaks inside (Qt's labels ignore white-space: nowrap)."""
    return html.escape(text).replace(" ", "&nbsp;").replace("-", "\u2011")


def run_chips(runs: list[tuple[str, tuple[str, str]]]) -> str:
    """The overlaid runs as text: each run's colour and marker (``(label, (colour, marker))``), then its label."""
    chips = []
    for label, (color, symbol) in runs:
        chips.append(f"<span style='white-space:nowrap'><span style='color:{color}; font-weight:bold'>"
                     f"━{_SYMBOL_GLYPHS[symbol]}━</span>&nbsp;{unbroken(label)}</span>")
    return "&nbsp;&nbsp; ".join(chips)


def legend_glyph(style: Qt.PenStyle | None, symbol: str | None) -> str:
    """A few characters that look like a curve's line style and marker, for text legends."""
    line = _GLYPHS.get(style, "") if style is not None else ""
    mark = _SYMBOL_GLYPHS.get(symbol or "", "") if symbol else ""
    if line and mark:
        return line[0] + mark + line[-1]
    return line or mark or "■"


#: how many (colour, marker) pairs runs are told apart by before one comes back
RUN_STYLE_COUNT = math.lcm(len(SERIES_COLORS), len(RUN_SYMBOLS))  # 40 with 10 colours and 8 markers


class RunStyles:
    """Each run's colour and marker, its own for the life of the window whatever is drawn beside it.

    A run is known by its folder; a record that has no folder yet (a run that is starting) by the
    record itself, and its style goes with it to its folder once the folder is known, so the
    record read back from that folder later has it too. A new run takes the style fewest runs have
    had, in a colour no run drawn beside it has where one is free."""

    def __init__(self) -> None:
        self._by_folder: dict[str, int] = {}
        self._by_record: weakref.WeakKeyDictionary[RunRecord, int] = weakref.WeakKeyDictionary()
        self._uses: Counter[int] = Counter()

    @staticmethod
    def _folder(record: RunRecord) -> str | None:
        return str(Path(record.run_dir).absolute()) if record.run_dir is not None else None

    def _known(self, record: RunRecord) -> int | None:
        folder = self._folder(record)
        index = self._by_record.get(record)
        if index is None and folder is not None:
            index = self._by_folder.get(folder)
        if index is not None:
            self._by_record[record] = index
            if folder is not None:
                self._by_folder[folder] = index  # the record's style follows it to its folder
        return index

    def assign(self, records: list[RunRecord]) -> None:
        """Give every run of ``records`` that has none a style (in order, each apart from the others)."""
        known = {id(r): self._known(r) for r in records}
        for record in records:
            if known[id(record)] is not None:
                continue
            beside = {i % len(SERIES_COLORS) for i in known.values() if i is not None}
            index = min(range(RUN_STYLE_COUNT),
                        key=lambda i: (i % len(SERIES_COLORS) in beside, self._uses[i], i))
            self._uses[index] += 1
            self._by_record[record] = index
            if (folder := self._folder(record)) is not None:
                self._by_folder[folder] = index
            known[id(record)] = index

    def style(self, record: RunRecord) -> tuple[str, str]:
        """(colour, marker) of a run (given one first if it has none)."""
        index = self._known(record)
        if index is None:
            self.assign([record])
            index = self._by_record[record]
        return series_color(index), RUN_SYMBOLS[index % len(RUN_SYMBOLS)]


class _FittedView(pg.ViewBox):
    """A view whose automatic range covers what its panel asks at least (a plot with one point
    or none gets sensible axes, not pyqtgraph's unit around the point)."""

    def __init__(self, fit):
        super().__init__()
        self._fit = fit
        self._empty = False

    def childrenBounds(self, frac=None, orthoRange=(None, None), items=None):  # noqa: N802 - pyqtgraph name
        bounds = super().childrenBounds(frac=frac, orthoRange=orthoRange, items=items)
        self._empty = bounds[0] is None and bounds[1] is None
        return [self._fit(axis, bounds[axis]) for axis in (0, 1)]

    def suggestPadding(self, axis):  # noqa: N802 - pyqtgraph name
        return 0.0 if self._empty else super().suggestPadding(axis)  # an empty plot: exactly its default range


class _PointerWatch(QObject):
    """Hides a panel's read-out when the pointer leaves the plot (and when the plot is hidden)."""

    def __init__(self, panel: "PlotPanel"):
        super().__init__(panel)
        self.panel = panel

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt name
        if event.type() in (QEvent.Type.Leave, QEvent.Type.Hide):
            self.panel.pointer_left()
        return False


class PlotPanel(QWidget):
    title = ""
    x_label = ""
    y_label = ""
    empty_text = "No data yet: run an experiment or select runs"
    legend_offset = (-4, 4)  # where the data leave room: negative x = from the right, negative y = from the bottom
    #: the least an automatic x range covers: from ``x_floor`` (None: from the data) over ``x_min_span``
    x_floor: float | None = None
    x_min_span = 0.0

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
        # the title wraps onto a second line rather than be clipped (or widen the window)
        self.title_label.setWordWrap(True)
        self.title_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.title_label.setMinimumWidth(60)
        header.addWidget(self.title_label, 1)
        self.controls = QHBoxLayout()
        self.controls.setSpacing(4)
        header.addLayout(self.controls)
        self.menu_button = QToolButton()
        self.menu_button.setText("⋯")
        self.menu_button.setToolTip("Legend, saving as PNG or CSV, and the panel's other settings")
        self.menu_button.setAutoRaise(True)
        self.menu_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu = QMenu(self)
        self.menu_button.setMenu(self.menu)
        header.addWidget(self.menu_button)
        layout.addLayout(header)
        self.legend_mode = "auto"
        legend_menu = self.menu.addMenu("Legend")
        self.menu_anchor = legend_menu.menuAction()  # panels put their own settings above it
        group = QActionGroup(self)
        self.legend_actions: dict[str, QAction] = {}
        for mode, text in LEGEND_MODES:
            act = QAction(text, self, checkable=True)
            act.setChecked(mode == self.legend_mode)
            act.triggered.connect(lambda _=False, m=mode: self.set_legend_mode(m))
            group.addAction(act)
            legend_menu.addAction(act)
            self.legend_actions[mode] = act
        self.menu.addSeparator()
        self.menu.addAction(icon("png"), "Save as PNG…", self._ask_png)
        self.menu.addAction(icon("csv"), "Save data as CSV…", self._ask_csv)

        self.run_styles = RunStyles()  # the plot area shares one among its panels
        self.plot = pg.PlotWidget(viewBox=_FittedView(self.fitted_range))
        self.item = self.plot.getPlotItem()
        self.item.setLabel("bottom", self.x_label)
        self.item.setLabel("left", self.y_label)
        self.item.showGrid(x=True, y=True, alpha=0.2)
        self.item.setDownsampling(auto=True, mode="peak")
        self.item.setClipToView(True)
        self.item.setMenuEnabled(True)
        self.legend: pg.LegendItem | None = None  # the legend inside the plot, rebuilt when its entries change
        self._legend_entries: list[tuple[Any, str, str, str]] = []  # (item, name, colour, glyph) of this draw
        self._legend_shown: Any = None
        for name in ("left", "bottom"):
            self.item.getAxis(name).enableAutoSIPrefix(False)
        layout.addWidget(self.plot, 1)
        self.outside_legend = QLabel()
        self.outside_legend.setWordWrap(True)
        self.outside_legend.setTextFormat(Qt.TextFormat.RichText)
        self.outside_legend.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.outside_legend.hide()
        layout.addWidget(self.outside_legend)
        self._shown_records: tuple = ()
        self.x_axis = "epoch"  # set by the plot area for panels whose curves run over training
        self.shared_run_legend = False  # the plot area lists the overlaid runs (colour, marker) once

        self.empty = QLabel(self.empty_text, self.plot)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.empty.setWordWrap(True)

        self.hover_text = pg.TextItem(anchor=(0, 1), fill=pg.mkBrush(30, 30, 30, 200), color="w")
        self.hover_text.setZValue(100)
        self.hover_dot = pg.ScatterPlotItem(size=9, pen=pg.mkPen("w", width=1.5), brush=pg.mkBrush(0, 0, 0, 0))
        self.hover_dot.setZValue(99)
        self._hover_proxy = pg.SignalProxy(self.plot.scene().sigMouseMoved, rateLimit=30, slot=self._mouse_moved)
        self._pointer_watch = _PointerWatch(self)
        for watched in (self.plot, self.plot.viewport(), self):
            watched.installEventFilter(self._pointer_watch)
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
        self._bg = bg
        self._legend_shown = None  # rebuilt in the new colours
        # on a box of the plot's colour: the message never runs over the axis numbers
        self.empty.setStyleSheet(f"color: {theme.muted_color()}; background: {bg}; padding: 6px;")
        self._fg = fg

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().resizeEvent(event)
        self._place_empty()

    # -- drawing -------------------------------------------------------------------------
    def set_records(self, records: list[RunRecord]) -> None:
        self.records = list(records)
        self.refresh(force=True)

    # -- legend --------------------------------------------------------------------------
    def set_legend_mode(self, mode: str) -> None:
        self.legend_mode = mode
        self.legend_actions[mode].setChecked(True)
        self._legend_shown = None
        self._show_legend()

    def effective_legend_mode(self) -> str:
        if self.legend_mode != "auto":
            return self.legend_mode
        return "outside" if self.compare else "inside"

    def legend_names(self) -> list[str]:
        """The names in the legend, as drawn now."""
        return [name for _, name, _, _ in self._legend_entries]

    def _show_legend(self) -> None:
        mode = self.effective_legend_mode()
        entries = [] if mode == "hidden" else self._legend_entries
        key = (mode, self.shared_run_legend,
               tuple((id(item), name, color, glyph) for item, name, color, glyph in entries))
        if key == self._legend_shown:
            return
        self._legend_shown = key
        if self.legend is not None:  # a fresh legend each time: pyqtgraph's never shrinks back
            self.legend.clear()
            if self.legend.scene() is not None:
                self.legend.scene().removeItem(self.legend)
            self.legend = None
        html_text = self._legend_html(entries) if mode == "outside" and entries else ""
        self.outside_legend.setVisible(bool(html_text))
        if not entries:
            return
        if mode == "inside":
            legend = pg.LegendItem(offset=self.legend_offset, labelTextSize="7.5pt", verSpacing=-8, horSpacing=12)
            legend.setParentItem(self.item.vb)
            legend.setLabelTextColor(self._fg)
            legend.setBrush(pg.mkBrush(self._bg + "c0"))
            legend.setPen(pg.mkPen(self._fg + "40"))
            legend.setColumnCount(1 if len(entries) <= 4 else 2 if len(entries) <= 10 else 3)
            for item, name, _, _ in entries:
                legend.addItem(item, name)
            self.legend = legend
        elif mode == "outside":
            self.outside_legend.setText(html_text)

    def _legend_html(self, entries: list[tuple[Any, str, str, str]]) -> str:
        """The legend as text under the plot. Overlaid runs named ``run · series`` are told
        apart by colour and marker, their series by line style: each is listed once."""
        muted = theme.muted_color()

        def chip(color: str, glyph: str, name: str) -> str:
            return (f"<span style='white-space:nowrap'><span style='color:{color}; font-weight:bold'>{glyph}</span>"
                    f"&nbsp;{unbroken(name)}</span>")

        runs: dict[str, tuple[str, str]] = {}
        parts: dict[str, str] = {}
        factor = self.compare and all(" · " in name for _, name, _, _ in entries)
        if factor:
            for _, name, color, glyph in entries:
                run, part = name.split(" · ", 1)
                mark = next((c for c in glyph if c in _SYMBOL_GLYPHS.values()), "━")
                runs.setdefault(run, (color, mark))
                line = "".join(c for c in glyph if c not in _SYMBOL_GLYPHS.values()) or glyph
                parts.setdefault(part, line)
        lines = f"<span style='color:{muted}'>lines:</span> " + "&nbsp;&nbsp; ".join(
            chip(muted, g, part) for part, g in parts.items())
        if factor and self.shared_run_legend:
            # the plot area lists the runs once, above every panel: here only what the lines are
            return lines
        if factor and len(parts) > 1:
            return "&nbsp;&nbsp; ".join(chip(c, g, run) for run, (c, g) in runs.items()) + "<br>" + lines
        return "&nbsp;&nbsp; ".join(chip(color, glyph, name) for _, name, color, glyph in entries)

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
        self.run_styles.assign(self.records)
        shown = tuple(id(r) for r in self.records)
        if shown != self._shown_records:
            # other runs: nothing of the last ones stays (ranges, zoom, tick labels)
            self._shown_records = shown
            self.item.enableAutoRange()
        for name in ("bottom", "left"):
            self.item.getAxis(name).setTicks(None)  # panels with named ticks set them again in draw()
        self.item.setLabel("bottom", self.axis_label())
        self.series = []
        self._used = set()
        self._legend_entries = []
        for extra in self._extras:
            self.item.removeItem(extra)
        self._extras = []
        self.draw()
        for k in [k for k in self._curves if k not in self._used]:
            self.item.removeItem(self._curves.pop(k))
        self.empty.setText(self.empty_message())
        self.empty.setVisible(not self.series)
        if not self.series and not self._extras:  # no stale axes: the empty plot's own (see fitted_range)
            self.item.setRange(xRange=self.fitted_range(0, None), yRange=self.fitted_range(1, None), padding=0)
            self.item.enableAutoRange()
        self._show_legend()
        self._place_empty()

    uses_x_axis = False  # True for curves over training: their x axis is the plot area's choice

    def _place_empty(self) -> None:
        """The empty-plot message in a box in the middle of the plot, as tall as its text."""
        width = max(80, min(self.plot.width() - 60, 380))
        height = min(self.empty.heightForWidth(width), self.plot.height())
        self.empty.setGeometry((self.plot.width() - width) // 2 + 20, (self.plot.height() - height) // 2 - 10,
                               width, height)

    def axis_label(self) -> str:
        return X_AXES.get(self.x_axis, self.x_label) if self.uses_x_axis else self.x_label

    def empty_message(self) -> str:
        """What an empty panel says (panels tell why, e.g. a run without that stage)."""
        return self.empty_text

    def empty_y_range(self) -> tuple[float, float]:
        """The y range of an empty plot, in view coordinates (decades on a log axis: 0.1 to 10)."""
        if self.item.ctrl.logYCheck.isChecked():
            return (-1.0, 1.0)
        return (0.0, 100.0) if "%" in self.y_label else (0.0, 1.0)

    def fitted_range(self, axis: int, bounds: list[float] | None) -> list[float]:
        """The least an automatic range of ``axis`` (0: x, 1: y) covers, given the data's ``bounds``
        (view coordinates, None without data): x from ``x_floor`` over ``x_min_span`` at least;
        percentages inside 0..100 over 10 points at least; other values over a fifth of their size
        (a decade on a log axis). Wider data keep their own range."""
        if bounds is None:
            if axis == 0:
                low = self.x_floor if self.x_floor is not None else 0.0
                return [low, low + max(self.x_min_span, 1.0)]
            return list(self.empty_y_range())
        low, high = float(bounds[0]), float(bounds[1])
        if axis == 0:
            if self.x_floor is not None:
                low = min(low, self.x_floor)
            return [low, max(high, low + self.x_min_span)]
        if self.item.ctrl.logYCheck.isChecked():
            span = 1.0
        elif "%" in self.y_label:
            span = 10.0
            if high - low < span:  # a box of 10 points around the data, inside 0..100
                middle = min(max((low + high) / 2, span / 2), 100.0 - span / 2)
                low, high = min(low, middle - span / 2), max(high, middle + span / 2)
            return [low, high]
        else:
            span = abs(low + high) / 2 * 0.2 or 1.0
        if high - low < span:
            middle = (low + high) / 2
            low, high = middle - span / 2, middle + span / 2
        return [low, high]

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
            item = self.item.plot()
            self._curves[full_key] = item
        item.setData(dx, dy, pen=pen, symbol=symbol, symbolSize=symbol_size, symbolBrush=pg.mkBrush(color),
                     symbolPen=pg.mkPen(color))
        self._used.add(full_key)
        if legend:
            self._legend_entries.append((item, name, color, legend_glyph(style, symbol)))
        if hover:
            self.series.append((name, x, y))
        return item

    def extra(self, item: Any, legend_name: str | None = None, color: str = "#888888") -> Any:
        """Add an item that is rebuilt on every draw (bars, reference lines, images)."""
        self.item.addItem(item)
        if legend_name:
            self._legend_entries.append((item, legend_name, color, "■"))
        self._extras.append(item)
        return item

    def run_style(self, record: RunRecord) -> tuple[str, str]:
        """(colour, marker) of an overlaid run: the run's own (see :class:`RunStyles`)."""
        return self.run_styles.style(record)

    def xs(self, series) -> np.ndarray:
        """A series' x values on the chosen x axis (wall time in minutes)."""
        values = np.asarray(series.xs(self.x_axis), dtype=float)
        return values / 60.0 if self.x_axis == "time" else values

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
                best = (d[i], vx[i], vy[i], f"{name}\n{self.axis_label() or 'x'} {xs[i]:.4g}: {ys[i]:.4g}")
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
        self.show_readout(*found)

    def show_readout(self, x: float, y: float, text: str) -> None:
        """The read-out ``text`` at the point (x, y) of the plot, with a ring around the point."""
        vb = self.item.getViewBox()
        if self.hover_text.scene() is None:
            self.item.addItem(self.hover_text, ignoreBounds=True)
            self.item.addItem(self.hover_dot, ignoreBounds=True)
        self.hover_text.setText(text)
        # open the read-out towards the middle of the plot, so that it is never cut at an edge (a
        # point near the middle: to the side it fits on)
        rect = vb.sceneBoundingRect()
        at = vb.mapViewToScene(QPointF(x, y))
        width = self.hover_text.boundingRect().width()
        rightwards = at.x() <= rect.center().x()
        if rightwards and at.x() + width > rect.right() and at.x() - width >= rect.left():
            rightwards = False
        elif not rightwards and at.x() - width < rect.left() and at.x() + width <= rect.right():
            rightwards = True
        self.hover_text.setAnchor((0.0 if rightwards else 1.0, 0.0 if at.y() < rect.center().y() else 1.0))
        self.hover_text.setPos(x, y)
        self.hover_dot.setData([x], [y])
        self.hover_text.show()
        self.hover_dot.show()

    def _hide_hover(self) -> None:
        self.hover_text.hide()
        self.hover_dot.hide()

    def pointer_left(self) -> None:
        """The pointer left the plot (or the plot was hidden): no read-out stays behind. A move
        that the rate limiter still holds is delivered first, so that it cannot show it again."""
        self._hover_proxy.flush()
        self._hide_hover()

    # -- saving --------------------------------------------------------------------------
    def csv_rows(self) -> list[list[Any]]:
        rows: list[list[Any]] = [["series", self.axis_label() or "x", self.y_label or "y"]]
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
