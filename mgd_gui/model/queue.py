"""The studio's queue, without Qt: the jobs of comparisons in the order they run, with their
state, kept in a small JSON file in the studio's data folder (written atomically after every
change), so the queue survives closing the window.

The engine owns the comparison (:class:`engine.comparison.Comparison`): its typed jobs
(:class:`engine.jobs.Job`: pair, seed, baseline, mode), which of them train together (one pair
and seed, :attr:`Job.group`), teacher and heads reuse, skip-finished and resume. This module
keeps only the queue's order and states; :class:`mgd_gui.model.queue_controller.QueueController`
starts its groups, :class:`mgd_gui.run_queue.QueuePanel` shows it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.config import ExperimentConfig
from engine.jobs import Job
from engine.runfolder import atomic_write, read_json

#: a job's states: waiting, training now, finished, failed, removed by the user
STATES = ("pending", "running", "done", "failed", "cancelled")
#: the queue's states: "running" starts the next job whenever the window is free
QUEUE_STATES = ("idle", "running", "paused")
#: 2: each job holds its engine job record (pair included), no config; 1 (read too): each job
#: held its config, from which the pair is taken
VERSION = 2


@dataclass
class QueueJob:
    """One queued job of a comparison: the engine's job record (:class:`engine.jobs.Job`, without
    its config: the comparison folder's config makes it) and its state in the queue."""

    id: str  # "<comparison folder>/<job folder>", unique in the queue
    comparison_dir: str  # the comparison's folder (its config.yaml and job list; the run folder's parent)
    folder: str  # the job's run folder name in it (never parsed)
    comparison: str  # the comparison's name
    teacher: str | None
    student: str
    seed: int
    baseline: str
    mode: str
    state: str = "pending"
    message: str = ""  # why it failed, or that it resumes from a checkpoint
    result: float | None = None  # the student's best accuracy, once done

    @classmethod
    def from_job(cls, job: Job, comparison_dir: str | Path) -> "QueueJob":
        return cls(id=f"{Path(comparison_dir).name}/{job.folder}", comparison_dir=str(comparison_dir),
                   folder=job.folder, comparison=job.comparison, teacher=job.teacher, student=job.student,
                   seed=job.seed, baseline=job.baseline, mode=job.mode)

    @property
    def job(self) -> Job:
        """The engine's job record (no config)."""
        return Job(folder=self.folder, comparison=self.comparison, teacher=self.teacher, student=self.student,
                   seed=self.seed, baseline=self.baseline, mode=self.mode)

    @property
    def run_dir(self) -> Path:
        return Path(self.comparison_dir) / self.folder

    @property
    def label(self) -> str:
        return f"{self.comparison} › {self.folder}"

    @classmethod
    def from_saved(cls, item: Any, version: int) -> "QueueJob | None":
        """A job of a saved queue (``version`` 1 or 2), or None when it cannot be read."""
        if not isinstance(item, dict) or "id" not in item:
            return None
        item = dict(item)
        if version == 1:  # its config held the pair
            config = item.pop("config", None)
            config = config if isinstance(config, dict) else {}
            item.setdefault("teacher", (config.get("teacher") or {}).get("arch"))
            item.setdefault("student", (config.get("student") or {}).get("arch"))
        if not set(cls.__dataclass_fields__) >= set(item):
            return None
        try:
            job = cls(**item)
        except TypeError:
            return None
        return job if isinstance(job.student, str) and isinstance(job.seed, int) else None


