"""What a run will do, decided by the engine before the first training step.

:func:`engine.run.plan_experiment` checks a config against everything it can (data,
models, the distiller's options and feature shapes, checkpoints, folders, seeds) and
returns a :class:`Plan`: the stages in order (each with its epochs, steps, what it trains
and what it keeps frozen, its seed and its checkpoint), the models with their parameter
counts, the distiller with its options, the data's shapes and the export. The run
announces it as its first event (``PlanReady``); ``mgd-train CONFIG --plan`` prints it;
the studio draws its progress from it with :class:`PlanProgress`.

This module imports no torch: plans travel as plain dicts (``Plan.to_dict``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable

#: how much one unit of work of each kind costs, in training steps (for the progress bar
#: and the ETA before any of that kind has been timed): an evaluation batch is a forward
#: pass only, an export format is a trace and a check
UNIT_COST = {"train": 1.0, "load": 1.0, "evaluate": 0.35, "export": 15.0}

STAGE_TITLES = {"teacher": "Teacher", "heads": "Self-analysis", "pretrain": "Pre-training", "student": "Student",
                "online": "Online peers", "evaluate": "Evaluation", "export": "Export", "transfer": "Fine-tuning"}


@dataclass
class StagePlan:
    name: str  # teacher, heads, pretrain, student, online, evaluate, export, transfer
    action: str  # train, load, evaluate, export
    units: int  # steps (training), batches (evaluation), files (export)
    epochs: int = 0
    steps_per_epoch: int = 0
    trains: list[str] = field(default_factory=list)  # modules the optimiser updates
    frozen: list[str] = field(default_factory=list)  # modules used but not updated
    seed: int | None = None  # seed of the stage's initialisation and random draws
    checkpoint: str | None = None  # the stage's final checkpoint, relative to the run folder
    schedule: dict | None = None  # lr, momentum, weight_decay, milestones, gamma
    done: bool = False  # finished in an earlier session of this run (resume)
    note: str = ""

    @property
    def title(self) -> str:
        return STAGE_TITLES.get(self.name, self.name)

    @property
    def cost(self) -> float:
        return self.units * UNIT_COST.get(self.action, 1.0)


@dataclass
class Plan:
    name: str
    run_dir: str | None
    device: str
    precision: str
    channels_last: bool
    data: dict  # dataset, classes, train_size, test_size, input_shape, batch_size, eval_batch_size, streamed
    models: dict  # role -> {"arch", "params", "feature_dim"}
    distiller: dict  # name, mode, weights, temperature, options, heads
    stages: list[StagePlan]
    export: dict  # enabled, dir, formats
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was adapted (a classifier replaced, weights found)
    estimate: dict | None = None  # seconds per stage and "total" on this machine (engine.estimate), when asked

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        data = dict(data)
        data["stages"] = [StagePlan(**s) for s in data.get("stages", [])]
        return cls(**data)

    def stage(self, name: str) -> StagePlan | None:
        return next((s for s in self.stages if s.name == name), None)

    def describe(self) -> str:
        """The plan as text (``mgd-train CONFIG --plan``)."""
        d = self.data
        lines = [f"experiment {self.name!r} on {self.device}, {self.precision}"
                 + (", channels-last" if self.channels_last else ""),
                 f"data: {d['dataset']}, {d['classes']} classes, {d['train_size']} train / {d['test_size']} test "
                 f"images of shape {tuple(d['input_shape'])}, batch {d['batch_size']}"
                 + (" (streamed from disk)" if d.get("streamed") else "")]
        for role, m in self.models.items():
            lines.append(f"{role}: {m['arch']}, {m['params']:,} parameters, features {m['feature_dim']}")
        dist = self.distiller
        if dist:
            opts = ", ".join(f"{k}={v}" for k, v in (dist.get("options") or {}).items()) or "no options"
            w = dist.get("weights") or {}
            lines.append(f"distiller: {dist['name']} ({opts}); MGD {dist['mode']}; weights "
                         f"ce {w.get('w_ce')}, div {w.get('w_div')}, kd {w.get('w_kd')}; T {dist.get('temperature')}")
            if dist.get("heads"):
                lines.append("granularity heads: " + ", ".join(f"(d={h['dim']}, T={h['temperature']:g})"
                                                             for h in dist["heads"]))
        lines.append("stages:")
        for i, s in enumerate(self.stages, 1):
            what = {"train": f"{s.epochs} epochs x {s.steps_per_epoch} steps",
                    "load": "load", "evaluate": f"{s.units} batches",
                    "export": f"{s.units - 1} format(s) and the model card"}[s.action]
            parts = [f"  {i}. {s.name:<9} {what}"]
            if s.trains:
                parts.append("trains " + ", ".join(s.trains))
            if s.frozen:
                parts.append("frozen " + ", ".join(s.frozen))
            if s.schedule:
                sch = s.schedule
                parts.append(f"lr {sch['lr']:g}" + (f" x{sch['gamma']:g} at {sch['milestones']}" if sch['milestones']
                                                   else ""))
            if s.seed is not None:
                parts.append(f"seed {s.seed}")
            if s.checkpoint:
                parts.append(f"-> {s.checkpoint}")
            if s.done:
                parts.append("(done)")
            if s.note:
                parts.append(s.note)
            lines.append("; ".join(parts))
        ex = self.export
        if ex.get("enabled"):
            lines.append(f"export: {', '.join(ex['formats'])} to {ex['dir']}")
        for note in self.notes:
            lines.append(f"note: {note}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        if self.estimate:
            lines.append(describe_estimate(self.estimate))
        return "\n".join(lines)


def describe_estimate(estimate: dict[str, float]) -> str:
    """One line of a plan's expected time per stage (``engine.estimate.estimate_stages``)."""
    parts = [f"{name} {format_duration(sec)}" for name, sec in estimate.items() if name != "total"]
    return f"expected run time on this machine: about {format_duration(estimate['total'])} ({', '.join(parts)})"


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Progress:
    """What one run's progress and a group's share: the clock of active time (paused time left
    out), the fraction done and the ETA from the rate measured since the first step seen.
    Subclasses give ``total_cost`` and ``done_cost`` in training-step equivalents."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.start_cost: float | None = None
        self.active_seconds = 0.0
        self._since: float | None = None
        self.paused = False

    def total_cost(self) -> float:  # pragma: no cover - given by the subclasses
        raise NotImplementedError

    def done_cost(self) -> float:  # pragma: no cover - given by the subclasses
        raise NotImplementedError

    def _tick(self) -> None:
        now = self.clock()
        if self._since is not None:
            self.active_seconds += now - self._since
        self._since = now

    def _pause(self) -> None:
        self._tick()
        self._since, self.paused = None, True

    def _resume(self) -> None:
        self._since, self.paused = self.clock(), False

    def fraction(self) -> float:
        total = self.total_cost()
        return min(1.0, self.done_cost() / total) if total else 0.0

    def eta(self) -> float | None:
        if self.start_cost is None:
            return None
        done_now = self.done_cost() - self.start_cost
        if done_now <= 0 or self.active_seconds <= 0:
            return None
        return max(0.0, (self.total_cost() - self.done_cost()) / (done_now / self.active_seconds))


class PlanProgress(_Progress):
    """Progress over a whole run, from its plan and its events alone (no Qt, no torch).

    Feed it every event (objects or their ``to_dict()`` form) with :meth:`update`. The
    fraction weighs each stage by its cost in training-step equivalents (:data:`UNIT_COST`);
    the ETA divides the remaining cost by the rate measured in this session, with paused
    time left out.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        super().__init__(clock)
        self.plan: Plan | None = None
        self.stage = ""
        self.epoch = 0
        self.epochs = 0
        self.step = 0
        self.steps = 0
        self.units_done = 0.0  # of the current stage
        self.finished: set[str] = set()

    # -- events -------------------------------------------------------------------
    def update(self, event: Any) -> None:
        data = event if isinstance(event, dict) else {"event": event.type, **dataclasses.asdict(event)}
        kind = data.get("event")
        if kind == "PlanReady":
            self.plan = Plan.from_dict(data["plan"])
            self.finished = {s.name for s in self.plan.stages if s.done}
        elif kind == "StageStarted":
            self._tick()
            self.stage = data["stage"]
            self.epochs, self.steps = int(data.get("epochs", 0)), int(data.get("steps_per_epoch", 0))
            self.epoch, self.step = int(data.get("start_epoch", 0)) + 1, 0
            self.units_done = float(data.get("start_epoch", 0)) * self.steps
            self._mark_start()
        elif kind == "StepLosses":
            self._tick()
            self.stage, self.epoch, self.step = data["stage"], int(data["epoch"]), int(data["step"])
            self.steps = int(data.get("steps") or self.steps)
            self.units_done = (self.epoch - 1) * self.steps + self.step
            self._mark_start()
        elif kind == "EpochEnd":
            self._tick()
            self.stage, self.epoch = data["stage"], int(data["epoch"])
            self.step = self.steps
            self.units_done = self.epoch * self.steps
        elif kind == "StageProgress":
            self._tick()
            self.stage, self.units_done = data["stage"], float(data["done"])
            self.step, self.steps = int(data["done"]), int(data["total"])
            self._mark_start()
        elif kind == "StageFinished":
            self._tick()
            self.finished.add(data["stage"])
            if data["stage"] == self.stage:
                self.units_done = self._stage_units(self.stage)
        elif kind == "Paused":
            self._pause()
        elif kind == "Resumed":
            self._resume()

    # -- figures ------------------------------------------------------------------
    def _stage_units(self, name: str) -> float:
        s = self.plan.stage(name) if self.plan else None
        return float(s.units) if s else 0.0

    def total_cost(self) -> float:
        return sum(s.cost for s in self.plan.stages) if self.plan else 0.0

    def done_cost(self) -> float:
        if self.plan is None:
            return 0.0
        done = 0.0
        for s in self.plan.stages:
            if s.name in self.finished:
                done += s.cost
            elif s.name == self.stage and s.units:
                done += s.cost * min(1.0, self.units_done / s.units)
        return done

    def _mark_start(self) -> None:
        if self.start_cost is None and self.plan is not None:
            self.start_cost = self.done_cost()

    def text(self, eta: bool = True) -> str:
        if not self.stage:
            return "Planning…" if self.plan is None else "Starting…"
        s = self.plan.stage(self.stage) if self.plan else None
        parts = [STAGE_TITLES.get(self.stage, self.stage)]
        if self.plan is not None:
            names = [st.name for st in self.plan.stages]
            if self.stage in names:
                parts[0] += f" ({names.index(self.stage) + 1}/{len(names)})"
        if s is not None and s.action == "train":
            parts.append(f"epoch {self.epoch}/{s.epochs}")
            if self.steps:
                parts.append(f"step {self.step}/{self.steps}")
        elif self.steps:
            parts.append(f"{self.step}/{self.steps}")
        left = self.eta() if eta else None
        if left is not None:
            parts.append(f"ETA {format_duration(left)}")
        return " · ".join(parts)


