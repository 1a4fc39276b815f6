"""The one driver of the engine: one run, a group of runs training together, a comparison.

A run alone is a group of one. :class:`Driver` takes groups of :class:`RunSpec` s (a run to
begin or resume, with what job of a comparison it is) and, for each group:

1. opens the run folders one after another (:class:`engine.experiment.OpenRun`), each planned
   before it begins; a run refused there fails alone. Before a run opens, ``reuse`` (the
   comparison's :class:`engine.comparison.TeacherReuse`) points it at the teacher and heads an
   earlier run trained, and after its first stages it records what it trained itself;
2. runs each run's stages before the student stage, on its own;
3. trains the student stages of the runs that can share a teacher pass (same batches, same
   frozen teacher and heads, same position: :func:`engine.lockstep.group_runs`) together
   through the one batch loop (:func:`engine.trainer.fit_sessions`), one teacher pass per
   batch; a group of one goes through the same loop;
4. runs the remaining stages of each run on its own, and records how each run ended
   (finished, stopped, failed; :meth:`OpenRun.outcome`).

Each run's clock (:attr:`ExperimentRun.clock`) runs only while the driver does that run's
work: waiting for another run of the group is not its time. Every stage's seconds are the wall
time that run's stage took (in lockstep, the group's time for the stage it shared). The
driver's :class:`engine.progress.WorkProgress` measures every kind of work and sends
``Progress`` events (fraction, ETA, stage) over everything it drives, the later groups of a
comparison included. When a run of a comparison ends, however it was started, the
comparison's table is rebuilt from its run folders (:func:`engine.compare.rebuild_table`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from engine.config import ExperimentConfig, load_config
from engine.control import RunControl
from engine.errors import InputError, MGDError
from engine.events import EventBus, Progress, RunFailed, Subscriber
from engine.experiment import OpenRun
from engine.jobs import Job
from engine.lockstep import group_runs, student_memory_mib
from engine.progress import WorkItem, WorkProgress, timing
from engine.runfolder import CONFIG_FILE, checkpoint_path

#: seconds between two Progress events (they also follow every epoch's end and every stage's)
PROGRESS_EVERY = 2.0


@dataclass
class RunSpec:
    """One run for the driver: a new run (``config``) or one to resume (``resume``, its folder)."""

    config: ExperimentConfig | None
    run_dir: str | Path | None = None
    resume: bool = False
    job: Job | None = None  # what job of a comparison it is (recorded in the run folder)
    comparison_dir: str | Path | None = None
    subscribers: list[Subscriber] = field(default_factory=list)
    tag: Any = None  # the caller's name for it (the studio's queue job id)
    announce: str = ""  # a line for its subscribers when it begins ("comparison run 3/12: ...")

    def experiment(self) -> ExperimentConfig | None:
        """The run's config (read from its folder when resuming), or None when it cannot be read."""
        if self.config is not None:
            return self.config
        try:
            return load_config(Path(self.run_dir) / CONFIG_FILE)
        except (OSError, MGDError):
            return None


def _shape(cfg: ExperimentConfig | None) -> tuple:
    """What makes two runs' work cost the same: the pair, the baseline and the MGD mode."""
    if cfg is None:
        return ("?",)
    return (cfg.teacher.arch, cfg.student.arch, cfg.distiller.name, cfg.granularity.mode,
            bool(cfg.teacher.checkpoint), bool(cfg.granularity.checkpoint))


