"""Students in lockstep: one frozen-teacher forward pass per batch feeds several students.

The runs of a comparison that share a seed and a teacher see the same batches in the same
order (shuffling and augmentation derive from seed, epoch and step) and distil from the same
frozen teacher (and heads). :func:`run_lockstep` opens their run folders one after another
(so that the first can train the teacher and heads that the later ones load), runs each run's
stages before the student stage on its own, then trains the student stages together: per
batch the teacher's outputs are computed once (:class:`TeacherPass`) and every student takes
its own optimisation step with its own distiller, optimiser, schedule, random generator,
events, checkpoints and run folder. The remaining stages (evaluation, export, fine-tuning)
run per run again.

On the CPU, with the same thread count, every student ends bit-identical to the same run
done alone: the teacher pass is the same computation on the same batch, and each student
draws from its own random-generator state (:class:`engine.trainer.FitSession` with
``own_rng``). A student that fails (a NaN loss) stops alone with its reason; the others go
on. A stop request stops all of them with their checkpoints, and the usual resume continues
each (in lockstep again when they stand at the same step).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from engine.control import RunControl
from engine.errors import StopRequested
from engine.trainer import check_control


class TeacherPass:
    """The frozen teacher's (and heads') outputs on one batch, computed once for every student
    (per pre-activation flag: AB compares pre-activation features)."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self._teacher: dict[bool, tuple] = {}
        self._heads: dict[bool, tuple] = {}

    @torch.no_grad()
    def teacher(self, model, preact: bool) -> tuple:
        if preact not in self._teacher:
            self._teacher[preact] = model(self.x, preact=preact)
        return self._teacher[preact]

    @torch.no_grad()
    def heads(self, heads, features, preact: bool) -> tuple:
        if preact not in self._heads:
            self._heads[preact] = heads(features[-1])
        return self._heads[preact]


def lockstep_key(cfg) -> tuple:
    """Runs with equal keys see the same batches in the same order (data, seed, batch size), for the
    same number of epochs, with the same numerics; they can train their students together when
    their teachers are the same too (:func:`fingerprint`)."""
    d = cfg.data
    return (d.dataset, d.root, d.image_size, d.test_fraction, d.augment, getattr(d, "normalize", None),
            d.batch_size, cfg.seed, cfg.device, cfg.speed.amp, cfg.speed.channels_last, cfg.student.schedule.epochs)


def fingerprint(module) -> str | None:
    """A digest of a module's weights (None for no module): equal digests, the same frozen teacher."""
    if module is None:
        return None
    import hashlib

    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def group_runs(runs: list) -> list[list]:
    """Runs that can train together: the same batches and schedule length (:func:`lockstep_key`),
    the same teacher weights and, among those with granularity heads, the same heads. A run
    without a teacher (the student-alone reference) joins a group of the same batches."""
    groups: dict[tuple, list] = {}
    for run in runs:
        groups.setdefault((lockstep_key(run.cfg), fingerprint(run.teacher)), []).append(run)
    for key, teacher in list(groups):  # a run without a teacher (the student alone) shares only the batches
        host = next((k for k in groups if k[0] == key and k[1] is not None), None)
        if teacher is None and host is not None:
            groups[host] += groups.pop((key, None))
    out = []
    for members in groups.values():
        by_heads: dict[str, list] = {}
        for run in members:
            if run.teacher_heads is not None:
                by_heads.setdefault(fingerprint(run.teacher_heads), []).append(run)
        parts = list(by_heads.values()) or [[]]
        parts[0] = [run for run in members if run.teacher_heads is None] + parts[0]
        out += [part for part in parts if part]
    return out


def student_memory_mib(run) -> float:
    """What one more student costs in memory: its weights, gradients and momentum (and those of
    its heads' encoders and its baseline's modules), in MiB."""
    params = sum(p.numel() * p.element_size() for p in run.student.parameters())
    if run.student_heads is not None:
        params += sum(p.numel() * p.element_size() for p in run.student_heads.encoder_parameters())
    if run.distiller is not None:
        params += sum(p.numel() * p.element_size() for p in run.distiller.parameters())
        params += sum(b.numel() * b.element_size() for b in run.distiller.buffers())  # CRD's memory bank
    return 3 * params / 2**20