#: stages that the later runs of a group load rather than train (the first run trains them)
SHARED_STAGES = ("teacher", "heads")


class GroupProgress(_Progress):
    """Progress over runs that train together (the studio's queue runs a comparison's runs of
    one pair and seed in lockstep): one :class:`PlanProgress` per run, fed the events tagged
    with its ``job``, and one clock for the group.

    A run that has not announced its plan yet (the runs of a group begin one after another)
    counts as the mean of the announced plans without their teacher and heads stages, which
    the later runs load. A run that ended (finished, stopped or failed) counts as done.
    The ETA divides the remaining cost by the group's measured rate, paused time left out.
    """

    def __init__(self, jobs: list[str], clock: Callable[[], float] = time.monotonic):
        super().__init__(clock)
        self.runs = {job: PlanProgress(clock) for job in jobs}
        self.ended: set[str] = set()
        self.latest: str | None = None  # the run whose event came last (its position is shown)

    def update(self, event: dict) -> None:
        job = event.get("job")
        run = self.runs.get(job)
        if run is None:
            return
        kind = event.get("event")
        if kind == "Paused":
            self._pause()
        elif kind == "Resumed":
            self._resume()
        elif not self.paused:
            self._tick()
        run.update(event)
        if kind in ("RunFinished", "RunFailed"):
            self.ended.add(job)
        elif kind in ("StageStarted", "StepLosses", "StageProgress", "EpochEnd"):
            self.latest = job
            if self.start_cost is None:
                self.start_cost = self.done_cost()

    def _unplanned_cost(self) -> float:
        known = [sum(s.cost for s in r.plan.stages if s.name not in SHARED_STAGES)
                 for r in self.runs.values() if r.plan is not None]
        return sum(known) / len(known) if known else 0.0

    def total_cost(self) -> float:
        guess = self._unplanned_cost()
        return sum(r.total_cost() if r.plan is not None else guess for r in self.runs.values())

    def done_cost(self) -> float:
        guess = self._unplanned_cost()
        done = 0.0
        for job, r in self.runs.items():
            if job in self.ended:
                done += r.total_cost() if r.plan is not None else guess
            else:
                done += r.done_cost()
        return done

    def text(self) -> str:
        n = len(self.runs)
        running = n - len(self.ended)
        head = f"{n} runs together" + (f" ({len(self.ended)} ended)" if self.ended else "")
        parts = [head]
        if self.latest is not None and running:
            parts.append(self.runs[self.latest].text(eta=False))
        elif not self.ended:
            parts.append("Planning…")
        left = self.eta()
        if left is not None:
            parts.append(f"ETA {format_duration(left)}")
        return " · ".join(parts)
