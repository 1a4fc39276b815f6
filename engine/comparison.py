"""A comparison as the engine owns it: typed jobs, their grouping, teacher and heads reuse,
skip-finished and resume, persisted in the comparison folder.

:class:`Comparison` is the one model of a comparison for every front end (``mgd-train``, the
studio's queue): its jobs (:func:`engine.jobs.comparison_jobs`, one per pair, seed, baseline
and mode), which of them train together (one pair and seed: their students in lockstep off
one teacher pass per batch), the state of each (read from its run folder: finished, begun and
resumable, or new), the teacher and heads each seed trains once (:class:`TeacherReuse`) and the
:class:`engine.driver.RunSpec` s that run or resume them. The comparison folder holds the
comparison's ``config.yaml``, its job list (``jobs.json``), one run folder per job (each with
its ``job.json`` record) and the table (``comparison.md``, ``.csv``, ``.json``), which the
driver rebuilds from the run folders whenever one of the runs ends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

from engine.compare import JOBS_FILE, rebuild_table
from engine.config import ExperimentConfig, load_config, resolve, save_config, set_value, validate
from engine.control import RunControl
from engine.driver import Driver, RunSpec
from engine.errors import InputError, MGDError
from engine.events import EventBus, Progress, Subscriber
from engine.jobs import MAX_STUDENTS, Job, comparison_jobs
from engine.runfolder import CONFIG_FILE, SUMMARY_FILE, atomic_write, checkpoint_path, read_json

#: a job's state in its comparison folder
FINISHED, RESUMABLE, NEW = "finished", "resumable", "new"


class TeacherReuse:
    """What a comparison trains once per (teacher architecture, seed) and its later runs load:
    the teacher (``checkpoints/teacher.pt`` of the first run that trained it) and the
    granularity heads trained on that teacher (``checkpoints/heads.pt``). The driver calls
    :meth:`apply` before it opens a new run and :meth:`remember` after a run's first stages."""

    def __init__(self) -> None:
        self.teachers: dict[tuple[str, int], str] = {}
        self.heads: dict[tuple[str, int], str] = {}

    def apply(self, child: ExperimentConfig) -> ExperimentConfig:
        """``child`` with the teacher and heads trained before for its teacher and seed (when it
        would otherwise train them itself)."""
        key = (child.teacher.arch, child.seed)
        if child.teacher.checkpoint is None and key in self.teachers:
            child = set_value(child, "teacher.checkpoint", self.teachers[key])
        if child.granularity.mode != "off" and child.granularity.checkpoint is None and key in self.heads:
            child = set_value(child, "granularity.checkpoint", self.heads[key])
        return resolve(child)

    def remember(self, child: ExperimentConfig, run_dir: str | Path) -> None:
        """Note what the run in ``run_dir`` (run with config ``child``) trained itself."""
        key = (child.teacher.arch, child.seed)
        if key not in self.teachers and child.teacher.checkpoint is None and \
                checkpoint_path(run_dir, "teacher").exists():
            self.teachers[key] = str(checkpoint_path(run_dir, "teacher"))
        if key not in self.heads and child.granularity.checkpoint is None and \
                checkpoint_path(run_dir, "heads").exists():
            self.heads[key] = str(checkpoint_path(run_dir, "heads"))


def check_comparison(cfg: ExperimentConfig, jobs: list[Job] | None = None) -> None:
    """Refuse, before any run, what would make a later run of the comparison fail: no job at
    all, a missing teacher file of ``teachers_dir``, a config a run would refuse."""
    c = cfg.comparison
    if not c.baselines:
        raise InputError("comparison.baselines: list at least one baseline to compare")
    jobs = comparison_jobs(cfg) if jobs is None else jobs
    if not jobs:
        raise InputError("comparison: no run to make (check comparison.seeds, comparison.modes and "
                         "comparison.baselines)")
    for job in jobs:
        validate(resolve(job.config))
        path = job.config.teacher.checkpoint
        if path and not Path(path).expanduser().is_file():
            raise InputError(f"comparison.teachers_dir: {path} is missing (RepDistiller's published teacher for "
                             f"{job.config.teacher.arch}; its scripts/fetch_pretrained_teachers.sh downloads them)")


