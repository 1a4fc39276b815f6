"""The runs panel: every run folder with its key figures; select several to overlay their
curves, and Compare them in a table (baselines with MGD off and on)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import QDesktopServices, QFont
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QLabel, QMenu, QSizePolicy, QToolButton,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from engine.runs import RunInfo, list_runs
from mgd_gui.icons import icon
from mgd_gui.run.progress import format_duration

COLUMNS = ("Name", "Status", "Mode", "Distiller", "Teacher", "Teacher %", "Student", "Student %", "Started", "Time")
PATH_ROLE = Qt.ItemDataRole.UserRole


class _Item(QTreeWidgetItem):
    """Sorts numbers as numbers (accuracy columns), the rest as text."""

    def __lt__(self, other: QTreeWidgetItem) -> bool:
        col = self.treeWidget().sortColumn() if self.treeWidget() else 0
        a, b = self.data(col, Qt.ItemDataRole.UserRole + 1), other.data(col, Qt.ItemDataRole.UserRole + 1)
        if a is not None or b is not None:
            return (a if a is not None else -1.0) < (b if b is not None else -1.0)
        return self.text(col) < other.text(col)


def _pct(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "–"


def _started(text: str) -> str:
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return text


class RunsPanel(QWidget):
    selection_changed = Signal(list)  # [Path]
    open_requested = Signal(object)  # Path
    resume_requested = Signal(object)
    export_requested = Signal(object)
    compare_requested = Signal(list)  # [Path]
    inspect_requested = Signal(object)  # Path

    def __init__(self, root: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.root = Path(root)
        self.active: Path | None = None
        self.active_status = "running"
        self.busy = False  # a run is in progress: nothing else can be resumed
        self.infos: dict[Path, RunInfo] = {}

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        bar = QHBoxLayout()
        self.buttons: dict[str, QToolButton] = {}
        for key, text, tip in (
                ("refresh", "Refresh", "Read the run folders again"),
                ("reopen", "Open", "Show the run's plots and log, and load its set-up into the form"),
                ("resume", "Resume", "Continue an interrupted run from its last checkpoint"),
                ("export", "Export…", "Export the run's student (weights, TorchScript, ONNX)"),
                ("inspect", "Inspect", "See what the teacher, each granularity head and the student attend to, "
                                       "the granularity codes in 2-D, and where the student gains over another run"),
                ("folder", "Folder", "Open the run folder in the file manager"),
                ("compare", "Compare", "Show the comparison table of the selected runs: each baseline with MGD "
                                       "off and on, over seeds, and each student's size, speed and calibration")):
            b = QToolButton()
            b.setText(text)
            b.setIcon(icon(key))
            b.setToolTip(tip)
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            b.setAutoRaise(True)
            bar.addWidget(b)
            self.buttons[key] = b
        bar.addStretch(1)
        self.hint = QLabel("Select several runs to overlay their curves")
        self.hint.setEnabled(False)
        self.hint.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # never widens the dock
        self.hint.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        bar.addWidget(self.hint)
        layout.addLayout(bar)

        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._context_menu)
        self.tree.setSortingEnabled(True)
        self.tree.sortByColumn(8, Qt.SortOrder.DescendingOrder)
        for col, width in enumerate((130, 74, 70, 58, 76, 64, 76, 64, 116, 50)):
            self.tree.setColumnWidth(col, width)
        layout.addWidget(self.tree, 1)

        self.buttons["refresh"].clicked.connect(self.refresh)
        self.buttons["reopen"].clicked.connect(lambda: self._emit_current(self.open_requested))
        self.buttons["resume"].clicked.connect(lambda: self._emit_current(self.resume_requested))
        self.buttons["export"].clicked.connect(lambda: self._emit_current(self.export_requested))
        self.buttons["inspect"].clicked.connect(lambda: self._emit_current(self.inspect_requested))
        self.buttons["folder"].clicked.connect(self._open_folder)
        self.buttons["compare"].clicked.connect(self._compare)
        self.tree.itemSelectionChanged.connect(self._selection_changed)
        self.tree.itemDoubleClicked.connect(lambda item, _c: self.open_requested.emit(item.data(0, PATH_ROLE)))
        self.refresh()

    # -- contents ----------------------------------------------------------------------
    def status_text(self, info: RunInfo) -> str:
        if self.active is not None and info.path == self.active:
            return self.active_status
        if info.status in ("running", "unknown"):
            return "interrupted"
        return info.status

    def refresh(self) -> None:
        selected = set(self.selected_paths())
        infos = list_runs(self.root)
        self.infos = {i.path: i for i in infos}
        self.tree.blockSignals(True)
        self.tree.setSortingEnabled(False)
        self.tree.clear()
        bold = QFont()
        bold.setBold(True)
        for info in infos:
            status = self.status_text(info)
            values = (info.label, status, info.mode, info.distiller, info.teacher_arch, _pct(info.teacher_acc),
                      info.student_arch, _pct(info.student_acc), _started(info.started),
                      format_duration(info.total_seconds) if info.total_seconds else "")
            item = _Item([str(v) for v in values])
            item.setData(0, PATH_ROLE, info.path)
            for col, number in ((5, info.teacher_acc), (7, info.student_acc), (9, info.total_seconds)):
                item.setData(col, Qt.ItemDataRole.UserRole + 1, number)
                item.setTextAlignment(col, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            heads = ", ".join(f"d{h.get('dim')}: {h.get('test_acc', 0):.1f}%" for h in info.heads)
            part = f"\ncomparison: {info.comparison} ({info.comparison_dir})" if info.comparison else ""
            tip = f"{info.path}\nstatus: {status}{part}" + (f"\nheads: {heads}" if heads else "") + \
                (f"\nerror: {info.error}" if info.error else "")
            for col in range(len(COLUMNS)):
                item.setToolTip(col, tip)
            if status in ("running", "paused"):
                for col in range(len(COLUMNS)):
                    item.setFont(col, bold)
            self.tree.addTopLevelItem(item)
            if info.path in selected:
                item.setSelected(True)
        self.tree.setSortingEnabled(True)
        self.tree.blockSignals(False)
        self._update_buttons()

    def set_busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            self._update_buttons()

    def set_active(self, path: Path | None, status: str = "running") -> None:
        """The run the window is training (``status``: running or paused), or None."""
        self.active = Path(path) if path else None
        self.active_status = status
        self.refresh()

    # -- selection ---------------------------------------------------------------------
    def selected_paths(self) -> list[Path]:
        return [item.data(0, PATH_ROLE) for item in self.tree.selectedItems()]

    def select(self, paths: list[Path]) -> None:
        wanted = {Path(p) for p in paths}
        self.tree.blockSignals(True)
        self.tree.clearSelection()
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, PATH_ROLE) in wanted:
                item.setSelected(True)
                self.tree.scrollToItem(item)
        self.tree.blockSignals(False)
        self._selection_changed()

    def _selection_changed(self) -> None:
        self._update_buttons()
        self.selection_changed.emit(self.selected_paths())

    def _update_buttons(self) -> None:
        paths = self.selected_paths()
        one = self.infos.get(paths[0]) if len(paths) == 1 else None
        self.buttons["reopen"].setEnabled(one is not None)
        self.buttons["folder"].setEnabled(one is not None)
        self.buttons["export"].setEnabled(one is not None and one.has_student)
        self.buttons["inspect"].setEnabled(one is not None and one.has_student)
        self.buttons["resume"].setEnabled(one is not None and one.resumable and one.path != self.active
                                          and not self.busy)
        self.buttons["compare"].setEnabled(bool(paths))
        self.buttons["compare"].setText(f"Compare ({len(paths)})" if len(paths) > 1 else "Compare")

    def _emit_current(self, signal) -> None:
        paths = self.selected_paths()
        if len(paths) == 1:
            signal.emit(paths[0])

    def _compare(self) -> None:
        paths = self.selected_paths()
        if paths:
            self.compare_requested.emit(paths)

    def context_menu(self) -> QMenu:
        """The menu of the selected runs: the buttons' actions, enabled as they are."""
        menu = QMenu(self)
        for key in ("reopen", "resume", "export", "inspect", "folder", None, "compare"):
            if key is None:
                menu.addSeparator()
                continue
            button = self.buttons[key]
            action = menu.addAction(button.icon(), button.text())
            action.setToolTip(button.toolTip())
            action.setEnabled(button.isEnabled())
            action.setObjectName(key)
            action.triggered.connect(button.click)
        return menu

    def _context_menu(self, pos) -> None:
        if not self.selected_paths():
            return
        self.context_menu().exec(self.tree.viewport().mapToGlobal(pos))

    def _open_folder(self) -> None:
        paths = self.selected_paths()
        if paths:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(paths[0])))
