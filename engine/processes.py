"""A run of several processes, from a caller in this process: ``mgd-train CONFIG --nproc N``
and the studio's "all N GPUs" both call :func:`run_processes`.

It checks the experiment here (bad input is refused before anything starts, as
:func:`engine.run.run_experiment` refuses it), fixes the run folder, starts the N workers
(:func:`engine.launch.run_workers`: ``mgd-train`` in each, ranks of one process group), hands
each event that process 0 writes to the run folder's ``metrics.jsonl`` to the subscribers as it
is written (the same event objects :func:`engine.run.run_experiment` gives its subscribers), stops
the workers when ``control.stop()`` is called (SIGTERM: they stop at the same step and keep the
checkpoint), and returns the run's summary. A failure is raised as a typed error whose message,
kind and stage come from structured records, never from the workers' text: the failure record
of the process that failed first (:func:`engine.launch.note_failure`), or the launcher's own
words for one that died without a record (a killed process, named by its rank). Once the run
has begun, that failure is also the run's last event in ``metrics.jsonl`` (a RunFailed; the
subscribers get it too) and is recorded in its summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from engine.config import ExperimentConfig, save_config
from engine.control import RunControl
from engine.errors import InputError, ProcessFailed, ProcessRefused
from engine.events import EVENT_TYPES, EventBus, Subscriber, event_from_dict
from engine.launch import run_workers
from engine.runfolder import METRICS_FILE, read_summary, record_launch_failure

#: where the engine package is: the workers import it from there, whatever their working folder
ENGINE_ROOT = Path(__file__).resolve().parents[1]


class MetricsTail:
    """Hands the events appended to a run folder's ``metrics.jsonl`` to subscribers, each once,
    whole lines only (a line being written is taken on the next call)."""

    def __init__(self, path: Path, subscribers: Iterable[Subscriber], offset: int = 0):
        self.path, self.offset, self.pending = path, offset, b""
        self.bus = EventBus(list(subscribers))

    def __call__(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:  # not written yet
            return
        self.offset += len(chunk)
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for line in lines:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("event") in EVENT_TYPES:
                try:
                    event = event_from_dict(data)
                except TypeError:  # a field this engine does not know
                    continue
                self.bus.emit(event)


def run_processes(config: ExperimentConfig | None, processes: int, *, run_dir: str | Path | None = None,
                  runs_root: str | Path = "runs", resume: bool = False, subscribers: Iterable[Subscriber] = (),
                  control: RunControl | None = None, quiet: bool = True) -> dict:
    """Run (or resume, ``resume`` with ``run_dir``) an experiment as ``processes`` processes and
    return its summary (status ``"finished"``, or ``"stopped"`` after ``control.stop()``).

    Raises :class:`InputError` for bad input found here (before any process starts; a
    :class:`engine.errors.ConfigError` names the field), :class:`ProcessRefused` (an InputError)
    when a process refused its input, :class:`ProcessFailed` (a TrainingError) when one failed:
    their ``kind``, ``stage``, ``details`` and ``rank`` say how. ``quiet``: the workers print only
    warnings and errors (their standard error passes through this process's)."""
    from engine.experiment import plan_experiment, prepare_run

    subscribers = list(subscribers)
    if processes < 1:
        raise InputError(f"processes: {processes}; give at least 1")
    if config is not None and not resume and config.comparison.baselines:
        raise InputError("--nproc: comparisons run in one process (their students train in lockstep); "
                         "drop --nproc or comparison.baselines")
    cfg, folder = prepare_run(None if resume else config, run_dir, runs_root, resume=resume)  # refuses a folder in use
    plan_experiment(cfg, folder, processes=processes)  # checks what several processes need
    metrics = folder / METRICS_FILE
    offset = metrics.stat().st_size if resume and metrics.exists() else 0  # a resumed run's past is known
    tail = MetricsTail(metrics, subscribers, offset)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ENGINE_ROOT), os.environ.get("PYTHONPATH"))
                                                       if p)}
    with tempfile.TemporaryDirectory(prefix="mgd-processes-") as tmp:
        command = [sys.executable, "-m", "engine.cli"]
        if resume:
            command += ["--resume", str(folder)]
        else:
            save_config(config, Path(tmp) / "experiment.yaml")
            command += [str(Path(tmp) / "experiment.yaml"), "--out", str(folder)]
        command += ["-q"] if quiet else []
        # the workers tell through the run folder and their failure records; the result is the caller's
        code, failure = run_workers(command, processes, env, control=control, every=tail, stdout=subprocess.DEVNULL)
    if failure is not None:
        if not failure.get("stage"):  # a process killed: the stage the others stopped in
            summary = read_summary(folder)
            failure["stage"] = summary.get("stopped_in") or summary.get("failed_in") or ""
        record_launch_failure(folder, failure)  # the run's last event, when it began
        tail()
        message, kind = failure["message"], failure.get("kind") or "error"
        where = {"stage": failure.get("stage") or "", "details": failure.get("details") or "",
                 "rank": failure.get("rank"), "run_dir": str(folder)}
        if code == 2 or kind == "input":
            raise ProcessRefused(message, field=failure.get("field"), **{**where, "stage": where["stage"] or "setup"})
        raise ProcessFailed(message, kind, **where)
    summary = read_summary(folder)
    if summary.get("status") not in ("finished", "stopped"):
        raise ProcessFailed(f"the {processes} processes ended without ending the run (its summary says "
                            f"{summary.get('status') or 'nothing'})", run_dir=str(folder))
    return summary


__all__ = ["run_processes", "MetricsTail"]