class Driver:
    """Runs groups of :class:`RunSpec` s; see the module docstring.

    ``reuse``: an object with ``apply(cfg) -> cfg`` and ``remember(cfg, run_dir)`` (the
    comparison's teacher and heads reuse), or None. ``lockstep``: train the student stages of a
    group together (else each run alone, in turn). ``on_progress``: called with every
    ``Progress`` event besides the runs' own subscribers. ``estimate``: price work not timed yet
    from a few timed passes (:mod:`engine.estimate`)."""

    def __init__(self, *, control: RunControl | None = None, runs_root: str | Path = "runs", reuse=None,
                 lockstep: bool = True, on_progress: Callable[[Progress], None] | None = None,
                 estimate: bool = True, clock: Callable[[], float] = time.monotonic, raise_failures: bool = False):
        self.control = control or RunControl()
        self.raise_failures = raise_failures  # a run alone (run_experiment): its failure is raised
        self.failure: BaseException | None = None
        self.runs_root = runs_root
        self.reuse = reuse
        self.lockstep = lockstep
        self.on_progress = on_progress
        self.estimate = estimate
        self.progress = WorkProgress(clock)
        self.clock = clock
        self._last_progress = -1e9
        self._templates: dict[tuple, list] = {}
        self._opened_groups: set[int] = set()
        self._group_estimates: dict = {}  # group item -> {run id: its student stage's estimate}
        self._bus_of: dict = {}  # run id -> its bus (Progress events go to the run whose event moved it)

    # ============================================================================ running
    def run(self, groups: Iterable[Iterable[RunSpec]]) -> list[dict]:
        """Run every group in order; returns the summaries of the runs begun (and of those refused
        before they began), in order. After a stop request no further run begins."""
        groups = [list(g) for g in groups]
        self.groups = groups
        self.progress.total_runs = sum(len(g) for g in groups)
        self._ids = {id(spec): (gi, si) for gi, g in enumerate(groups) for si, spec in enumerate(g)}
        self._shapes = {id(spec): _shape(spec.experiment()) for g in groups for spec in g}
        out: list[dict] = []
        for gi, group in enumerate(groups):
            if self.control.stop_requested:
                break
            out += self._run_group(gi, group)
        if self.failure is not None:
            raise self.failure
        return out

    def _run_group(self, gi: int, specs: list[RunSpec]) -> list[dict]:
        self._opened_groups.add(gi)
        opened: list[tuple[int, RunSpec, OpenRun]] = []
        summaries: dict[int, dict] = {}
        refused: list[int] = []
        try:
            for i, spec in enumerate(specs):
                if self.control.stop_requested:
                    break  # the runs not opened yet are left as they are (no folder, no summary)
                rid = self._ids[id(spec)]
                if spec.announce:
                    EventBus(list(spec.subscribers)).log(spec.announce)
                try:
                    o = self._open(rid, spec)
                except Exception as exc:  # noqa: BLE001 - refused before it began: this run alone fails
                    if self.raise_failures:
                        raise
                    summaries[i] = _refused(spec, exc)
                    refused.append(i)
                    self.progress.update(rid, {"event": "RunFailed"})
                    continue
                opened.append((i, spec, o))
                self._bus_of[rid] = o.bus
                run = o.run
                self._declare(rid, spec, run, len(specs))
                for stage in run.stages:  # the stages before the student's, each run on its own
                    if stage.name == "student":
                        break
                    if self._guard(o, lambda st=stage: run.run_stage(st), summaries, i):
                        break
                if self.reuse is not None and i not in summaries:
                    self.reuse.remember(run.cfg, run.run_dir)
            ready = {o.run: (i, spec, o) for i, spec, o in opened if i not in summaries and _student_pending(o.run)}
            parts = group_runs(list(ready)) if self.lockstep else [[run] for run in ready]
            for runs in parts:
                self._train_students(gi, runs, ready, summaries)
            for i, spec, o in opened:  # the rest of every run, each on its own
                if i in summaries:
                    continue
                run = o.run
                remaining = [s for s in run.stages if s.name not in run.summary["stages"]]

                def rest(run=run, remaining=remaining):
                    for stage in remaining:
                        run.run_stage(stage)
                    return run.finish()
                summaries[i] = self._outcome(o, rest)
        finally:
            for _, spec, o in opened:
                o.close()
        return [summaries[i] for i in sorted([i for i, _, _ in opened] + refused)]

    def _open(self, rid, spec: RunSpec) -> OpenRun:
        cfg = spec.config
        if cfg is not None and not spec.resume and self.reuse is not None:
            cfg = self.reuse.apply(cfg)
        o = OpenRun(cfg, run_dir=spec.run_dir, runs_root=self.runs_root, subscribers=list(spec.subscribers),
                    control=self.control, resume=spec.resume, job=spec.job, comparison_dir=spec.comparison_dir)
        # the last subscriber: the Progress events it sends reach every subscriber after the event itself
        o.bus.subscribe(lambda event, rid=rid: self._feed(rid, event))
        return o

    def _train_students(self, gi: int, runs: list, ready: dict, summaries: dict) -> None:
        """Train the student stages of ``runs`` (one run, or several sharing a teacher) through the one
        loop: each run at its own position on its own when their positions differ."""
        from engine.trainer import fit_sessions

        stages = {run: next(s for s in run.stages if s.name == "student") for run in runs}
        if len(runs) > 1:  # one teacher (and heads) in memory, shared by every student that has one
            teacher = next((r.teacher for r in runs if r.teacher is not None), None)
            heads = next((r.teacher_heads for r in runs if r.teacher_heads is not None), None)
            for run in runs:
                task = stages[run].task
                if task.teacher is not None:
                    task.teacher = run.teacher = teacher
                if task.teacher_heads is not None:
                    task.teacher_heads = run.teacher_heads = heads
        rids = {run: self._ids[id(ready[run][1])] for run in runs}
        if len(runs) > 1:  # one progress item for the shared stage, before any of them announces it
            self.progress.merge(("group", gi, tuple(rids[r] for r in runs)), "student", [rids[r] for r in runs],
                                self._group_kind(runs, ready))
            self._forecast()  # the later groups of the same runs, priced as this one
        sessions: dict = {}
        for run in runs:
            i, spec, o = ready[run]
            run.stage = "student"
            try:
                with timing(run.clock):
                    sessions[run] = run.session(stages[run], own_rng=len(runs) > 1)
            except Exception as exc:  # noqa: BLE001 - a checkpoint that does not fit: this run fails
                self._guard(o, lambda e=exc: _raise(e), summaries, i)
        by_position: dict[tuple, list] = {}
        for run, s in sessions.items():
            by_position.setdefault((s.start_epoch, s.start_step), []).append(run)
        if len(by_position) > 1:  # resumed at different points: each position's runs train on their own
            self._split_progress(gi, runs, by_position, rids, stages, ready)
        for members in by_position.values():
            if len(members) > 1:
                extra = sum(student_memory_mib(r) for r in members[1:]) / (len(members) - 1)
                for run in members:
                    run.summary["lockstep"] = {"students": len(members), "memory_per_extra_student_mib": round(extra, 1)}
                    run.bus.log(f"student: training in lockstep with {len(members) - 1} other student(s), one "
                                f"teacher pass per batch; each extra student needs about {extra:.1f} MiB")
            failed: set = set()
            by_session = {sessions[r]: r for r in members}

            def on_failure(session, exc, by_session=by_session, failed=failed):
                run = by_session[session]
                failed.add(run)
                i, _, o = ready[run]
                self._guard(o, lambda: _raise(exc), summaries, i)

            first = members[0]
            try:
                alive = fit_sessions([sessions[r] for r in members], first.train_loader, self.control,
                                     channels_last=first.channels_last,
                                     on_failure=on_failure if len(members) > 1 else None)
            except BaseException as exc:  # noqa: BLE001 - a stop (all of them), or a run alone's own failure
                for run in members:
                    if run not in failed:
                        i, _, o = ready[run]
                        self._guard(o, lambda e=exc: _raise(e), summaries, i)
                continue
            for session in alive:
                run = by_session[session]
                i, _, o = ready[run]

                def finish_stage(run=run, session=session):
                    with timing(run.clock):
                        history, before, _ = run.complete(stages[run], session)
                    run.run_stage(stages[run], trained=(history, before, session.watch.session))
                self._guard(o, finish_stage, summaries, i)

    def _split_progress(self, gi: int, runs: list, by_position: dict, rids: dict, stages: dict, ready: dict) -> None:
        """Progress items for the runs of a group that train apart (at different positions)."""
        group = ("group", gi, tuple(rids[r] for r in runs))
        self.progress.drop(group)
        for (start_epoch, start_step), members in by_position.items():
            plan = stages[members[0]].plan
            key = ("group", gi, tuple(rids[r] for r in members)) if len(members) > 1 else (rids[members[0]], "student")
            kind = self._group_kind(members, ready) if len(members) > 1 else \
                _kind("student", "train", self._shapes.get(id(ready[members[0]][1])) or ("?",))
            self.progress.declare(WorkItem(key=key, stage="student", kind=kind, units=float(plan.units),
                                           done=float(start_epoch * plan.steps_per_epoch + start_step),
                                           runs=tuple(rids[r] for r in members)))

    def _outcome(self, o: OpenRun, body) -> dict:
        """The run's outcome (OpenRun.outcome), a failure kept in its summary instead of raised;
        then its comparison's table is rebuilt."""
        try:
            with timing(o.run.clock):
                return o.outcome(body)
        except Exception as exc:  # noqa: BLE001 - reported by outcome (event, summary, error.log)
            if self.raise_failures and self.failure is None:
                self.failure = exc
            return o.run.summary
        finally:
            self._ended(o)

    def _guard(self, o: OpenRun, body, summaries: dict, i: int) -> bool:
        """Run ``body``; when it stops or fails, record the run's outcome and return True."""
        try:
            body()
            return False
        except BaseException as exc:  # noqa: BLE001
            summaries[i] = self._outcome(o, lambda e=exc: _raise(e))
            if isinstance(exc, KeyboardInterrupt):
                raise
            return True

    def _ended(self, o: OpenRun) -> None:
        """A run ended (whichever way): its comparison's table is rebuilt from the run folders."""
        from engine.compare import rebuild_table
        from engine.jobs import comparison_dir_of

        if not o.main:
            return
        folder = comparison_dir_of(o.path)
        if folder is not None:
            try:
                rebuild_table(folder)
            except (OSError, ValueError) as exc:
                o.bus.log(f"comparison table of {folder} not rebuilt: {exc}", "warning")

    # ============================================================================ progress
    def _declare(self, rid, spec: RunSpec, run, group_size: int) -> None:
        """Declare the opened run's work (its plan's stages not done yet), priced from its estimate,
        and forecast the work of the runs not opened yet that have its shape."""
        estimate = self._estimates(run)
        shape = self._shapes.get(id(spec)) or _shape(run.cfg)
        items = []
        for s in run.plan.stages:
            kind = _kind(s.name, s.action, shape)
            items.append((s.name, kind, float(s.units), estimate.get(s.name), s.done))
        self._templates.setdefault(shape, [(n, k, u, e) for n, k, u, e, _ in items])
        gi = rid[0]
        together = self.lockstep and group_size > 1
        for name, kind, units, est, done in items:
            if done:
                continue
            if together and name == "student":  # one item for the group's shared stage
                key = ("group", gi, tuple((gi, j) for j in range(group_size)))
                group = self.progress.items.get(key)
                if group is None:
                    group = self.progress.declare(WorkItem(key=key, stage=name, kind=("student", "train", "lockstep"),
                                                           units=units, runs=key[2], forecast=True))
                if est is not None and group.forecast:  # the group's steps cost about its students' together
                    parts = self._group_estimates.setdefault(key, {})
                    parts[rid] = est
                    # the members not opened yet cost about what the opened ones do
                    group.estimate = sum(parts.values()) / len(parts) * group_size
                continue
            self.progress.declare(WorkItem(key=(rid, name), stage=name, kind=kind, units=units, estimate=est,
                                           runs=(rid,)))
        self._forecast()

    def _forecast(self) -> None:
        """Forecast items for every run not opened yet whose shape has been seen."""
        for gi, group in enumerate(self.groups):
            if gi in self._opened_groups:
                continue  # its runs declare their own work
            lockstep = self.lockstep and len(group) > 1
            for si, spec in enumerate(group):
                rid = (gi, si)
                if any(k[0] == rid for k in self.progress.items if isinstance(k, tuple) and len(k) == 2) \
                        or rid in self.progress.ended or rid in self.progress.active_runs:
                    continue
                template = self._templates.get(self._shapes.get(id(spec)))
                for name, kind, units, est in template or ():
                    if lockstep and name == "student":
                        continue
                    self.progress.declare(WorkItem(key=(rid, name), stage=name, kind=kind, units=units, estimate=est,
                                                   runs=(rid,), forecast=True))
            if lockstep:  # the group's shared student stage, as an earlier group of the same runs trained it
                known = self._group_like(gi, self._composition(group))
                key = ("group", gi, tuple((gi, j) for j in range(len(group))))
                if known is not None and (key not in self.progress.items or self.progress.items[key].forecast):
                    kind, units, est = known
                    self.progress.declare(WorkItem(key=key, stage="student", kind=kind, units=units,
                                                   estimate=est, runs=key[2], forecast=True))

    def _composition(self, group: list) -> tuple:
        return tuple(sorted(map(str, (self._shapes.get(id(s)) for s in group))))

    def _group_like(self, gi: int, comp: tuple) -> tuple | None:
        """(kind, units, estimate) of another group's shared student stage with the same runs, if declared."""
        for gj, other in enumerate(self.groups):
            key = ("group", gj, tuple((gj, j) for j in range(len(other))))
            item = self.progress.items.get(key)
            if gj != gi and item is not None and not (item.forecast and item.estimate is None) \
                    and self._composition(other) == comp:
                return item.kind, item.units, item.estimate
        return None

    def _group_kind(self, members: list, ready: dict) -> tuple:
        """The kind of a shared student stage: its runs' shapes together."""
        return ("student", "train", "lockstep", self._composition([ready[r][1] for r in members]))

    def _estimates(self, run) -> dict[str, float]:
        if not self.estimate:
            return {}
        try:
            from engine.estimate import estimate_stages

            return estimate_stages(run.plan, run.device)
        except Exception:  # noqa: BLE001 - an estimate is a help, never a failure
            return {}

    def _feed(self, rid, event) -> None:
        if event.type == "Progress":
            return
        self.progress.update(rid, event)
        now = self.clock()
        if event.type in ("EpochEnd", "StageFinished", "RunFinished", "RunFailed", "StageStarted") or \
                now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            # a run's last event is its RunFinished or RunFailed: the figures after it go to the caller only
            self._announce(None if event.type in ("RunFinished", "RunFailed") else rid)

    def _announce(self, rid) -> None:
        event = Progress(**self.progress.snapshot())
        if self.on_progress is not None:
            self.on_progress(event)
        bus = self._bus_of.get(rid) if rid is not None else None
        if bus is not None:
            bus.emit(event)


def _kind(stage: str, action: str, shape: tuple) -> tuple:
    """What one unit of a run's stage costs the same as: the stage, its action and the models in it
    (the teacher alone for the teacher and heads stages)."""
    return (stage, action) + (shape[:4] if stage not in ("teacher", "heads") else shape[:1])


def _student_pending(run) -> bool:
    return any(s.name == "student" for s in run.stages) and "student" not in run.summary["stages"] \
        and not checkpoint_path(run.run_dir, "student").exists()


def _raise(exc: BaseException):
    raise exc


def _refused(spec: RunSpec, exc: Exception) -> dict:
    """A run that could not begin: told to its subscribers as RunFailed (stage setup); its summary."""
    import traceback

    message = str(exc) if isinstance(exc, MGDError) else f"{type(exc).__name__}: {exc}"
    kind = "input" if isinstance(exc, InputError) else "error"
    EventBus(list(spec.subscribers)).emit(RunFailed(str(spec.run_dir or ""), "setup", message, kind,
                                                    traceback.format_exc()))
    return {"status": "failed", "failed_in": "setup", "error": message, "kind": kind,
            "field": getattr(exc, "field", None), "run_dir": str(spec.run_dir or "")}


__all__ = ["Driver", "RunSpec"]
