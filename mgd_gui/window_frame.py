"""The main window's frame: its widgets, docks, toolbar and menus, their layout and theme kept
between sessions, and the questions it asks (unsaved edits, a run in progress, queued runs).
:class:`mgd_gui.main_window.MainWindow` builds on it; nothing here decides what a run does."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSize, Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QApplication, QDockWidget, QLabel, QMainWindow, QMessageBox, QToolBar, QWidget

from mgd_gui import screen, theme
from mgd_gui.icons import icon
from mgd_gui.plots.area import PlotArea
from mgd_gui.run.log_panel import LogPanel
from mgd_gui.run.progress import ProgressWidget
from mgd_gui.run_queue import QueuePanel
from mgd_gui.runs_panel import RunsPanel
from mgd_gui.setup.form import ConfigForm
from mgd_gui.setup.toolbar_widgets import DeviceCombo, PresetCombo

STYLE = """
QLineEdit[invalid="true"], QTableWidget[invalid="true"], QComboBox[invalid="true"], QCheckBox[invalid="true"] {
    border: 1px solid #e5484d; border-radius: 2px; }
QListWidget#sections { font-weight: 500; }
QListWidget#sections::item { padding: 5px 4px; }
"""


class WindowFrame(QMainWindow):
    # -- building ----------------------------------------------------------------------
    def _build_widgets(self) -> None:
        from mgd_gui.setup.data_preview import DataPreview
        from mgd_gui.setup.model_summary import ModelSummary

        self.form = ConfigForm()
        self.form.setMinimumWidth(370)
        self.preview = DataPreview()
        self.form.add_extra("data", self.preview)
        self.teacher_summary = ModelSummary()
        self.student_summary = ModelSummary()
        self.form.add_extra("teacher", self.teacher_summary)
        self.form.add_extra("student", self.student_summary)
        self.plots = PlotArea()
        self.setCentralWidget(self.plots)
        self.log = LogPanel()
        self.runs = RunsPanel(self.runs_root)
        self.runs.selection_changed.connect(self._on_runs_selected)
        self.runs.open_requested.connect(self.reopen_run)
        self.runs.resume_requested.connect(self.resume_run)
        self.runs.export_requested.connect(self.show_export)
        self.runs.compare_requested.connect(self.show_compare)
        self.runs.inspect_requested.connect(self.show_inspect)
        self.runs.duplicate_requested.connect(self.duplicate_run)
        self.runs.try_requested.connect(lambda path: self.show_review(path).tabs.setCurrentIndex(1))
        self.plots.confusion.cell_clicked.connect(self._confusion_clicked)
        self.runs.changed.connect(self._runs_changed)
        self.queue_panel = QueuePanel(self.queue)
        self.queue_panel.start_requested.connect(self.start_queue)
        self.queue_panel.pause_requested.connect(self.pause_queue)
        self.queue_panel.cancel_requested.connect(self.cancel_jobs)
        self.queue_panel.table_requested.connect(self.show_comparison_table)
        self.progress = ProgressWidget()
        self.statusBar().addWidget(self.progress, 1)
        self.device_label = QLabel()
        self.statusBar().addPermanentWidget(self.device_label)
        self.presets = PresetCombo()
        self.presets.preset_chosen.connect(self.load_preset)
        self.devices = DeviceCombo()
        self.devices.device_chosen.connect(self._device_chosen)

    def _action(self, key: str, text: str, slot, shortcuts=(), tip: str = "", icon_name: str | None = None) -> QAction:
        action = QAction(icon(icon_name or key), text, self)
        if shortcuts:
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
        action.setToolTip(f"{tip or text} ({', '.join(QKeySequence(s).toString() for s in shortcuts)})"
                          if shortcuts else (tip or text))
        action.setStatusTip(tip or text)
        action.triggered.connect(slot)
        self.actions_[key] = action
        return action

    def _build_actions(self) -> None:
        self.actions_: dict[str, QAction] = {}
        a = self._action
        a("run", "Run", self.start_run, ["Ctrl+R"], "Train the experiment: teacher, self-analysis, student")
        a("pause", "Pause", self.toggle_pause, ["Ctrl+P"], "Pause the run after the current step, or resume it")
        a("stop", "Stop", self.stop_run, ["Ctrl+.", "Esc"], "Stop the run; its checkpoint is kept for resuming")
        a("open", "Open…", self.open_dialog, [QKeySequence.StandardKey.Open], "Open an experiment YAML file")
        a("save", "Save", self.save, [QKeySequence.StandardKey.Save], "Save the experiment as YAML")
        a("save_as", "Save As…", self.save_as, ["Ctrl+Shift+S"], "Save the experiment under a new name", "save")
        a("export", "Export…", lambda: self.show_export(None), ["Ctrl+E"], "Export a run's student")
        a("quit", "Quit", self.close, [QKeySequence.StandardKey.Quit], "Quit MGD Studio", "stop")
        for act in self.actions_.values():
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)

        bar = QToolBar("Main")
        self.toolbar = bar
        bar.setObjectName("toolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for key in ("run", "pause", "stop"):
            bar.addAction(self.actions_[key])
        pause = bar.widgetForAction(self.actions_["pause"])
        if pause is not None:  # as wide as "Resume" from the start: the toolbar never shifts
            metrics = pause.fontMetrics()
            pause.setMinimumWidth(pause.sizeHint().width() + max(0, metrics.horizontalAdvance("Resume")
                                                                 - metrics.horizontalAdvance("Pause")))
        bar.addSeparator()
        for key in ("open", "save", "export"):
            bar.addAction(self.actions_[key])
        bar.addSeparator()
        bar.addWidget(QLabel(" Preset "))
        bar.addWidget(self.presets)
        bar.addWidget(QLabel("  Device "))
        bar.addWidget(self.devices)
        self.addToolBar(bar)

        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        for key in ("open", "save", "save_as"):
            file_menu.addAction(self.actions_[key])
        file_menu.addSeparator()
        file_menu.addAction(self.actions_["export"])
        file_menu.addSeparator()
        file_menu.addAction(self.actions_["quit"])
        run_menu = menu.addMenu("&Run")
        for key in ("run", "pause", "stop"):
            run_menu.addAction(self.actions_[key])
        self.view_menu = menu.addMenu("&View")
        theme_menu = self.view_menu.addMenu("Theme")
        group = QActionGroup(self)
        self.theme_actions: dict[str, QAction] = {}
        for name in theme.THEMES:
            act = QAction(name.capitalize(), self, checkable=True)
            act.triggered.connect(lambda _=False, n=name: self.set_theme(n))
            group.addAction(act)
            theme_menu.addAction(act)
            self.theme_actions[name] = act
        self.view_menu.addSeparator()
        reset = QAction("Reset layout", self)
        reset.triggered.connect(self.reset_layout)
        self.view_menu.addAction(reset)
        help_menu = menu.addMenu("&Help")
        about = QAction("About MGD Studio", self)
        about.triggered.connect(self.about)
        help_menu.addAction(about)

    def _dock(self, title: str, name: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable |
                         QDockWidget.DockWidgetFeature.DockWidgetFloatable |
                         QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, dock)
        self.view_menu.insertAction(self.view_menu.actions()[0], dock.toggleViewAction())
        return dock

    def _build_docks(self) -> None:
        self.setDockNestingEnabled(True)
        self.experiment_dock = self._dock("Experiment", "experimentDock", self.form, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.runs_dock = self._dock("Runs", "runsDock", self.runs, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.log_dock = self._dock("Log", "logDock", self.log, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.splitDockWidget(self.runs_dock, self.log_dock, Qt.Orientation.Horizontal)
        self.queue_dock = self._dock("Queue", "queueDock", self.queue_panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.log_dock, self.queue_dock)
        self.log_dock.raise_()
        self.resizeDocks([self.experiment_dock], [420], Qt.Orientation.Horizontal)
        self.resizeDocks([self.runs_dock, self.log_dock], [760, 420], Qt.Orientation.Horizontal)
        self.resizeDocks([self.runs_dock], [190], Qt.Orientation.Vertical)
        self._default_state = self.saveState()

    # -- settings ----------------------------------------------------------------------
    def _restore_settings(self) -> None:
        geometry = self.settings.get("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(screen.fitted_size(self, QSize(1280, 800)))  # a smaller screen: no larger than it
        state = self.settings.get("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        self.set_theme(self.settings.get("view/theme", "system", str), save=False)
        self.form.sections.setCurrentRow(self.settings.get("view/section", 0, int))
        self.plots.tabs.setCurrentIndex(self.settings.get("view/plot_tab", 0, int))

    def save_settings(self) -> None:
        s = self.settings
        s.set("window/geometry", self.saveGeometry())
        s.set("window/state", self.saveState())
        s.set("view/section", self.form.sections.currentRow())
        s.set("view/plot_tab", self.plots.tabs.currentIndex())
        s.sync()

    def set_theme(self, name: str, save: bool = True) -> None:
        if name not in theme.THEMES:
            name = "system"
        theme.apply_theme(QApplication.instance(), name)
        self.setStyleSheet("")  # widgets polished under a style sheet keep their old palette otherwise
        self.setStyleSheet(STYLE)
        self.theme_actions[name].setChecked(True)
        self.plots.apply_theme()
        self.form.restyle()
        if save:
            self.settings.set("view/theme", name)

    def reset_layout(self) -> None:
        self.restoreState(self._default_state)
        for dock in (self.experiment_dock, self.runs_dock, self.log_dock, self.queue_dock):
            dock.show()

    # -- questions (tests replace them) ----------------------------------------------------
    def ask_unsaved(self) -> str:
        """"save", "discard" or "cancel": what to do with unsaved edits (tests replace this)."""
        box = QMessageBox(QMessageBox.Icon.Question, "Unsaved changes",
                          f"The experiment {self.document.origin} has changes that are not saved.", parent=self)
        box.setInformativeText("Save them before going on?")
        box.setStandardButtons(QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard |
                               QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        answer = box.exec()
        return {QMessageBox.StandardButton.Save: "save",
                QMessageBox.StandardButton.Discard: "discard"}.get(QMessageBox.StandardButton(answer), "cancel")

    def confirm_close(self) -> bool:
        """Ask whether to stop the running experiment and quit (tests replace this)."""
        answer = QMessageBox.question(
            self, "A run is in progress",
            "Stop the run and quit? The run keeps its last checkpoint and can be resumed later."
            + (" The queue's other runs wait for the next launch." if self.queue_ctl.running else ""),
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def ask_queue_on_launch(self) -> str:
        """"continue" or "later": what to do with runs left in the queue (tests replace this)."""
        box = QMessageBox(QMessageBox.Icon.Question, "Queued runs",
                          f"{len(self.queue.pending())} queued runs are waiting "
                          f"({', '.join(sorted({j.comparison for j in self.queue.pending()}))}).", parent=self)
        box.setInformativeText("Continue the queue now? An interrupted run resumes from its checkpoint.")
        go = box.addButton("Continue now", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Keep it paused", QMessageBox.ButtonRole.RejectRole)
        box.exec()
        return "continue" if box.clickedButton() is go else "later"

    def about(self) -> None:
        QMessageBox.about(self, "About MGD Studio",
                          "<b>MGD Studio</b><br>Knowledge distillation with multi-granularity "
                          "distillation (Shao and Chen, 2021).<br><br>"
                          f"Runs are kept in {self.runs_root}")

