"""The main window: a composition of views around the window model.

The studio's state lives in plain Python objects (:mod:`mgd_gui.model`), testable without a
window: the experiment being edited (:class:`Document`), the run state machine
(:class:`RunState`), the queue and its controller on the engine's comparison
(:class:`QueueController`) and the runs shown (:class:`RunsModel`). The window builds the views
(the form, the plots, the Runs, Log and Queue panels, the status bar), turns clicks into calls on
the model and the engine runner (:class:`EngineRunner`: config in, events out, pause and stop),
and shows what they say. It owns no training logic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QTimer
from PySide6.QtWidgets import QFileDialog, QMessageBox

from engine.config import ExperimentConfig, load_config, save_config
from engine.describe import describe_event, finished_text
from engine.errors import MGDError
from engine.runs import duplicate_config, read_metrics, run_info
from mgd_gui import paths
from mgd_gui.background import Lookups
from mgd_gui.dialogs import Dialogs
from mgd_gui.window_frame import STYLE, WindowFrame
from mgd_gui.icons import icon
from mgd_gui.model.document import APP_TITLE, Document
from mgd_gui.model.queue import RunQueue
from mgd_gui.model.queue_controller import QueueController
from mgd_gui.model.run_state import RunState
from mgd_gui.model.runs import RunsModel
from mgd_gui.run.error_dialog import error_dialog
from mgd_gui.run.progress import progress_text
from mgd_gui.run.record import RunRecord
from mgd_gui.run.worker import EngineRunner
from mgd_gui.runs_panel import distinct_labels
from mgd_gui.settings import Settings


class MainWindow(WindowFrame):
    def __init__(self, config_path: str | Path | None = None, *, engine=None, group_engine=None, probe: bool = True,
                 settings: Settings | None = None):
        super().__init__()
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(icon("app"))
        self.setObjectName("MainWindow")
        self.settings = settings or Settings()
        self.runs_root = paths.runs_root()
        self.runs_root.mkdir(parents=True, exist_ok=True)
        # the window model
        self.document = Document()
        self.run_state = RunState()
        self.run_state.listeners.append(lambda *_: self._update_actions())
        self.records = RunsModel()
        self.queue = RunQueue.load(paths.queue_file())
        self.queue_ctl = QueueController(self.queue, lambda text, level="info": self.log.add(text, level))
        self.processes = 1  # > 1: "all GPUs", a run of that many processes, one per GPU
        self.last_failure: dict | None = None
        self.error_box: QMessageBox | None = None
        self._closing = False
        self._start_when_checked = False

        self.runner = EngineRunner(engine, self, group_engine=group_engine)
        self.runner.event.connect(self._on_event)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)
        self.runner.group_finished.connect(self._on_group_finished)

        self._build_widgets()
        self._build_actions()
        self._build_docks()
        self.dialogs = Dialogs(self, self.runs_root)
        self.queue_ctl.listeners.append(self._queue_changed)
        self.lookups = Lookups(self, form=self.form, preview=self.preview,
                               summaries=(self.teacher_summary, self.student_summary), devices=self.devices,
                               log=self.log, runs_root=self.runs_root, processes=lambda: self.processes)
        self.form.changed.connect(self._on_config_changed)
        self.form.validity_changed.connect(lambda *_: self._update_actions())
        self.setStyleSheet(STYLE)

        self.load_path(Path(config_path) if config_path else paths.demo_preset(), initial=True)
        self._restore_settings()
        self._update_actions()
        if probe:
            QTimer.singleShot(200, self.lookups.start)
        if self.queue.pending():
            QTimer.singleShot(0, self._queue_on_launch)

    # -- the model, as the views and tests read it -------------------------------------------
    @property
    def state(self) -> str:
        return self.run_state.state

    @property
    def live(self) -> RunRecord | None:
        return self.records.live

    def live_list(self) -> list[RunRecord]:
        return self.records.live_list()

    @property
    def current_file(self) -> Path | None:
        return self.document.file

    @property
    def export_dialog(self):
        return self.dialogs.export

    @property
    def compare_dialog(self):
        return self.dialogs.compare

    @property
    def inspect_dialog(self):
        return self.dialogs.inspect

    @property
    def review_dialog(self):
        return self.dialogs.review

    # -- files -------------------------------------------------------------------------
    def load_path(self, path: Path, initial: bool = False) -> bool:
        try:
            cfg = load_config(path)
        except MGDError as exc:
            if initial:
                self.log.add(f"Could not load {path}: {exc}", "error")
                self.document.untitled(ExperimentConfig())
                self.form.set_config(ExperimentConfig())
            else:
                QMessageBox.warning(self, "Cannot open the experiment", str(exc))
            return False
        is_preset = path.parent.resolve() == (paths.resources_dir() / "presets").resolve()
        self.document.loaded(path, cfg, is_preset=is_preset)
        self.form.set_config(cfg)
        self.presets.show_preset(self.document.preset)
        self.log.add(f"Loaded {'preset ' + path.stem if is_preset else path}")
        return True

    def load_preset(self, path: str) -> None:
        if not self.keep_or_drop_edits():
            self.presets.show_preset(self.document.shown_preset(self.form.config()))
            return
        self.load_path(Path(path))

    def is_dirty(self) -> bool:
        """True when the form holds edits that are not in the file, preset or run it came from."""
        return self.document.is_dirty(self.form.config(), bool(self.form.parse_errors()))

    def _update_title(self) -> None:
        self.setWindowTitle(self.document.title())
        self.setWindowModified(self.is_dirty())

    def keep_or_drop_edits(self) -> bool:
        """Before the form is replaced: ask about unsaved edits. True to go on (saved or dropped)."""
        if not self.is_dirty():
            return True
        answer = self.ask_unsaved()
        if answer == "save":
            self.save()
            return not self.is_dirty()  # False when the save was cancelled or failed
        return answer == "discard"

    def open_dialog(self) -> None:
        if not self.keep_or_drop_edits():
            return
        start = self.settings.get("files/last_dir", str(Path.home()), str)
        path, _ = QFileDialog.getOpenFileName(self, "Open an experiment", start, "Experiments (*.yaml *.yml)")
        if path:
            self.settings.set("files/last_dir", str(Path(path).parent))
            self.load_path(Path(path))

    def save(self) -> None:
        if self.document.file is None:
            self.save_as()
        else:
            self.save_to(self.document.file)

    def save_as(self) -> None:
        start = self.settings.get("files/last_dir", str(Path.home()), str)
        name = f"{self.form.config().name or 'experiment'}.yaml"
        path, _ = QFileDialog.getSaveFileName(self, "Save the experiment", str(Path(start) / name),
                                              "Experiments (*.yaml *.yml)")
        if path:
            self.settings.set("files/last_dir", str(Path(path).parent))
            self.save_to(Path(path))

    def save_to(self, path: Path) -> None:
        if self.form.errors():
            self.log.add("Saving a set-up with problems: fields with unreadable text keep their last valid value",
                         "warning")
        try:
            save_config(self.form.config(), path)
        except OSError as exc:
            QMessageBox.warning(self, "Cannot save the experiment", f"{path}: {exc}")
            return
        self.document.saved(path, self.form.config())
        self.presets.show_preset(None)
        self._update_title()
        self.lookups.update_comparison_error()  # its command names the saved file
        self.log.add(f"Saved {path}")

    # -- the form ----------------------------------------------------------------------
    def _on_config_changed(self, cfg: ExperimentConfig) -> None:
        self.presets.show_preset(self.document.shown_preset(cfg))
        if cfg.device != "cuda":
            self.processes = 1
        self.devices.show_device(cfg.device, self.processes)
        teacher_sched = self.form.group("teacher.schedule")
        loaded = bool(cfg.teacher.checkpoint)
        teacher_sched.setEnabled(not loaded)
        teacher_sched.setTitle("Schedule (not used: the teacher is loaded)" if loaded else "Schedule")
        self.lookups.config_changed(cfg)
        self._update_actions()
        self._update_title()

    def _device_chosen(self, value: str) -> None:
        """The toolbar's device: a device of the config, or all GPUs (device cuda, one process each)."""
        from mgd_gui.setup.toolbar_widgets import ALL_GPUS

        processes = self.devices.gpu_count() if value == ALL_GPUS else 1
        device = "cuda" if value == ALL_GPUS else value
        changed = processes != self.processes
        self.processes = processes
        if self.form.config().device != device:
            self.form.set_field("device", device)
        elif changed:  # the same config, run differently: check it again for that many processes
            self._on_config_changed(self.form.config())

    # -- run control -------------------------------------------------------------------
    def _update_actions(self) -> None:
        can = self.run_state.actions(pausable=self.runner.pausable, engine_active=self.runner.active)
        act = self.actions_
        act["run"].setEnabled(can.run and self.form.is_valid())
        act["pause"].setEnabled(can.pause)
        act["pause"].setToolTip("Pause the run after the current step, or resume it (Ctrl+P)" if self.runner.pausable
                                else "A run on several GPUs cannot pause; Stop keeps its checkpoint for resuming")
        act["pause"].setText(can.pause_label)
        act["pause"].setIcon(icon("resume" if can.pause_label == "Resume" else "pause"))
        act["stop"].setEnabled(can.stop)
        self.runs.set_busy(can.busy)
        tip = ("Queue the comparison's runs" if self.form.config().comparison.baselines else "Train the experiment") \
            if self.form.is_valid() else "Fix the marked fields first"
        act["run"].setStatusTip(tip)

    def start_run(self) -> None:
        if self.runner.active or not self.run_state.idle or not self.form.is_valid():
            return
        if self.lookups.pending():
            # the engine is still checking the latest edit: start once it accepts the set-up
            if not self._start_when_checked:
                self._start_when_checked = True
                self.progress.set_text("Checking the set-up before the run…")
                self.lookups.when_checked(self._checked_then_start)
            return
        cfg = self.form.config()
        if cfg.comparison.baselines:
            self.queue_comparison(cfg)
            return
        self._begin(RunRecord(label=cfg.name))
        self.log.add(f"Starting run {cfg.name!r}: teacher {cfg.teacher.arch}, student {cfg.student.arch}, "
                     f"{cfg.distiller.name} + MGD {cfg.granularity.mode}"
                     + (f", on {self.processes} GPUs (one process each, torchrun)" if self.processes > 1 else ""))
        if self.processes > 1:
            self.runner.start_processes(cfg, self.processes, runs_root=self.runs_root)
        else:
            self.runner.start(cfg, runs_root=self.runs_root)
        self._update_actions()  # Pause: available to this kind of run or not

    def _checked_then_start(self, problem) -> None:
        self._start_when_checked = False
        if problem is None:
            self.start_run()
            return
        field, reason = problem
        self.progress.set_text("Not started: fix the marked problem first")
        self.log.add(f"Run not started: {field + ': ' if field else ''}{reason}", "warning")

    def resume_run(self, path: Path) -> None:
        if self.runner.active or not self.run_state.idle:
            QMessageBox.information(self, "A run is in progress", "Wait for the current run to end, or stop it.")
            return
        info = run_info(path)
        if not info.resumable:
            QMessageBox.information(self, "Nothing to resume", f"The run {info.label} is {info.status}.")
            return
        record = RunRecord.from_events(read_metrics(path), path, info.label)
        record.status = "running"
        self._begin(record)
        processes = self.processes if self.processes > 1 and info.config.get("device") == "cuda" else 1
        self.log.add(f"Resuming {info.label} ({path})"
                     + (f" on {processes} GPUs (one process each)" if processes > 1 else ""))
        if processes > 1:
            self.runner.start_processes(None, processes, run_dir=path, runs_root=self.runs_root, resume=True)
        else:
            self.runner.start(None, run_dir=path, runs_root=self.runs_root, resume=True)
        self._update_actions()

    def _begin(self, record: RunRecord | None = None, group: dict | None = None) -> None:
        if group is not None:
            self.records.begin_group(group)
        else:
            self.records.begin(record)
        self.last_failure = None
        self.log.clear_story()  # the log follows the runs being trained
        self.progress.begin()  # the engine's Progress events fill it in
        self.plots.set_records(self.records.live_list())
        self.run_state.start()

    def toggle_pause(self) -> None:
        done = self.run_state.toggle_pause()
        if done == "pause":
            self.runner.pause()
            self.progress.set_text("Pausing after the current step…")
        elif done == "resume":
            self.runner.resume()

    def stop_run(self) -> None:
        if self.run_state.stop():
            self.runner.stop()
            self.progress.set_text("Stopping: writing the checkpoint…")
            self.log.add("Stop requested; the run ends after the current step and keeps its checkpoint")

    # -- engine events -----------------------------------------------------------------
    def _show_active(self) -> None:
        """Mark the runs being trained (running or paused) in the runs panel."""
        self.runs.set_active_runs(self.records.active_dirs("paused" if self.state == "paused" else "running"))

    def _on_event(self, e: dict) -> None:
        tag = e.get("job")  # a queued group's events carry their job's id
        record = self.records.record_of(tag)
        if record is None:
            return
        kind = e.get("event")
        if kind == "Progress":  # the engine's figures over all the runs it drives, shown as they are
            if self.state == "paused":
                self.progress.show_progress(e, prefix="Paused")
            else:  # while a pause or a stop is on its way its own line stays (the bar still moves)
                self.progress.show_progress(e, text=self.state == "running")
            return
        record.feed(e)
        if kind not in ("RunFinished", "RunFailed"):  # those are told when the run has ended, below
            line = describe_event(e)
            if line is not None:
                self.log.add(f"{record.label}: {line[1]}" if tag is not None else line[1], line[0])
        if kind == "RunStarted":
            record.run_dir = Path(e["run_dir"])
            self.device_label.setText(e.get("device", ""))
            self._show_active()
            self.runs.select([r.run_dir for r in self.live_list() if r.run_dir is not None])
        elif kind == "Paused":
            self.run_state.paused()
            self._show_active()
            self.queue_ctl.set_paused(True)
            self.progress.set_text(progress_text(self.progress.latest, "Paused"))
        elif kind == "Resumed":
            if self.run_state.resumed():
                self.progress.set_text(progress_text(self.progress.latest))
            self._show_active()
            self.queue_ctl.set_paused(False)
        elif kind == "StageFinished":
            self.runs.refresh()
        elif kind in ("RunFinished", "RunFailed") and tag is not None:
            self._group_job_ended(tag, record, e)

    def _group_job_ended(self, job_id: str, record: RunRecord, e: dict) -> None:
        """One run of a queued group ended (the others may go on)."""
        if e["event"] == "RunFinished":
            summary = e.get("summary") or {}
            stopped = bool(e.get("stopped"))
            record.summary = summary
            self.log.add(f"{record.label}: {finished_text(summary, stopped)}")
            self.queue_ctl.job_ended(job_id, dict(summary, status="stopped" if stopped else "finished"),
                                     closing=self._closing)
        else:
            info = {k: e.get(k) for k in ("message", "kind", "stage", "details", "run_dir")}
            record.failure = info
            self.log.add(f"{record.label}: failed ({info['kind']}, {info['stage']} stage): {info['message']}", "error")
            self.queue_ctl.job_ended(job_id, {"status": "failed", "failed_in": info["stage"], "error": info["message"]},
                                     closing=self._closing)
        self._show_active()

    def _on_finished(self, summary: dict) -> None:
        stopped = summary.get("status") == "stopped"
        if self.live:
            self.live.status = "stopped" if stopped else "finished"
            self.live.summary = summary
        text = finished_text(summary, stopped)
        self.progress.end(text, complete=not stopped)
        self.log.add(text)
        if not stopped and self.live is not None and self.live.run_dir is not None:
            self.queue_ctl.finished_outside(self.live.run_dir, summary)
        self._run_ended()

    def _on_group_finished(self, results: list) -> None:
        """A queued group ended: every job has told its end, except those never begun (a stop)."""
        group = self.records.group
        self.queue_ctl.group_ended(results, closing=self._closing)
        statuses = [(s or {}).get("status") for _, s in results]
        if len(group) == 1 and len(results) == 1 and statuses[0] in ("finished", "stopped"):
            text = finished_text(results[0][1], statuses[0] == "stopped")
        else:
            parts = [f"{statuses.count(k)} {k}" for k in ("finished", "stopped", "failed") if statuses.count(k)]
            text = (f"{len(group)} runs together ended: " if len(group) > 1 else "Run ended: ") \
                + (", ".join(parts) or "none begun")
        self.progress.end(text, complete=bool(statuses) and all(k == "finished" for k in statuses))
        if len(group) > 1 or not results:  # a single run's end is already in the log
            self.log.add(text)
        self._run_ended()

    def _on_failed(self, info: dict) -> None:
        self.last_failure = info
        self.records.fail_unended(info)
        self.progress.end(f"Failed in the {info.get('stage')} stage: {info.get('message')}", complete=False)
        self.log.add(f"Run failed ({info.get('kind')}, {info.get('stage')} stage): {info.get('message')}", "error")
        queued = bool(self.records.group)
        self.queue_ctl.group_failed(info, closing=self._closing)
        if not queued and info.get("kind") == "input" and not info.get("run_dir"):
            # refused before its first step: the problem is in the set-up, shown at its field
            self.lookups.mark_failure(info.get("field"), str(info.get("message") or ""))
        self._run_ended()
        if not self._closing and not queued:
            self.error_box = error_dialog(self, info)
            self.error_box.open()

    def _run_ended(self) -> None:
        self.run_state.ended()
        self.runs.set_active(None)
        self.records.ended()
        self.plots.refresh(force=True)
        if self._closing:
            QTimer.singleShot(0, self.close)
        elif self.queue.state == "running":
            QTimer.singleShot(0, self._next_job)

    # -- the queue ---------------------------------------------------------------------
    def queue_comparison(self, cfg: ExperimentConfig) -> list:
        """Queue every run of the experiment's comparison and start the queue."""
        try:
            jobs, _ = self.queue_ctl.add_comparison(cfg, self.runs_root)
        except (OSError, MGDError) as exc:
            QMessageBox.warning(self, "Cannot queue the comparison", str(exc))
            return []
        self.runs.refresh()
        self.queue_dock.show()
        self.queue_dock.raise_()
        self.start_queue()
        return jobs

    def start_queue(self) -> None:
        if self.queue_ctl.start():
            self._next_job()

    def pause_queue(self) -> None:
        self.queue_ctl.pause()

    def cancel_jobs(self, job_ids: list) -> None:
        if self.queue_ctl.cancel(job_ids) and self.runner.active:
            self.stop_run()  # the group stops; its other runs resume from their checkpoints next

    def _queue_on_launch(self) -> None:
        if not self.queue.pending():
            return
        if self.ask_queue_on_launch() == "continue":
            self.log.add(f"Continuing the queue: {len(self.queue.pending())} runs waiting")
            self.start_queue()
        else:
            self.queue_ctl.keep_paused()

    def _next_job(self) -> None:
        """Train the queue's next group (:meth:`QueueController.next_launch`) when the window is free."""
        if self.runner.active or not self.run_state.idle or self._closing:
            return
        launch = self.queue_ctl.next_launch()
        if launch is None:
            return
        self.log.add(launch.text)
        self._begin(group=launch.records)
        self.runner.start_group(launch.specs, reuse=launch.reuse)
        self._update_actions()

    def _queue_changed(self, comparison_dir: str | None) -> None:
        self.queue_panel.paused_run = self.queue_ctl.paused_run
        self.queue_panel.refresh()
        if comparison_dir is not None and self.dialogs.compare_visible(comparison_dir):
            self.show_comparison_table(comparison_dir)  # the engine rewrote its table as a run ended

    def show_comparison_table(self, folder: str) -> None:
        """The comparison table of a queued comparison: its run folders so far."""
        from engine.compare import comparison_folders

        found = [p for p in comparison_folders(folder) if (p / "config.yaml").is_file()]
        if not found:
            self.log.add("The comparison has no run yet: its table fills in as its runs finish")
            return
        self.dialogs.show_compare(found, folder)

    # -- runs --------------------------------------------------------------------------
    def _info(self, path: Path):
        return self.runs.infos.get(Path(path)) or run_info(path)

    def _runs_changed(self, message: str) -> None:
        self.log.add(message[:1].upper() + message[1:])
        self.records.forget_missing()
        self._on_runs_selected(self.runs.selected_paths())  # a renamed run's new name in the plots and the log

    def duplicate_run(self, path: Path) -> None:
        """The run's set-up in the form as a new experiment (unsaved), ready to change and run."""
        if not self.keep_or_drop_edits():
            return
        try:
            cfg = duplicate_config(path)
        except MGDError as exc:
            QMessageBox.warning(self, "Cannot duplicate the run", str(exc))
            return
        self.document.duplicated(cfg)
        self.form.set_config(cfg)
        self.presets.show_preset(None)
        self.log.add(f"Duplicated {self._info(path).label} as a new experiment {cfg.name!r}: change it and press Run")

    def record_for(self, path: Path) -> RunRecord:
        return self.records.record_for(path, training=not self.run_state.idle, label=lambda p: self._info(p).label,
                                       status=lambda p: self.runs.status_text(self._info(p)))

    def _on_runs_selected(self, selected: list) -> None:
        if selected:
            records = [self.record_for(p) for p in selected]
            for record, label in zip(records, distinct_labels([self._info(p) for p in selected])):
                if self.run_state.idle or not self.records.is_live(record):
                    record.label = label
        else:
            records = self.live_list()
        self.plots.set_records(records)
        self._show_story(selected)

    def _show_story(self, selected: list) -> None:
        """The log ends with the story of the one run selected (not while it trains: its lines come live)."""
        if len(selected) != 1 or (not self.run_state.idle and self.records.is_live(self.record_for(selected[0]))):
            self.log.clear_story()
            return
        path = Path(selected[0])
        label = self._info(path).label
        if self.log.story_of == f"{path}|{label}":
            return  # told already (under its name now)
        lines = []
        for event in read_metrics(path):  # the run's whole story, told as it was told live
            line = describe_event(event)
            if line is not None:
                lines.append((line[0], line[1], event.get("time") or 0.0))
        self.log.show_story(f"{path}|{label}", f"log of {label} ({path})", lines)

    def reopen_run(self, path: Path) -> None:
        path = Path(path)
        self.runs.select([path])
        self._show_story([path])
        if not self.keep_or_drop_edits():
            return
        try:
            cfg = load_config(path / "config.yaml")
        except MGDError as exc:
            self.log.add(f"Could not read the run's set-up: {exc}", "warning")
            return
        self.document.from_run(self._info(path).label, cfg)
        self.form.set_config(cfg)
        self.presets.show_preset(None)

    def show_export(self, path: Path | None) -> None:
        if path is None:
            chosen = self.runs.selected_paths()
            path = chosen[0] if len(chosen) == 1 else (self.live.run_dir if self.live else None)
        dialog = self.dialogs.show_export(path)
        if dialog is not None:
            dialog.exported.connect(lambda files: self.log.add(f"Exported {len(files)} files"))

    def show_compare(self, selected: list) -> None:
        """The comparison table of the selected runs (a window of its own; one at a time)."""
        self.dialogs.show_compare(selected)

    def show_inspect(self, path: Path) -> None:
        """The Inspect view of a finished run (a window of its own; one at a time)."""
        self.dialogs.show_inspect(path)

    def show_review(self, path: Path):
        """The image-level review of a run (a window of its own, one at a time)."""
        return self.dialogs.show_review(path)

    def _confusion_clicked(self, record, model: str, true: int, predicted: int, evaluation: dict) -> None:
        if record.run_dir is None:
            return
        if not self.run_state.idle and self.records.is_live(record):
            self.log.add("The images of a cell can be reviewed once the run has finished", "warning")
            return
        confusion = evaluation.get("confusion") or []
        count = int(confusion[true][predicted]) if true < len(confusion) and predicted < len(confusion[true]) \
            else None
        self.show_review(record.run_dir).show_cell(true, predicted, model, evaluation.get("classes") or
                                                   record.classes, count, evaluation)

    def event(self, event) -> bool:  # noqa: D401 - Qt override
        # A status tip (the mouse over a toolbar button or a menu item) would replace the status
        # bar's progress, stage and ETA; the same text is in the tooltip, so tips are dropped.
        if event.type() == QEvent.Type.StatusTip:
            return True
        return super().event(event)

    # -- closing -----------------------------------------------------------------------
    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt name
        if not self._closing and not self.keep_or_drop_edits():
            event.ignore()
            return
        if self.runner.active:
            if not self._closing:
                if not self.confirm_close():
                    event.ignore()
                    return
                self._closing = True
                self.runner.stop()
                self.run_state.stop()
                self.progress.set_text("Stopping the run, then closing…")
            event.ignore()  # closes for real when the run has ended
            return
        self.save_settings()
        self.lookups.close()
        self.dialogs.close_all()
        event.accept()