@dataclass
class RunQueue:
    """The jobs in the order they run, the queue's state, persisted in ``path`` (JSON)."""

    path: Path
    jobs: list[QueueJob] = field(default_factory=list)
    state: str = "idle"

    # -- persistence ---------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> RunQueue:
        """The queue saved at ``path`` (an empty queue when there is none or it cannot be read; a
        queue of version 1 is read too). A job found "running" was interrupted with the window:
        it is pending again."""
        queue = cls(Path(path))
        data = read_json(queue.path)
        version = data.get("version")
        if version not in (1, VERSION):
            return queue
        for item in data.get("jobs") or []:
            job = QueueJob.from_saved(item, version)
            if job is None:
                continue
            if job.state == "running":
                job.state = "pending"
                job.message = "interrupted when the studio closed; resumes from its checkpoint"
            queue.jobs.append(job)
        state = data.get("state")
        queue.state = state if state in QUEUE_STATES else "idle"
        if queue.state == "running" and not queue.pending():
            queue.state = "idle"
        return queue

    def save(self) -> None:
        data = {"version": VERSION, "state": self.state, "jobs": [asdict(j) for j in self.jobs]}
        atomic_write(self.path, json.dumps(data, indent=1))

    # -- contents ------------------------------------------------------------------------
    def job(self, job_id: str) -> QueueJob | None:
        return next((j for j in self.jobs if j.id == job_id), None)

    def pending(self) -> list[QueueJob]:
        return [j for j in self.jobs if j.state == "pending"]

    def running(self) -> QueueJob | None:
        return next((j for j in self.jobs if j.state == "running"), None)

    def counts(self) -> dict[str, int]:
        return {s: sum(j.state == s for j in self.jobs) for s in STATES}

    def add_comparison(self, cfg: ExperimentConfig, folder: Path) -> list[QueueJob]:
        """Queue every job of ``cfg``'s comparison (:class:`engine.comparison.Comparison`), with
        ``folder`` as the comparison folder (its config and job list are written there, as
        ``mgd-train`` writes them, so the runs panel lists the runs under the comparison's name).
        Jobs already queued are not queued twice; jobs already finished in that folder are
        listed as done. Raises :class:`engine.errors.InputError` for a comparison a run would refuse
        (a missing teacher file of ``comparison.teachers_dir``, a job's bad config)."""
        from engine.comparison import FINISHED, Comparison

        if not cfg.comparison.baselines:
            raise ValueError("the experiment has no comparison (comparison.baselines is empty)")
        comparison = Comparison(cfg, folder)
        comparison.check()  # what would make a later run fail is refused now, as mgd-train refuses it
        comparison.save()
        added = []
        for job in comparison.jobs:
            queued = QueueJob.from_job(job, comparison.folder)
            existing = self.job(queued.id)
            if existing is not None and existing.state in ("pending", "running"):
                continue
            if existing is not None:
                self.jobs.remove(existing)
            if comparison.state(job) == FINISHED:
                queued.state, queued.message = "done", "finished before"
                queued.result = (comparison.summary(job).get("student") or {}).get("best_acc")
            self.jobs.append(queued)
            added.append(queued)
        self.save()
        return added

    def next_pending(self) -> QueueJob | None:
        pending = self.pending()
        return pending[0] if pending else None

    def next_group(self, limit: int | None = None) -> list[QueueJob]:
        """The jobs to run next, together: the first pending job and the other pending jobs of its
        comparison in the same group (the engine's :attr:`Job.group`: one pair and seed, their
        students in lockstep), in queue order, at most ``limit`` (by default the engine's
        :data:`engine.jobs.MAX_STUDENTS`, as :meth:`engine.comparison.Comparison.groups`); empty when nothing is pending."""
        pending = self.pending()
        if not pending:
            return []
        if limit is None:
            from engine.jobs import MAX_STUDENTS

            limit = MAX_STUDENTS
        first = pending[0]
        group = [first]
        for job in pending[1:]:
            if len(group) >= limit:
                break
            if job.comparison_dir == first.comparison_dir and job.job.group == first.job.group:
                group.append(job)
        return group

    # -- changes -------------------------------------------------------------------------
    def set_state(self, state: str) -> None:
        self.state = state
        self.save()

    def mark(self, job: QueueJob, state: str, message: str = "", result: float | None = None) -> None:
        job.state, job.message = state, message
        if result is not None:
            job.result = result
        self.save()

    def move(self, job_id: str, delta: int) -> bool:
        """Move a pending job up (-1) or down (+1) among the pending jobs; True if it moved."""
        job = self.job(job_id)
        pending = self.pending()
        if job is None or job not in pending:
            return False
        i = pending.index(job)
        j = i + delta
        if not 0 <= j < len(pending):
            return False
        a, b = self.jobs.index(pending[i]), self.jobs.index(pending[j])
        self.jobs[a], self.jobs[b] = self.jobs[b], self.jobs[a]
        self.save()
        return True

    def cancel(self, job_ids: list[str]) -> list[QueueJob]:
        """Cancel pending jobs (the running one is stopped by the window first)."""
        done = []
        for job_id in job_ids:
            job = self.job(job_id)
            if job is not None and job.state == "pending":
                job.state, job.message = "cancelled", "cancelled"
                done.append(job)
        self.save()
        return done

    def clear_finished(self) -> int:
        """Drop done, failed and cancelled jobs from the list (their run folders stay)."""
        before = len(self.jobs)
        self.jobs = [j for j in self.jobs if j.state in ("pending", "running")]
        if not self.jobs:
            self.state = "idle"
        self.save()
        return before - len(self.jobs)

    def comparison_dirs(self) -> list[str]:
        seen: list[str] = []
        for job in self.jobs:
            if job.comparison_dir not in seen:
                seen.append(job.comparison_dir)
        return seen