def train_together(runs: list, control: RunControl, on_failure: Callable[[Any, BaseException], None]) -> dict:
    """Train the student stages of ``runs`` (ExperimentRuns, student stage next) in lockstep.
    Returns ``{run: (history, earlier seconds)}`` for every run whose stage completed; a run whose
    step or evaluation fails is handed to ``on_failure`` and dropped; a stop raises StopRequested
    once every session has written its checkpoint."""
    stages = {run: next(s for s in run.stages if s.name == "student") for run in runs}
    first = runs[0]
    teacher = next((run.teacher for run in runs if run.teacher is not None), None)
    heads = next((run.teacher_heads for run in runs if run.teacher_heads is not None), None)
    for run in runs:  # one teacher (and heads) in memory, shared by every student that has one
        run.stage = "student"
        task = stages[run].task
        if task.teacher is not None:
            task.teacher = run.teacher = teacher
        if task.teacher_heads is not None:
            task.teacher_heads = run.teacher_heads = heads
    sessions = {}
    for run in runs:
        trainer = run.trainer(stages[run])
        sessions[run] = (trainer, trainer.session(stages[run].task, own_rng=True, **run.schedule_of(stages[run])))
    starts = {(s.start_epoch, s.start_step) for _, s in sessions.values()}
    if len(starts) != 1:
        raise ValueError(f"lockstep needs every student at the same position, got {sorted(starts)}")
    extra = sum(student_memory_mib(run) for run in runs[1:]) / max(1, len(runs) - 1)
    for run in runs:
        run.summary["lockstep"] = {"students": len(runs), "memory_per_extra_student_mib": round(extra, 1)}
        run.bus.log(f"student: training in lockstep with {len(runs) - 1} other student(s), one teacher pass per "
                    f"batch; each extra student needs about {extra:.1f} MiB")
    by_session = {sessions[run][1]: run for run in runs}

    def dropped(session, exc: BaseException) -> None:
        on_failure(by_session[session], exc)

    alive = [by_session[s] for s in fit_together([sessions[run][1] for run in runs],
                                                  [stages[run].task for run in runs], first.train_loader, control,
                                                  channels_last=first.channels_last, on_failure=dropped)]
    return {run: run.complete(stages[run], sessions[run][1].history, sessions[run][0]) for run in alive}


def fit_together(sessions: list, tasks: list, loader, control: RunControl, *, channels_last: bool = False,
                 on_failure: Callable[[Any, BaseException], None] | None = None) -> list:
    """The lockstep loop: every epoch, every batch once, one :class:`TeacherPass` shared by the
    ``tasks`` (StudentTasks) of the ``sessions`` (FitSessions with ``own_rng``, at one position).
    A session whose step or evaluation raises is handed to ``on_failure`` and dropped (raised when
    there is no handler); returns the sessions that completed their schedule."""
    alive = list(zip(sessions, tasks))

    def drop(pair, exc: BaseException) -> None:
        if on_failure is None:
            raise exc
        alive.remove(pair)
        on_failure(pair[0], exc)

    start_epoch, epochs = sessions[0].start_epoch, sessions[0].epochs
    for epoch in range(start_epoch, epochs):
        first_step = 0
        for session, _ in alive:
            first_step = session.begin_epoch(epoch)
        for step, (x, y, idx) in enumerate(loader.epoch(epoch, start_step=first_step), start=first_step + 1):
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            check_control(control, [s for s, _ in alive], epoch, step)  # pause; stop: all at once
            shared = TeacherPass(x)
            for pair in list(alive):
                session, task = pair
                task.shared = shared
                try:
                    session.step(step, x, y, idx)
                except Exception as exc:  # noqa: BLE001 - this student stops alone
                    drop(pair, exc)
                finally:
                    task.shared = None
        for pair in list(alive):
            try:
                pair[0].end_epoch(epoch)
            except Exception as exc:  # noqa: BLE001
                drop(pair, exc)
    return [s for s, _ in alive]


