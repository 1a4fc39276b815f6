"""The runs panel: every run folder with its key figures; select several to overlay their
curves, and Compare them in a table (baselines with MGD off and on). Runs are renamed, noted,
duplicated as a new experiment and deleted (to the trash) here; a filter narrows the list."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import QDesktopServices, QFont
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QInputDialog, QLabel,
                               QLineEdit, QMenu, QMessageBox, QToolButton,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from engine.errors import MGDError
from engine.plan import format_duration
from engine.runs import RunInfo, annotate_run, delete_run, list_runs
from mgd_gui.icons import dock_tool_bar, key_paths, tool_button

COLUMNS = ("Name", "Status", "Data", "Mode", "Distiller", "Seed", "Teacher", "Teacher %", "Student", "Student %",
           "Started", "Time", "Note")
COL = {name: i for i, name in enumerate(COLUMNS)}
PATH_ROLE = Qt.ItemDataRole.UserRole
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
ALL = "all"


class _Item(QTreeWidgetItem):
    """Sorts numbers as numbers (accuracy columns), the rest as text."""

    def __lt__(self, other: QTreeWidgetItem) -> bool:
        col = self.treeWidget().sortColumn() if self.treeWidget() else 0
        a, b = self.data(col, SORT_ROLE), other.data(col, SORT_ROLE)
        if a is not None or b is not None:
            return (a if a is not None else -1.0) < (b if b is not None else -1.0)
        return self.text(col) < other.text(col)


def _pct(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "–"


def _started(text: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    try:
        return datetime.fromisoformat(text).strftime(fmt)
    except ValueError:
        return text


def distinct_labels(infos: list[RunInfo]) -> list[str]:
    """Labels for runs shown together that tell every run apart: each run's one name
    (:attr:`engine.runs.RunInfo.label`, as everywhere), and for
    runs that share it, what differs (mode, baseline, seed, start time, student, folder)."""
    comparisons = {i.comparison_dir for i in infos}
    if len(infos) > 1 and len(comparisons) == 1 and None not in comparisons:
        # the runs of one comparison: their job folders (s0-kd-off) say it all
        base = [i.name if i.renamed else i.path.name for i in infos]
    else:
        base = [i.label for i in infos]
    out = list(base)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(base):
        groups[label].append(i)
    keys = (lambda i: i.mode, lambda i: i.distiller, lambda i: f"seed {i.seed}" if i.seed is not None else "",
            lambda i: _started(i.started, "%H:%M:%S"), lambda i: i.student_arch, lambda i: i.path.name)
    for label, members in groups.items():
        if len(members) < 2:
            continue
        parts: dict[int, list[str]] = {i: [] for i in members}
        for key in keys:
            values = [key(infos[i]) for i in members]
            if len(set(values)) > 1:
                for i, value in zip(members, values):
                    parts[i].append(value or "–")
            if len({tuple(parts[i]) for i in members}) == len(members):
                break
        for i in members:
            out[i] = f"{base[i]} ({', '.join(parts[i])})"
    return out


class RunsPanel(QWidget):
    selection_changed = Signal(list)  # [Path]
    open_requested = Signal(object)  # Path
    resume_requested = Signal(object)
    export_requested = Signal(object)
    compare_requested = Signal(list)  # [Path]
    inspect_requested = Signal(object)  # Path
    duplicate_requested = Signal(object)  # Path: load its set-up as a new experiment
    try_requested = Signal(object)  # Path: classify image files with the run's teacher and student
    changed = Signal(str)  # a message: a run was renamed, noted or deleted

    def __init__(self, root: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.root = Path(root)
        self.active: dict[Path, str] = {}  # the runs the window is training: path -> running or paused
        self.busy = False  # a run is in progress: nothing else can be resumed
        self.infos: dict[Path, RunInfo] = {}

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        bar = dock_tool_bar()
        self.buttons: dict[str, QToolButton] = {}
        for key, text, tip, icon_name in (
                ("refresh", "Refresh", "Read the run folders again", "refresh"),
                ("reopen", "Open", "Show the run's plots and log, and load its set-up into the form", "reopen"),
                ("resume", "Resume", "Continue an interrupted run from its last checkpoint", "resume"),
                ("export", "Export…", "Export the run's student (weights, TorchScript, ONNX)", "export"),
                ("inspect", "Inspect", "See what the teacher, each granularity head and the student attend to, "
                                       "the granularity codes in 2-D, and where the student gains over another run",
                 "inspect"),
                ("try", "Try…", "Classify image files of your own with the run's teacher and student "
                                "(top-5 classes, the same preprocessing as the run's test images)", "open"),
                ("compare", "Compare", "Show the comparison table of the selected runs: each baseline with MGD "
                                       "off and on, over seeds, and each student's size, speed and calibration",
                 "compare")):
            self.buttons[key] = tool_button(text, tip, icon_name)
            bar.addWidget(self.buttons[key])
        # the management actions: in a menu of their own (and the context menu)
        self.manage_button = QToolButton()
        self.manage_button.setText("Manage")
        self.manage_button.setToolTip("Rename, note, duplicate or delete the selected runs; open their folder")
        self.manage_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.manage_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.manage_button.setAutoRaise(True)
        manage = QMenu(self)
        for key, text, tip, icon_name in (
                ("rename", "Rename…", "Give the run a name of its own (the run folder keeps its name)", None),
                ("note", "Note…", "Write a note about the run (shown in the table)", None),
                ("duplicate", "Duplicate as new experiment", "Load the run's set-up into the form as a new, "
                                                             "unsaved experiment", "copy"),
                ("folder", "Open folder", "Open the run folder in the file manager", "folder"),
                ("delete", "Delete…", "Move the selected runs to the trash (after a confirmation)", "delete")):
            self.buttons[key] = tool_button(text, tip, icon_name)
            action = manage.addAction(self.buttons[key].icon(), text)
            action.setToolTip(tip)
            action.setObjectName(key)
            action.triggered.connect(self.buttons[key].click)
        self.manage_menu = manage
        b = self.buttons  # every action by the keyboard too, while the panel has the focus (Menu: the context menu)
        self.shortcuts = key_paths(self, {"Return": b["reopen"], "Ctrl+Shift+R": b["resume"], "F5": b["refresh"],
                                          "Ctrl+I": b["inspect"], "Ctrl+T": b["try"], "Ctrl+K": b["compare"],
                                          "F2": b["rename"], "Ctrl+N": b["note"], "Ctrl+D": b["duplicate"],
                                          "Ctrl+Shift+O": b["folder"], "Delete": b["delete"]})
        manage.aboutToShow.connect(self._sync_manage_menu)
        self.manage_button.setMenu(manage)
        bar.addWidget(self.manage_button)
        layout.addWidget(bar)

        filters = QHBoxLayout()
        filters.setSpacing(4)
        self.filter_text = QLineEdit()
        self.filter_text.setPlaceholderText("Filter: name, note, baseline, folder…")
        self.filter_text.setClearButtonEnabled(True)
        self.filter_text.setToolTip("Show only runs whose name, note, baseline, architectures or folder "
                                    "contain every word typed here")
        self.filter_data = QComboBox()
        self.filter_data.setToolTip("Show only runs on this data set")
        self.filter_status = QComboBox()
        self.filter_status.setToolTip("Show only runs with this status")
        for combo in (self.filter_data, self.filter_status):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        filters.addWidget(self.filter_text, 1)
        filters.addWidget(self.filter_data)
        filters.addWidget(self.filter_status)
        self.count_label = QLabel()
        self.count_label.setEnabled(False)
        filters.addWidget(self.count_label)
        layout.addLayout(filters)

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
        self.tree.sortByColumn(COL["Started"], Qt.SortOrder.DescendingOrder)
        header = self.tree.header()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)  # no clipped figures
        header.setStretchLastSection(True)
        header.setToolTip("Select several runs to overlay their curves; right-click for more")
        layout.addWidget(self.tree, 1)

        b = self.buttons
        b["refresh"].clicked.connect(self.refresh)
        b["reopen"].clicked.connect(lambda: self._emit_current(self.open_requested))
        b["resume"].clicked.connect(lambda: self._emit_current(self.resume_requested))
        b["export"].clicked.connect(lambda: self._emit_current(self.export_requested))
        b["inspect"].clicked.connect(lambda: self._emit_current(self.inspect_requested))
        b["try"].clicked.connect(lambda: self._emit_current(self.try_requested))
        b["duplicate"].clicked.connect(lambda: self._emit_current(self.duplicate_requested))
        b["folder"].clicked.connect(self._open_folder)
        b["compare"].clicked.connect(self._compare)
        b["rename"].clicked.connect(self.rename_selected)
        b["note"].clicked.connect(self.note_selected)
        b["delete"].clicked.connect(self.delete_selected)
        self.tree.itemSelectionChanged.connect(self._selection_changed)
        self.tree.itemDoubleClicked.connect(lambda item, _c: self.open_requested.emit(item.data(0, PATH_ROLE)))
        self.filter_text.textChanged.connect(lambda *_: self._apply_filter())
        self.filter_data.currentIndexChanged.connect(lambda *_: self._apply_filter())
        self.filter_status.currentIndexChanged.connect(lambda *_: self._apply_filter())
        self.refresh()

    # -- questions (tests replace these) -------------------------------------------------
    def ask_text(self, title: str, label: str, text: str, multiline: bool = False) -> str | None:
        """The text the user typed, or None when cancelled."""
        if multiline:
            value, ok = QInputDialog.getMultiLineText(self, title, label, text)
        else:
            value, ok = QInputDialog.getText(self, title, label, QLineEdit.EchoMode.Normal, text)
        return value if ok else None

    def confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text, QMessageBox.StandardButton.Yes |
                                      QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def report(self, title: str, text: str) -> None:
        QMessageBox.warning(self, title, text)

    # -- contents ----------------------------------------------------------------------
    def status_text(self, info: RunInfo) -> str:
        if info.path in self.active:
            return self.active[info.path]
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
            values = (info.label, status, info.dataset, info.mode, info.distiller,
                      "" if info.seed is None else str(info.seed), info.teacher_arch, _pct(info.teacher_acc),
                      info.student_arch, _pct(info.student_acc), _started(info.started),
                      format_duration(info.total_seconds) if info.total_seconds else "",
                      info.note.splitlines()[0] if info.note else "")
            item = _Item([str(v) for v in values])
            item.setData(0, PATH_ROLE, info.path)
            for col, number in (("Seed", info.seed), ("Teacher %", info.teacher_acc),
                                ("Student %", info.student_acc), ("Time", info.total_seconds)):
                item.setData(COL[col], SORT_ROLE, number)
                item.setTextAlignment(COL[col], Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            heads = ", ".join(f"d{h.get('dim')}: {h.get('test_acc', 0):.1f}%" for h in info.heads)
            part = f"\ncomparison: {info.comparison} ({info.comparison_dir})" if info.comparison else ""
            named = f"\nexperiment: {info.experiment}" if info.renamed else ""
            tip = (f"{info.path}\nstatus: {status}{named}{part}" + (f"\nheads: {heads}" if heads else "")
                   + (f"\nnote: {info.note}" if info.note else "") + (f"\nerror: {info.error}" if info.error else ""))
            for col in range(len(COLUMNS)):
                item.setToolTip(col, tip)
            if status in ("running", "paused"):
                for col in range(len(COLUMNS)):
                    item.setFont(col, bold)
            self.tree.addTopLevelItem(item)
            if info.path in selected:
                item.setSelected(True)
        self.tree.setSortingEnabled(True)
        self._fill_filters(infos)
        self._apply_filter(emit=False)
        self.tree.blockSignals(False)
        self._update_buttons()

    def _fill_filters(self, infos: list[RunInfo]) -> None:
        for combo, everything, values in (
                (self.filter_data, "all data sets", sorted({i.dataset for i in infos if i.dataset})),
                (self.filter_status, "any status", sorted({self.status_text(i) for i in infos}))):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(everything, ALL)
            for value in values:
                combo.addItem(value, value)
            index = combo.findData(current)
            combo.setCurrentIndex(index if index >= 0 else 0)
            combo.blockSignals(False)

    def matches(self, info: RunInfo) -> bool:
        """Whether the filter shows ``info``."""
        data, status = self.filter_data.currentData(), self.filter_status.currentData()
        if data not in (None, ALL) and info.dataset != data:
            return False
        if status not in (None, ALL) and self.status_text(info) != status:
            return False
        words = self.filter_text.text().lower().split()
        haystack = " ".join((info.label, info.experiment, info.note, info.distiller, info.mode, info.teacher_arch,
                             info.student_arch, info.path.name, info.comparison)).lower()
        return all(w in haystack for w in words)

    def _apply_filter(self, emit: bool = True) -> None:
        shown = 0
        hidden_selected = False
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            info = self.infos.get(item.data(0, PATH_ROLE))
            visible = info is not None and self.matches(info)
            if not visible and item.isSelected():
                item.setSelected(False)
                hidden_selected = True
            item.setHidden(not visible)
            shown += visible
        total = self.tree.topLevelItemCount()
        self.count_label.setText(f"{shown} of {total}" if shown != total else f"{total} run{'' if total == 1 else 's'}")
        if emit and hidden_selected:
            self._selection_changed()

    def visible_paths(self) -> list[Path]:
        return [self.tree.topLevelItem(i).data(0, PATH_ROLE) for i in range(self.tree.topLevelItemCount())
                if not self.tree.topLevelItem(i).isHidden()]

    def set_busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            self._update_buttons()

    def set_active(self, path: Path | None, status: str = "running") -> None:
        """The run the window is training (``status``: running or paused), or None."""
        self.set_active_runs({Path(path): status} if path else {})

    def set_active_runs(self, runs: dict) -> None:
        """The runs the window is training together: ``{path: "running" or "paused"}``."""
        active = {Path(p): status for p, status in runs.items()}
        if active != self.active:
            self.active = active
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
            if item.data(0, PATH_ROLE) in wanted and not item.isHidden():
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
        b = self.buttons
        for key in ("reopen", "folder", "rename", "note", "duplicate"):
            b[key].setEnabled(one is not None)
        b["export"].setEnabled(one is not None and one.has_student)
        b["inspect"].setEnabled(one is not None and one.has_student)
        b["try"].setEnabled(one is not None and one.has_student)
        b["resume"].setEnabled(one is not None and one.resumable and one.path not in self.active and not self.busy)
        b["delete"].setEnabled(bool(paths) and not any(p in self.active for p in paths))
        b["delete"].setText(f"Delete {len(paths)} runs…" if len(paths) > 1 else "Delete…")
        b["compare"].setEnabled(bool(paths))
        b["compare"].setText(f"Compare ({len(paths)})" if len(paths) > 1 else "Compare")
        self.manage_button.setEnabled(bool(paths))

    def _sync_manage_menu(self) -> None:
        for action in self.manage_menu.actions():
            button = self.buttons.get(action.objectName())
            if button is not None:
                action.setEnabled(button.isEnabled())
                action.setText(button.text())

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
        for key in ("reopen", "resume", "export", "inspect", "try", None, "compare", None, "rename", "note",
                    "duplicate", "folder", None, "delete"):
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

    # -- managing ----------------------------------------------------------------------
    def rename_selected(self) -> None:
        paths = self.selected_paths()
        info = self.infos.get(paths[0]) if len(paths) == 1 else None
        if info is None:
            return
        text = self.ask_text("Rename the run", f"A name for {info.path.name} (empty: the experiment's name, "
                                               f"{info.experiment}):", info.name if info.renamed else "")
        if text is None:
            return
        self._annotate(info, name=text)

    def note_selected(self) -> None:
        paths = self.selected_paths()
        info = self.infos.get(paths[0]) if len(paths) == 1 else None
        if info is None:
            return
        text = self.ask_text("Note", f"A note about {info.label}:", info.note, multiline=True)
        if text is None:
            return
        self._annotate(info, note=text)

    def _annotate(self, info: RunInfo, **changes: str) -> None:
        try:
            annotate_run(info.path, **changes)
        except (OSError, MGDError) as exc:
            self.report("Cannot change the run", str(exc))
            return
        what = "renamed" if "name" in changes else "noted"
        self.refresh()
        self.changed.emit(f"{info.path.name} {what}")
        self._selection_changed()  # the plots show the new name

    def delete_selected(self) -> None:
        paths = [p for p in self.selected_paths() if p not in self.active]
        if not paths:
            return
        names = "\n".join(f"  {self.infos[p].label}  ({p.name})" for p in paths if p in self.infos)
        if not self.confirm("Delete runs", f"Move {'this run' if len(paths) == 1 else f'these {len(paths)} runs'} "
                                           f"to the trash?\n\n{names}"):
            return
        done, problems = [], []
        for path in paths:
            try:
                done.append(f"{path.name}: {delete_run(path)}")
            except (OSError, MGDError) as exc:
                problems.append(f"{path.name}: {exc}")
        self.refresh()
        self._selection_changed()
        for line in done:
            self.changed.emit(f"deleted {line}")
        if problems:
            self.report("Some runs were not deleted", "\n".join(problems))
