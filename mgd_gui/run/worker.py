"""The engine in the background, its events delivered to the GUI thread as Qt signals.

A run is a task of the studio's one background primitive (:class:`mgd_gui.tasks.Tasks`, a lane
of its own): the task imports the engine's heavy parts (torch) in its thread, turns each engine
event into a dict and streams it (``event``); pause and stop go through the engine's
:class:`RunControl`. Exactly one of ``finished``, ``group_finished`` or ``failed`` ends every
run, after all of its events.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal

from engine.control import RunControl
from mgd_gui.tasks import Tasks

Engine = Callable[..., dict]
WORKER_NICE = 0  # nice value of the engine thread (0 normal, 19 lowest): 0 keeps its fair share
NICE_ENV = "MGD_STUDIO_WORKER_NICE"  # overrides WORKER_NICE (0 keeps the normal priority)
WORKER_BATCH = True  # SCHED_BATCH for the engine thread
BATCH_ENV = "MGD_STUDIO_WORKER_BATCH"


def _real_engine(*args: Any, **kwargs: Any) -> dict:
    from engine.run import run_experiment  # torch loads here, in the worker thread

    return run_experiment(*args, **kwargs)


def _real_group_engine(*args: Any, **kwargs: Any) -> list:
    from engine.run import run_group  # torch loads here, in the worker thread

    return run_group(*args, **kwargs)


def as_run_spec(job: Any):
    """A :class:`engine.driver.RunSpec`, as it is or from a ``(config or None, run_dir, resume, tag)``
    tuple (the one place such tuples become specs)."""
    from engine.driver import RunSpec

    if isinstance(job, RunSpec):
        return job
    config, run_dir, resume, tag = job
    return RunSpec(config, run_dir, resume=bool(resume), tag=tag)


class EngineRunner(QObject):
    event = Signal(object)  # an event as a dict (a group's events carry their job's tag as "job")
    finished = Signal(object)  # the summary (status "finished" or "stopped")
    failed = Signal(object)  # {"message", "kind", "stage", "details", "run_dir"}
    group_finished = Signal(object)  # a group's [(tag, summary)] of the runs begun, in order

    def __init__(self, engine: Engine | None = None, parent: QObject | None = None,
                 group_engine: Callable[..., list] | None = None):
        super().__init__(parent)
        self.engine = engine or _real_engine
        self.group_engine = group_engine or _real_group_engine
        self.control: RunControl | None = None
        self.tasks = Tasks(self, name="mgd-engine")
        self.tasks.message.connect(lambda _kind, _token, data: self.event.emit(data))
        self.tasks.done.connect(self._done)
        self.tasks.failed.connect(self._failed)
        self._ended_signal: Any = None
        self._failure: dict | None = None
        self.run_dir: Path | None = None
        self.pausable = True  # False for a run of several processes (stop only)

    @property
    def active(self) -> bool:
        """True from ``start`` until the run has ended (its last signal is on its way)."""
        return self.tasks.busy("run")

    def start(self, config=None, *, run_dir: str | Path | None = None, runs_root: str | Path,
              resume: bool = False) -> None:
        def body() -> dict:
            summary = self.engine(config, run_dir=run_dir, runs_root=str(runs_root), subscribers=[self._forward],
                                  control=self.control, resume=resume)
            return summary if isinstance(summary, dict) else {}

        self._start(body, self.finished, run_dir=run_dir, pausable=True)

    def start_group(self, specs: list, *, reuse: Any = None, lockstep: bool = True) -> None:
        """Run the runs of ``specs`` together (:class:`engine.driver.RunSpec` s, or
        ``(config or None, run_dir, resume, tag)`` tuples) through the engine's driver
        (:func:`engine.run.run_group`: their students in lockstep, ``reuse`` the comparison's
        teacher and heads reuse). Each run's events, the engine's ``Progress`` events included,
        come tagged with its spec's ``tag`` as ``"job"``; each run's end is its own RunFinished or
        RunFailed event; ``group_finished`` ends the group with ``[(tag, summary)]`` of the runs
        begun, in order."""
        specs = [as_run_spec(job) for job in specs]
        tagged = [dataclasses.replace(spec, subscribers=list(spec.subscribers)
                                      + [lambda event, tag=spec.tag: self._forward(event, tag)]) for spec in specs]

        def body() -> list:
            summaries = self.group_engine(tagged, control=self.control, reuse=reuse, lockstep=lockstep)
            return list(zip([spec.tag for spec in specs], summaries))

        self._start(body, self.group_finished, run_dir=None, pausable=True)

    def start_processes(self, config=None, processes: int = 2, *, run_dir: str | Path | None = None,
                        runs_root: str | Path, resume: bool = False) -> None:
        """Run the experiment in ``processes`` processes, one per GPU, through the engine's one
        launch (:func:`engine.processes.run_processes`, as ``mgd-train --nproc``): its events are
        read back from the run folder's ``metrics.jsonl`` as the first process writes them, and how
        it ended comes as records (the summary, the processes' failure records), never as text.
        Stop sends SIGTERM: every process stops at the same step and keeps its checkpoint. Pause
        is not available."""
        self._start(lambda: self._follow_processes(config, int(processes), self.run_dir, Path(runs_root), resume),
                    self.finished, run_dir=run_dir, pausable=False)

    def _start(self, body: Callable[[], Any], ended: Any, *, run_dir: str | Path | None, pausable: bool) -> None:
        """Run ``body`` as the engine lane's task with a fresh control; its result goes to the
        ``ended`` signal, an exception to ``failed``."""
        if self.active:
            raise RuntimeError("a run is already in progress")
        self.control = RunControl()
        self._failure = None
        self._ended_signal = ended
        self.pausable = pausable
        self.run_dir = Path(run_dir) if run_dir else None

        def task(state) -> Any:
            self._state = state
            lower_thread_priority()
            return body()

        self.tasks.submit("run", task, state=True)

    def pause(self) -> None:
        if self.control:
            self.control.pause()

    def resume(self) -> None:
        if self.control:
            self.control.resume()

    def stop(self) -> None:
        if self.control:
            self.control.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run's task ends (for shutdown); True if it did."""
        return self.tasks.wait(timeout)

    # -- the engine's thread ------------------------------------------------------------
    def _forward(self, event: Any, tag: str | None = None) -> None:
        data = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        if tag is not None:  # a job of a group: its failure and its folder are its own, not the group's
            data["job"] = tag
        elif data.get("event") == "RunFailed":
            self._failure = {k: data.get(k) for k in ("message", "kind", "stage", "details", "run_dir")}
        elif data.get("event") == "RunStarted" and data.get("run_dir"):
            self.run_dir = Path(data["run_dir"])
        self._state.emit(data)

    # -- the GUI thread: how the run ended ------------------------------------------------
    def _done(self, _kind: str, _token: int, result: Any) -> None:
        self._ended_signal.emit(result)

    def _failed(self, _kind: str, _token: int, exc: BaseException) -> None:
        failure = self._failure or {}  # the run's own RunFailed event, when it sent one
        own = _is_process_failure(exc)  # a run of several processes: its failure record
        self.failed.emit({
            "message": failure.get("message") or (str(exc) if own else f"{type(exc).__name__}: {exc}"),
            "kind": failure.get("kind") or (exc.kind if own else "input" if _is_input_error(exc) else "error"),
            "stage": failure.get("stage") or (own and exc.stage) or "setup",
            "details": failure.get("details") or (own and exc.details) or getattr(exc, "details", ""),
            "run_dir": failure.get("run_dir") or (own and exc.run_dir) or (str(self.run_dir) if self.run_dir else ""),
            "field": getattr(exc, "field", None),  # the config field at fault, when the engine names one
            "time": time.time(),
        })

    def _follow_processes(self, config: Any, processes: int, run_dir: Path | None, runs_root: Path,
                          resume: bool) -> dict:
        from engine.processes import run_processes  # the engine's launch: events, stop and failure as records

        return run_processes(config, processes, run_dir=run_dir, runs_root=runs_root, resume=resume,
                             subscribers=[self._forward], control=self.control)


def lower_thread_priority(nice: int | None = None, batch: bool | None = None) -> None:
    """Make the calling thread (and the compute threads it starts, which inherit it) yield
    the CPU to the GUI thread, so that on a machine with few cores the window stays
    responsive while the run uses every core.

    Linux only, where a thread's nice value and scheduling policy are its own (elsewhere
    they would slow the whole process). ``SCHED_BATCH`` keeps the run's fair share against
    other programs but stops it preempting the GUI thread; a positive ``nice`` also lowers
    that share. ``MGD_STUDIO_WORKER_NICE`` and ``MGD_STUDIO_WORKER_BATCH`` (0/1) override
    the defaults.
    """
    if nice is None:
        try:
            nice = int(os.environ.get(NICE_ENV, WORKER_NICE))
        except ValueError:
            nice = WORKER_NICE
    if batch is None:
        batch = os.environ.get(BATCH_ENV, "1" if WORKER_BATCH else "0") not in ("0", "", "false", "no")
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    if batch and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH"):
        try:
            os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
        except OSError:
            pass
    if nice > 0 and hasattr(os, "setpriority"):
        try:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, max(current, nice)))
        except OSError:  # not allowed here: run at normal priority
            pass


def _is_input_error(exc: BaseException) -> bool:
    from engine.errors import InputError

    return isinstance(exc, InputError)


def _is_process_failure(exc: BaseException) -> bool:
    from engine.errors import ProcessFailed, ProcessRefused

    return isinstance(exc, (ProcessFailed, ProcessRefused))