def run_lockstep(jobs: Iterable[tuple], *, subscribers_for: Callable[[Any], list] = lambda job: [],
                 control: RunControl | None = None, before_open: Callable[[Any, Any], Any] | None = None,
                 after_open: Callable[[Any, Any], None] | None = None) -> list[dict]:
    """Run ``jobs`` (``(config or None, run_dir, resume)``) with their student stages in lockstep.

    ``before_open(job, previous_runs)`` may return the job's config adjusted with what earlier
    jobs made (the teacher and heads they trained); ``after_open(job, run)`` sees each run after
    its stages before the student stage. Returns the summaries of the jobs begun, in order (a
    failed run's summary says so; its error is also in its run folder and events). A job refused
    before it began (bad input) fails alone: ``RunFailed`` to its subscribers, a summary with
    status failed and no run folder. Once a stop is requested no further job is begun, so the
    list is shorter than ``jobs``.
    """
    from engine.run import OpenRun

    control = control or RunControl()
    opened: list[tuple[Any, OpenRun]] = []
    summaries: dict[int, dict] = {}
    refused: list[int] = []  # jobs refused before they began (bad input): no run folder
    try:
        for i, job in enumerate(jobs):
            if control.stop_requested:
                break  # the jobs not opened yet are left as they are (no folder, no summary)
            cfg, run_dir, resume = job
            subscribers = subscribers_for(job)
            try:
                if before_open is not None:
                    cfg = before_open(job, [o.run for _, o in opened]) if not resume else cfg
                o = OpenRun(cfg, run_dir=run_dir, subscribers=subscribers, control=control, resume=resume)
            except Exception as exc:  # noqa: BLE001 - refused before it began: this job alone fails
                summaries[i] = _refused(run_dir, subscribers, exc)
                refused.append(i)
                continue
            opened.append((i, o))
            run = o.run
            for stage in run.stages:  # the stages before the student's, each run on its own
                if stage.name == "student":
                    break
                if _guard(o, lambda st=stage: run.run_stage(st), summaries, i):
                    break
            if after_open is not None and i not in summaries:
                after_open(job, run)
        ready = {o.run: (i, o) for i, o in opened if i not in summaries and _student_pending(o.run)}
        for runs in group_runs(list(ready)):
            by_run = {run: ready[run] for run in runs}
            failed: dict = {}

            def on_failure(run, exc, by_run=by_run, failed=failed):
                i, o = by_run[run]
                failed[run] = True
                _guard(o, lambda: _raise(exc), summaries, i)

            if len(runs) == 1:
                continue  # alone: trained by its own loop below
            try:
                trained = train_together(runs, control, on_failure)
            except ValueError:  # not at the same position (resumed at different points): each on its own
                continue
            except StopRequested as exc:
                for run in runs:
                    if run not in failed:
                        i, o = by_run[run]
                        run.stage = "student"
                        _guard(o, lambda e=exc: _raise(e), summaries, i)
                continue
            for run, result in trained.items():
                i, o = by_run[run]
                stage = next(s for s in run.stages if s.name == "student")
                if _guard(o, lambda r=run, s=stage, t=result: r.run_stage(s, trained=t), summaries, i):
                    continue
        for i, o in opened:  # the rest of every run, each on its own
            if i in summaries:
                continue
            run = o.run
            remaining = [s for s in run.stages if s.name not in run.summary["stages"]]

            def rest(run=run, remaining=remaining):
                for stage in remaining:
                    run.run_stage(stage)
                return run.finish()
            summaries[i] = _outcome(o, rest)
    finally:
        for _, o in opened:
            o.close()
    return [summaries[i] for i in sorted([i for i, _ in opened] + refused)]


def _refused(run_dir, subscribers: list, exc: Exception) -> dict:
    """A job that could not begin: told to its subscribers as RunFailed (stage setup); its summary."""
    import traceback

    from engine.errors import InputError, MGDError
    from engine.events import EventBus, RunFailed

    message = str(exc) if isinstance(exc, MGDError) else f"{type(exc).__name__}: {exc}"
    kind = "input" if isinstance(exc, InputError) else "error"
    EventBus(list(subscribers)).emit(RunFailed(str(run_dir or ""), "setup", message, kind, traceback.format_exc()))
    return {"status": "failed", "failed_in": "setup", "error": message, "kind": kind,
            "field": getattr(exc, "field", None), "run_dir": str(run_dir or "")}


def _student_pending(run) -> bool:
    from engine.runfolder import checkpoint_path

    return any(s.name == "student" for s in run.stages) and "student" not in run.summary["stages"] \
        and not checkpoint_path(run.run_dir, "student").exists()


def _raise(exc: BaseException):
    raise exc


def _outcome(o, body) -> dict:
    """The run's outcome (OpenRun.outcome), a failure kept in its summary instead of raised."""
    try:
        return o.outcome(body)
    except Exception:  # noqa: BLE001 - reported by outcome (event, summary, error.log)
        return o.run.summary


def _guard(o, body, summaries: dict, i: int) -> bool:
    """Run ``body``; when it stops or fails, record the run's outcome and return True."""
    try:
        body()
        return False
    except BaseException as exc:  # noqa: BLE001
        summaries[i] = _outcome(o, lambda e=exc: _raise(e))
        if isinstance(exc, KeyboardInterrupt):
            raise
        return True


__all__ = ["TeacherPass", "run_lockstep", "train_together", "fit_together", "group_runs", "lockstep_key", "fingerprint",
           "student_memory_mib"]
