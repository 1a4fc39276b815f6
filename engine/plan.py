"""What a run will do, decided by the engine before the first training step.

:func:`engine.run.plan_experiment` checks a config against everything it can (data,
models, the distiller's options and feature shapes, checkpoints, folders, seeds) and
returns a :class:`Plan`: the stages in order (each with its epochs, steps, what it trains
and what it keeps frozen, its seed and its checkpoint), the models with their parameter
counts, the distiller with its options, the data's shapes and the export. The run
announces it as its first event (``PlanReady``); ``mgd-train CONFIG --plan`` prints it;
the driver's progress (:class:`engine.progress.WorkProgress`) weighs its stages by their cost.

This module imports no torch: plans travel as plain dicts (``Plan.to_dict``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

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
