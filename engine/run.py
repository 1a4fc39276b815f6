"""Run an experiment: the engine's public entry point (the CLI and the studio call it)::

    summary = run_experiment(config, run_dir="runs/demo", subscribers=[print], control=RunControl())

Config in, events out, control (pause/resume/stop) from any thread. A run alone is a group of
one of the one driver (:class:`engine.driver.Driver`), which also trains several runs together
(:func:`run_group`) and runs comparisons (:class:`engine.comparison.Comparison`).
:func:`plan_experiment` checks a config and returns what a run would do, without training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from engine.config import ExperimentConfig
from engine.control import RunControl
from engine.driver import Driver, RunSpec
from engine.events import Subscriber
from engine.experiment import SEED_OFFSETS, plan_experiment, prepare_run

__all__ = ["run_experiment", "run_group", "plan_experiment", "prepare_run", "RunControl", "RunSpec", "SEED_OFFSETS"]


def run_experiment(config: ExperimentConfig | None = None, *, run_dir: str | Path | None = None,
                   runs_root: str | Path = "runs", subscribers: Iterable[Subscriber] = (),
                   control: RunControl | None = None, resume: bool = False) -> dict:
    """Run (or resume) an experiment and return its summary.

    Raises :class:`InputError` for bad input (before any training when it can be known then),
    :class:`TrainingError` (or another :class:`MGDError`, such as an export failure) for a
    failure during the run, and returns normally with ``summary["status"] == "stopped"`` when
    ``control.stop()`` ended the run early. Every outcome after the plan is also announced as
    an event (RunFinished or RunFailed). A run refused before it began leaves no folder behind.
    """
    spec = RunSpec(config, run_dir, resume=resume, subscribers=list(subscribers))
    driver = Driver(control=control, runs_root=runs_root, raise_failures=True)
    return driver.run([[spec]])[0]


def run_group(specs: Iterable[RunSpec], *, control: RunControl | None = None, runs_root: str | Path = "runs",
              reuse=None, lockstep: bool = True, on_progress=None) -> list[dict]:
    """Run several runs together (their student stages in lockstep where they share a teacher);
    returns their summaries in order (a failed run's summary says so; nothing is raised for it)."""
    return Driver(control=control, runs_root=runs_root, reuse=reuse, lockstep=lockstep,
                  on_progress=on_progress).run([list(specs)])