class Comparison:
    """A comparison's jobs in its folder (see the module docstring)."""

    def __init__(self, cfg: ExperimentConfig, folder: str | Path):
        self.cfg = cfg
        self.folder = Path(folder)
        self.jobs = comparison_jobs(cfg)

    @classmethod
    def open(cls, folder: str | Path) -> "Comparison":
        """The comparison of a comparison folder (its ``config.yaml``)."""
        folder = Path(folder)
        cfg = load_config(folder / CONFIG_FILE)
        if not cfg.comparison.baselines:
            raise InputError(f"{folder}: not a comparison folder (its config has no comparison.baselines)")
        return cls(cfg, folder)

    @property
    def name(self) -> str:
        return self.cfg.name or self.folder.name

    def check(self) -> None:
        check_comparison(self.cfg, self.jobs)

    def save(self) -> None:
        """Write the comparison's config and job list in its folder (the runs list and the table
        read them)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.folder / CONFIG_FILE)
        atomic_write(self.folder / JOBS_FILE, json.dumps(
            {"version": 1, "comparison": self.name, "jobs": [j.record() for j in self.jobs]}, indent=1))

    # -- jobs ------------------------------------------------------------------------
    def job(self, folder: str) -> Job | None:
        return next((j for j in self.jobs if j.folder == folder), None)

    def run_dir(self, job: Job) -> Path:
        return self.folder / job.folder

    def summary(self, job: Job) -> dict[str, Any]:
        return read_json(self.run_dir(job) / SUMMARY_FILE)

    def state(self, job: Job) -> str:
        """finished, resumable (its run folder has begun) or new."""
        run_dir = self.run_dir(job)
        if self.summary(job).get("status") == "finished":
            return FINISHED
        return RESUMABLE if (run_dir / CONFIG_FILE).is_file() else NEW

    def groups(self, jobs: Iterable[Job] | None = None) -> list[list[Job]]:
        """Jobs that train together, in order: one pair and seed per group, at most
        :data:`engine.jobs.MAX_STUDENTS` a group (a larger one trains as several, in order), as the
        studio's queue groups them too."""
        out: dict[tuple, list[Job]] = {}
        for job in self.jobs if jobs is None else jobs:
            out.setdefault(job.group, []).append(job)
        return [members[i:i + MAX_STUDENTS] for members in out.values() for i in range(0, len(members), MAX_STUDENTS)]

    def reuse(self) -> TeacherReuse:
        """The teachers and heads that the runs begun so far trained themselves (from their run
        folders' configs), for the later runs to load."""
        reuse = TeacherReuse()
        for job in self.jobs:
            run_dir = self.run_dir(job)
            if not (run_dir / CONFIG_FILE).is_file():
                continue
            try:
                reuse.remember(load_config(run_dir / CONFIG_FILE), run_dir)
            except (OSError, MGDError):
                continue  # unreadable: nothing to reuse from it
        return reuse

    def spec(self, job: Job, subscribers: list[Subscriber] = (), tag: Any = None) -> RunSpec:
        """How the driver runs ``job``: resumed when its run folder has begun, else new."""
        run_dir = self.run_dir(job)
        resume = (run_dir / CONFIG_FILE).is_file()
        return RunSpec(None if resume else job.config, run_dir, resume=resume, job=job, comparison_dir=self.folder,
                       subscribers=list(subscribers), tag=tag)

    def pending(self) -> list[Job]:
        return [j for j in self.jobs if self.state(j) != FINISHED]

    # -- running ---------------------------------------------------------------------
    def run(self, *, subscribers: Iterable[Subscriber] = (), control: RunControl | None = None,
            lockstep: bool = True, on_progress: Callable[[Progress], None] | None = None,
            estimate: bool = True) -> dict[str, Any]:
        """Run every job not finished (resuming those begun), then return the table (rebuilt from
        the run folders; ``complete`` says whether every job finished). A run that fails stops
        alone; a stop request ends the comparison (running it again continues it)."""
        subscribers = list(subscribers)
        self.check()
        self.save()
        control = control or RunControl()
        pending = self.pending()
        total = len(self.jobs)
        groups = []
        for members in self.groups(pending):
            specs = []
            for job in members:
                spec = self.spec(job, subscribers)
                n = self.jobs.index(job) + 1
                spec.announce = f"comparison run {n}/{total}: {job.folder}" + (" (resumed)" if spec.resume else "")
                specs.append(spec)
            groups.append(specs)
        driver = Driver(control=control, reuse=self.reuse(), lockstep=lockstep, on_progress=on_progress,
                        estimate=estimate)
        if total > len(pending):
            EventBus(subscribers).log(f"comparison {self.name!r}: {total - len(pending)} of {total} runs finished "
                                      f"before, {len(pending)} to run")
        driver.run(groups)
        table = rebuild_table(self.folder)
        table["complete"] = all(self.state(j) == FINISHED for j in self.jobs)
        return table


def run_comparison(cfg: ExperimentConfig, out_dir: str | Path, *, subscribers: Iterable[Subscriber] = (),
                   control: RunControl | None = None, lockstep: bool = True,
                   on_progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
    """Run (or continue) the comparison of ``cfg`` in ``out_dir``; see :meth:`Comparison.run`."""
    return Comparison(cfg, out_dir).run(subscribers=subscribers, control=control, lockstep=lockstep,
                                        on_progress=on_progress)


def estimate_comparison(cfg: ExperimentConfig) -> dict[str, Any]:
    """Plan every job of a comparison (data loaded once) and estimate its time: each job's stages,
    a teacher and its heads trained once per (teacher, seed) and loaded by the later jobs of that seed."""
    from engine.estimate import estimate_stages
    from engine.experiment import plan_experiment
    from engine.runtime import data_cache, select_device

    jobs = comparison_jobs(cfg)
    check_comparison(cfg, jobs)
    out, total = [], 0.0
    trained_teachers: set[tuple] = set()
    trained_heads: set[tuple] = set()
    cache: dict[tuple, dict] = {}
    with data_cache():
        for job in jobs:
            child = resolve(job.config)
            shape_key = (child.teacher.arch, child.student.arch, child.distiller.name, child.granularity.mode,
                         child.teacher.checkpoint)
            if shape_key not in cache:  # the seed changes no stage's length or cost
                plan = plan_experiment(child)
                cache[shape_key] = {"plan": plan, "estimate": estimate_stages(plan, select_device(child.device)[0])}
            est = dict(cache[shape_key]["estimate"])
            key = (child.teacher.arch, child.seed)
            # the comparison trains each teacher, and its heads, once per seed; later runs load them
            for stage, done in (("teacher", trained_teachers), ("heads", trained_heads)):
                if stage in est and not (stage == "teacher" and child.teacher.checkpoint):
                    if key in done:
                        est["total"] -= est.pop(stage)
                    done.add(key)
            out.append({"run": job.folder, "seconds": est["total"]})
            total += est["total"]
    return {"jobs": out, "total": total}


__all__ = ["Comparison", "TeacherReuse", "check_comparison", "run_comparison", "estimate_comparison",
           "FINISHED", "RESUMABLE", "NEW"]
