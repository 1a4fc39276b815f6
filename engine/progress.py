"""Clocks and progress of the driver: each run's own time, and the ETA of all the work at hand.

:class:`Stopwatch` measures a run's (or a stage's) own work: it runs only while the driver
does that run's work (a run waiting for another run's teacher is not timed), stops while
training is paused, and carries the seconds of earlier sessions (resume).

:class:`WorkProgress` is the one progress model of the engine, for one run, a group of runs
training together and a whole comparison alike. The driver declares the work as items (one
per stage of each run; one for a student stage that several runs train together), each with
its amount of work in units (steps, batches, files) and a kind (which stage of which pair and
baseline). As events arrive, the active time since the previous event goes to the item the
event belongs to, so each kind gets a measured rate (seconds per unit). The ETA prices the
work left at the measured rate of its kind; a kind not timed yet is priced from the estimate
of :mod:`engine.estimate` (a few timed passes), scaled by how far measured work has been from
its estimate so far. Work the driver has not opened yet (the later groups of a comparison) is
forecast from the opened runs of the same shape.

This module imports no torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from engine.plan import STAGE_TITLES, UNIT_COST, format_duration

#: the order of the stages, for a group's stage counter ("Student (4/6)")
STAGE_ORDER = ("teacher", "heads", "pretrain", "student", "online", "evaluate", "export", "transfer")


class Stopwatch:
    """Seconds of work, over sessions: ``before`` (earlier sessions) plus the time it has run."""

    def __init__(self, before: float = 0.0, clock: Callable[[], float] = time.perf_counter):
        self.before = float(before)
        self.clock = clock
        self._since: float | None = None
        self._acc = 0.0

    @property
    def running(self) -> bool:
        return self._since is not None

    def start(self) -> None:
        if self._since is None:
            self._since = self.clock()

    def stop(self) -> None:
        if self._since is not None:
            self._acc += self.clock() - self._since
            self._since = None

    @property
    def session(self) -> float:
        """Seconds in this session."""
        return self._acc + (self.clock() - self._since if self._since is not None else 0.0)

    @property
    def seconds(self) -> float:
        """Seconds over every session."""
        return self.before + self.session


class timing:
    """``with timing(*watches):`` runs the stopwatches for the block (those already running stay so)."""

    def __init__(self, *watches: Stopwatch):
        self.watches = [w for w in watches if w is not None]
        self.started: list[Stopwatch] = []

    def __enter__(self):
        self.started = [w for w in self.watches if not w.running]
        for w in self.started:
            w.start()
        return self

    def __exit__(self, *exc) -> None:
        for w in self.started:
            w.stop()


@dataclass
class WorkItem:
    key: Hashable  # (run id, stage) or ("group", group id, stage)
    stage: str
    kind: Hashable  # what costs the same per unit (stage, action and the models involved)
    units: float
    estimate: float | None = None  # expected seconds (engine.estimate), when known
    done: float = 0.0  # units done (earlier sessions included)
    seen_from: float | None = None  # units done when this session first saw the item
    seconds: float = 0.0  # active seconds spent on it in this session
    finished: bool = False
    forecast: bool = False  # declared from a similar run before its own run was opened
    runs: tuple = ()  # the runs whose work it is
    position: dict = field(default_factory=dict)  # epoch, epochs, step, steps of the latest event

    @property
    def measured_units(self) -> float:
        return max(0.0, self.done - (self.seen_from if self.seen_from is not None else self.done))


def unit_prior(action: str) -> float:
    return UNIT_COST.get(action, 1.0)


class WorkProgress:
    """The fraction done and the ETA over every item of work of a driver (see the module docstring).

    Feed it the runs' events with :meth:`update(run_id, event)`; :meth:`snapshot` gives the figures
    for a ``Progress`` event."""

    #: measured units below which a kind's own rate is not trusted yet
    MIN_UNITS = 3

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.items: dict[Hashable, WorkItem] = {}
        self.stage_of: dict[tuple[Any, str], Hashable] = {}  # (run id, stage) -> item key
        self._last: float | None = None
        self.paused = False
        self.current: WorkItem | None = None
        self.overhead = 0.0  # active seconds outside any item (planning, opening run folders)
        self.total_runs = 0
        self.ended: set = set()
        self.active_runs: set = set()

    # -- declaring work --------------------------------------------------------------
    def declare(self, item: WorkItem) -> WorkItem:
        old = self.items.get(item.key)
        if old is not None and not old.forecast:
            return old
        self.items[item.key] = item
        for run in item.runs:
            self.stage_of[(run, item.stage)] = item.key
        return item

    def drop(self, key: Hashable) -> None:
        item = self.items.pop(key, None)
        if item is not None:
            for run in item.runs:
                if self.stage_of.get((run, item.stage)) == key:
                    del self.stage_of[(run, item.stage)]

    def merge(self, key: Hashable, stage: str, runs: list, kind: Hashable) -> WorkItem:
        """One item for a stage that ``runs`` train together (the student stage in lockstep),
        replacing their own items of that stage."""
        parts = list({id(p): p for p in (self.items.get(self.stage_of[(r, stage)]) for r in runs
                                         if (r, stage) in self.stage_of) if p is not None}.values())
        units = max((p.units for p in parts), default=0.0)
        done = max((p.done for p in parts), default=0.0)
        estimates = [p.estimate for p in parts if p.estimate is not None]
        for p in parts:
            self.drop(p.key)
        item = WorkItem(key=key, stage=stage, kind=kind, units=units, done=done,
                        estimate=sum(estimates) if estimates else None, runs=tuple(runs))
        return self.declare(item)

    # -- events ----------------------------------------------------------------------
    def _tick(self, item: WorkItem | None) -> None:
        now = self.clock()
        if self._last is not None and not self.paused:
            dt = now - self._last
            if item is not None:
                item.seconds += dt
            else:
                self.overhead += dt
        self._last = now

    def update(self, run: Any, event: Any) -> None:
        data = event if isinstance(event, dict) else {"event": event.type, **event.__dict__}
        kind = data.get("event")
        if kind == "Paused":
            self._tick(self.current)
            self.paused = True
            return
        if kind == "Resumed":
            self.paused = False
            self._last = self.clock()
            return
        if kind in ("RunFinished", "RunFailed"):
            self._tick(None)
            self.ended.add(run)
            self.active_runs.discard(run)
            for item in self.items.values():  # what the run will not do any more
                if run in item.runs and len(item.runs) == 1 and not item.finished:
                    item.finished = True
            return
        stage = data.get("stage")
        key = self.stage_of.get((run, stage)) if isinstance(stage, str) else None
        item = self.items.get(key) if key is not None else None
        if item is None and stage is None:  # an event of the stage in progress (a noise curve, a log line)
            cur = self.current
            item = cur if cur is not None and not cur.finished and run in cur.runs else None
            self._tick(item)
            return
        self._tick(item)
        if item is None:
            return
        self.current = item
        self.active_runs.add(run)
        if kind == "StageStarted":
            steps = int(data.get("steps_per_epoch") or 0)
            start_step = int(data.get("start_step") or 0)  # resumed mid-epoch: those steps were done before
            if steps and _action(item) == "train":
                item.position.update(epochs=int(data.get("epochs") or 0), steps=steps,
                                     epoch=int(data.get("start_epoch") or 0) + 1, step=start_step)
            elif steps:  # evaluation batches, export files: a count, no epochs
                item.position.update(steps=steps, step=0)
            if steps:  # the units of earlier sessions are done, not this session's measured work
                item.done = max(item.done, float(data.get("start_epoch") or 0) * steps + start_step)
        elif kind == "StepLosses":
            steps = int(data.get("steps") or item.position.get("steps") or 1)
            item.position.update(epoch=int(data["epoch"]), step=int(data["step"]), steps=steps)
            item.done = max(item.done, (int(data["epoch"]) - 1) * steps + int(data["step"]))
        elif kind == "EpochEnd":
            steps = int(item.position.get("steps") or 0)
            item.position.update(epoch=int(data["epoch"]), step=steps, epochs=int(data.get("epochs") or 0))
            if steps:
                item.done = max(item.done, int(data["epoch"]) * steps)
        elif kind == "StageProgress":
            item.position.update(step=int(data["done"]), steps=int(data["total"]))
            item.done = max(item.done, float(data["done"]))
        elif kind == "StageFinished":
            item.done = item.units
            item.finished = True
        if item.seen_from is None and kind != "StageFinished":
            item.seen_from = item.done  # this session's measured units count from here

    # -- figures ---------------------------------------------------------------------
    def _rates(self) -> tuple[dict, float]:
        """Measured seconds per unit for each kind, and the ratio of measured to estimated time."""
        secs: dict = {}
        units: dict = {}
        measured = estimated = 0.0
        for item in self.items.values():
            n = item.measured_units
            if n <= 0 or item.seconds <= 0:
                continue
            secs[item.kind] = secs.get(item.kind, 0.0) + item.seconds
            units[item.kind] = units.get(item.kind, 0.0) + n
            if item.estimate is not None and item.units:
                measured += item.seconds
                estimated += item.estimate * n / item.units
        rates = {k: secs[k] / units[k] for k in secs if units[k] >= self.MIN_UNITS or secs[k] > 1.0}
        return rates, (measured / estimated if estimated > 0 else 1.0)

    def _fallback_rate(self, item: WorkItem, rates: dict) -> float | None:
        """Seconds per unit of a kind not measured yet: from its estimate, or the measured training rate."""
        prior = [i for i in self.items.values() if i.kind in rates]
        if not prior:
            return None
        # the measured rate of the most similar work: per training-step equivalent
        per_cost = sum(rates[i.kind] * i.measured_units for i in prior) / \
            max(1e-9, sum(unit_prior(_action(i)) * i.measured_units for i in prior))
        return per_cost * unit_prior(_action(item))

    def remaining_seconds(self) -> float | None:
        rates, correction = self._rates()
        if not rates:
            return None
        left = 0.0
        for item in self.items.values():
            if item.finished:
                continue
            todo = max(0.0, item.units - item.done)
            if not todo:
                continue
            if item.kind in rates:
                left += todo * rates[item.kind]
            elif item.estimate is not None and item.units:
                left += item.estimate * todo / item.units * correction
            else:
                rate = self._fallback_rate(item, rates)
                left += todo * rate if rate is not None else 0.0
        opened = max(1, len(self.ended | self.active_runs))
        unopened = max(0, self.total_runs - opened)
        return left + self.overhead / opened * unopened

    def _cost(self, item: WorkItem) -> float:
        return item.estimate if item.estimate is not None else item.units * unit_prior(_action(item)) * 0.01

    def fraction(self) -> float:
        total = sum(self._cost(i) for i in self.items.values())
        if not total:
            return 0.0
        done = sum(self._cost(i) * (1.0 if i.finished else min(1.0, i.done / i.units) if i.units else 0.0)
                   for i in self.items.values())
        return min(1.0, done / total)

    def group(self, runs) -> set:
        """The runs of the group that ``runs`` belong to: every run that shares an item of work with
        them, directly or through another (a group's shared student stage is one item over all its
        runs, declared as the group opens)."""
        group, grew = set(runs), True
        while grew:
            grew = False
            for item in self.items.values():
                if len(item.runs) > 1 and not group.isdisjoint(item.runs) and not group.issuperset(item.runs):
                    group.update(item.runs)
                    grew = True
        return group

    def _together(self) -> tuple[set, int]:
        """(the runs of the current item's group, how many of them have not ended): the group's own
        figures, whichever of its runs reported last."""
        if self.current is None:
            return set(self.active_runs), len(self.active_runs)
        group = self.group(self.current.runs)
        return group, len(group - self.ended)

    def text(self) -> str:
        """``[N runs together · ]Stage (k/n) · epoch e/E · step s/S``: the stage counter is over the
        stages of the whole group (a run of the group without a teacher has fewer of its own)."""
        item = self.current
        parts = []
        group, running = self._together()
        if running > 1:
            parts.append(f"{running} runs together")
        if self.total_runs > 1:
            parts.append(f"run {min(self.total_runs, len(self.ended) + 1)}/{self.total_runs}"
                         if running <= 1 else f"{len(self.ended)}/{self.total_runs} runs done")
        if item is not None:
            stages = [s for s in STAGE_ORDER
                      if any((r, s) in self.stage_of for r in group) or s == item.stage]
            title = STAGE_TITLES.get(item.stage, item.stage)
            parts.append(f"{title} ({stages.index(item.stage) + 1}/{len(stages)})" if item.stage in stages else title)
            pos = item.position
            if pos.get("epochs"):
                parts.append(f"epoch {pos.get('epoch', 0)}/{pos['epochs']}")
            if pos.get("steps"):
                parts.append(f"step {pos.get('step', 0)}/{pos['steps']}" if pos.get("epochs")
                             else f"{pos.get('step', 0)}/{pos['steps']}")
        return " · ".join(parts) if parts else "Starting…"

    def snapshot(self) -> dict[str, Any]:
        eta = self.remaining_seconds()
        return {"fraction": round(self.fraction(), 5), "eta": None if eta is None else round(eta, 1),
                "stage": self.current.stage if self.current is not None else "", "text": self.text(),
                "runs": max(1, self._together()[1]), "done_runs": len(self.ended),
                "total_runs": max(1, self.total_runs)}


def _action(item: WorkItem) -> str:
    kind = item.kind
    return kind[1] if isinstance(kind, tuple) and len(kind) > 1 and isinstance(kind[1], str) else "train"


def describe(snapshot: dict[str, Any]) -> str:
    """The one-line text of a Progress event's figures (the CLI and the studio show it)."""
    text = snapshot.get("text") or ""
    eta = snapshot.get("eta")
    return text + (f" · ETA {format_duration(eta)}" if eta is not None else "")


__all__ = ["Stopwatch", "timing", "WorkItem", "WorkProgress", "describe", "STAGE_ORDER"]
