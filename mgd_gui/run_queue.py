"""The studio's Queue panel: a view of the queue (:class:`mgd_gui.model.queue.RunQueue`) with
reorder, pause and cancel; :class:`mgd_gui.model.queue_controller.QueueController` runs it."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLabel, QSizePolicy, QToolButton,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from mgd_gui import theme
from mgd_gui.icons import dock_tool_bar, key_paths, tool_button
from mgd_gui.model.queue import QueueJob, RunQueue

# ----------------------------------------------------------------------------- the panel

COLUMNS = ("#", "Run", "Seed", "Baseline", "Mode", "State", "Result")
STATE_COLORS = {"running": "#2563eb", "done": "#16a34a", "failed": None, "cancelled": None}


class QueuePanel(QWidget):
    """The queue as a table, with Start/Pause, Up/Down, Cancel, Clear and the comparison table."""

    start_requested = Signal()
    pause_requested = Signal()
    cancel_requested = Signal(list)  # [job id] (the running job included: the window stops it)
    table_requested = Signal(str)  # a comparison folder

    def __init__(self, queue: RunQueue, parent: QWidget | None = None):
        super().__init__(parent)
        self.queue = queue
        self.paused_run = False  # the running job's run is paused (the window's Pause)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        bar = dock_tool_bar()
        self.buttons: dict[str, QToolButton] = {}
        for key, text, tip, icon_name in (
                ("start", "Start", "Run the pending jobs: the runs of one pair and seed together, their students "
                                   "in lockstep", "run"),
                ("pause", "Pause", "Let the current runs finish, then start no other until Start", "pause"),
                ("up", "Up", "Run the selected pending job earlier", None),
                ("down", "Down", "Run the selected pending job later", None),
                ("cancel", "Cancel", "Cancel the selected jobs (a running job stops its group, every checkpoint kept; "
                                     "the group's other runs resume next)",
                 "stop"),
                ("clear", "Clear finished", "Remove done, failed and cancelled jobs from the list "
                                            "(their run folders stay)", "remove"),
                ("table", "Table", "The comparison table of the selected job's comparison, filled in as its "
                                   "runs finish", "compare")):
            self.buttons[key] = tool_button(text, tip, icon_name)
            bar.addWidget(self.buttons[key])
        layout.addWidget(bar)
        b = self.buttons  # every action by the keyboard too, while the panel has the focus
        self.shortcuts = key_paths(self, {"Ctrl+Return": b["start"], "Ctrl+Shift+P": b["pause"], "Ctrl+Up": b["up"],
                                          "Ctrl+Down": b["down"], "Delete": b["cancel"],
                                          "Ctrl+Shift+Delete": b["clear"], "Ctrl+K": b["table"]})
        self.summary = QLabel()
        self.summary.setEnabled(False)
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout.addWidget(self.summary)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setStretchLastSection(True)
        layout.addWidget(self.tree, 1)
        self.empty = QLabel("No queued runs. Set comparison baselines (Comparison page) and press Run: "
                            "the comparison's runs are queued here.")
        self.empty.setWordWrap(True)
        self.empty.setEnabled(False)
        layout.addWidget(self.empty)

        b = self.buttons
        b["start"].clicked.connect(self.start_requested)
        b["pause"].clicked.connect(self.pause_requested)
        b["up"].clicked.connect(lambda: self._move(-1))
        b["down"].clicked.connect(lambda: self._move(+1))
        b["cancel"].clicked.connect(lambda: self.cancel_requested.emit(self.selected_ids()))
        b["clear"].clicked.connect(self._clear)
        b["table"].clicked.connect(self._table)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.refresh()

    def selected_ids(self) -> list[str]:
        return [item.data(0, Qt.ItemDataRole.UserRole) for item in self.tree.selectedItems()]

    def select(self, job_ids: list[str]) -> None:
        wanted = set(job_ids)
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            item.setSelected(item.data(0, Qt.ItemDataRole.UserRole) in wanted)

    def state_text(self, job: QueueJob) -> str:
        return "paused" if job.state == "running" and self.paused_run else job.state

    def refresh(self) -> None:
        selected = set(self.selected_ids())
        self.tree.blockSignals(True)
        self.tree.clear()
        for n, job in enumerate(self.queue.jobs, start=1):
            result = f"{job.result:.2f}%" if job.result is not None else ""
            message = job.message if job.state != "done" or not result else ""
            item = QTreeWidgetItem([str(n), job.label, str(job.seed), job.baseline, job.mode, self.state_text(job),
                                    "  ".join(t for t in (result, message) if t)])
            item.setData(0, Qt.ItemDataRole.UserRole, job.id)
            item.setToolTip(1, f"{job.job.label}\n{job.run_dir}")
            item.setToolTip(6, job.message)
            color = STATE_COLORS.get(job.state) if job.state != "failed" else theme.error_color()
            if job.state == "cancelled":
                color = theme.muted_color()
            if color:
                item.setForeground(5, QBrush(QColor(color)))
            self.tree.addTopLevelItem(item)
            item.setSelected(job.id in selected)
        self.tree.blockSignals(False)
        counts = self.queue.counts()
        parts = [f"{counts[s]} {s}" for s in ("running", "pending", "done", "failed", "cancelled") if counts[s]]
        state = {"running": "queue running", "paused": "queue paused", "idle": "queue idle"}[self.queue.state]
        self.summary.setText(f"{state} · " + ", ".join(parts) if parts else "")
        self.empty.setVisible(not self.queue.jobs)
        self.tree.setVisible(bool(self.queue.jobs))
        self._update_buttons()

    def _update_buttons(self) -> None:
        ids = self.selected_ids()
        jobs = [self.queue.job(i) for i in ids]
        pending = [j for j in jobs if j is not None and j.state == "pending"]
        b = self.buttons
        b["start"].setEnabled(bool(self.queue.pending()) and self.queue.state != "running")
        b["start"].setText("Resume" if self.queue.state == "paused" else "Start")
        b["pause"].setEnabled(self.queue.state == "running")
        one = pending[0] if len(ids) == 1 and pending else None
        order = self.queue.pending()
        b["up"].setEnabled(one is not None and order.index(one) > 0)
        b["down"].setEnabled(one is not None and order.index(one) < len(order) - 1)
        b["cancel"].setEnabled(any(j is not None and j.state in ("pending", "running") for j in jobs))
        b["clear"].setEnabled(any(j.state in ("done", "failed", "cancelled") for j in self.queue.jobs))
        b["table"].setEnabled(bool(self.queue.jobs))

    def _move(self, delta: int) -> None:
        ids = self.selected_ids()
        if len(ids) == 1 and self.queue.move(ids[0], delta):
            self.refresh()
            self.select(ids)
            self._update_buttons()

    def _clear(self) -> None:
        self.queue.clear_finished()
        self.refresh()

    def _table(self) -> None:
        ids = self.selected_ids()
        job = self.queue.job(ids[0]) if ids else None
        folder = job.comparison_dir if job is not None else (self.queue.comparison_dirs() or [""])[-1]
        if folder:
            self.table_requested.emit(folder)

