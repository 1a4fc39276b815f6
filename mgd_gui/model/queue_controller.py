"""The queue's controller, without Qt: which group of queued jobs the window trains next, and
what each run's end means for its job.

What a job does is the engine's (:class:`engine.comparison.Comparison`): skip it when its run
finished (:meth:`Comparison.state`), else run or resume it (:meth:`Comparison.spec`), loading
the teacher and heads the comparison's runs trained before (:meth:`Comparison.reuse`); the
runs of one pair and seed train together (:meth:`RunQueue.next_group`). The window asks
:meth:`QueueController.next_launch` for the next group, hands it to the engine runner, and
tells the controller how each run ended (:meth:`job_ended`, :meth:`group_ended`,
:meth:`group_failed`). Listeners (``listener(comparison_dir or None)``) hear of every change,
with the comparison whose table may have changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mgd_gui.model.queue import QueueJob, RunQueue
from mgd_gui.run.record import RunRecord

Log = Callable[..., None]  # log(text, level="info")


@dataclass
class Launch:
    """A group of queued jobs to train together now."""

    jobs: list[tuple[QueueJob, Any]]  # each queued job with its engine.driver.RunSpec
    reuse: Any  # the comparison's teacher and heads reuse (engine.compare.TeacherReuse)
    records: dict[str, RunRecord]  # the runs' records, by job id (a resumed run's with its past)
    text: str  # what the log says

    @property
    def specs(self) -> list:
        return [spec for _, spec in self.jobs]


def comparison_folder(cfg: Any, runs_root: Path) -> Path:
    """Where the studio puts a comparison: under the runs folder, so its runs are listed (a fixed
    name: the same command continues an interrupted comparison)."""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in (cfg.name or "experiment"))
    return Path(runs_root) / f"comparison-{name}"


class QueueController:
    def __init__(self, queue: RunQueue, log: Log | None = None):
        self.queue = queue
        self.log: Log = log or (lambda *args, **kwargs: None)
        self.running: list[str] = []  # the ids of the queued jobs training now (together)
        self.cancelled: set[str] = set()  # running jobs the user cancelled: not run again
        self.cancelling = False  # the group is stopping because of a cancel: the queue goes on
        self.paused_run = False  # the group training now is paused
        self.listeners: list[Callable[[str | None], None]] = []

    def _changed(self, comparison_dir: str | None = None) -> None:
        for listener in list(self.listeners):
            listener(comparison_dir)

    # -- the user's requests -----------------------------------------------------------------
    def add_comparison(self, cfg: Any, runs_root: Path) -> tuple[list[QueueJob], Path]:
        """Queue every run of ``cfg``'s comparison, in its folder under ``runs_root`` (another
        comparison of the same name gets a folder of its own; the same one continues). Raises
        what :meth:`RunQueue.add_comparison` raises."""
        from engine.config import load_config, to_dict

        folder = base = comparison_folder(cfg, runs_root)
        n = 1
        while (folder / "config.yaml").is_file() and to_dict(load_config(folder / "config.yaml")) != to_dict(cfg):
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        jobs = self.queue.add_comparison(cfg, folder)
        pending = sum(j.state == "pending" for j in jobs)
        self.log(f"Queued the comparison {cfg.name!r}: {pending} runs to train"
                 + (f", {len(jobs) - pending} finished before" if len(jobs) > pending else "") + f", into {folder}")
        self._changed()
        return jobs, folder

    def start(self) -> bool:
        """Let the queue run (True when there is something to run)."""
        if not self.queue.pending():
            return False
        self.queue.set_state("running")
        self._changed()
        return True

    def pause(self) -> bool:
        if self.queue.state != "running":
            return False
        self.queue.set_state("paused")
        self.log("Queue paused: the current run finishes; no other starts until Start")
        self._changed()
        return True

    def keep_paused(self) -> None:
        """At launch, with jobs waiting: the user keeps the queue paused."""
        self.queue.set_state("paused")
        self.log(f"The queue is paused with {len(self.queue.pending())} runs waiting: press Resume in the Queue panel")
        self._changed()

    def cancel(self, job_ids: list[str]) -> list[str]:
        """Cancel jobs: waiting ones at once; those training now are returned (the window stops
        their group: the cancelled runs are not run again, the others resume next)."""
        for job in self.queue.cancel([i for i in job_ids if i not in self.running]):
            self.log(f"Queue: cancelled {job.label}")
        running = [i for i in job_ids if i in self.running]
        if running:
            self.cancelled.update(running)
            self.cancelling = True
            if len(self.running) > len(running):
                self.log(f"Cancelling {len(running)} of {len(self.running)} runs training together: the group "
                         "stops; the others resume from their checkpoints next")
        self._changed()
        return running

    def set_paused(self, paused: bool) -> None:
        if self.running and paused != self.paused_run:
            self.paused_run = paused
            self._changed()

    # -- the next group --------------------------------------------------------------------
    def next_launch(self) -> Launch | None:
        """The next group to train, its jobs marked running; None when the queue is not running or
        nothing is left (the queue is then idle, and the log says how it ended)."""
        from engine.comparison import FINISHED, Comparison
        from engine.errors import MGDError
        from engine.runs import read_metrics

        if self.queue.state != "running":
            return None
        while True:
            group = self.queue.next_group()
            if not group:
                counts = self.queue.counts()
                self.queue.set_state("idle")
                self.log(f"Queue finished: {counts['done']} done, {counts['failed']} failed, "
                         f"{counts['cancelled']} cancelled")
                self._changed()
                return None
            try:
                comparison = Comparison.open(group[0].comparison_dir)
            except (OSError, MGDError) as exc:
                for queued in group:
                    self.queue.mark(queued, "failed", f"its comparison cannot be read: {exc}")
                continue
            jobs = []
            for queued in group:
                job = comparison.job(queued.folder)
                if job is None:
                    self.queue.mark(queued, "failed", f"no longer a job of the comparison in {comparison.folder}")
                elif comparison.state(job) == FINISHED:
                    result = (comparison.summary(job).get("student") or {}).get("best_acc")
                    self.queue.mark(queued, "done", "finished before", result)
                else:
                    jobs.append((queued, comparison.spec(job, tag=queued.id)))
            if jobs:
                break
        records = {}
        for queued, spec in jobs:
            self.queue.mark(queued, "running", "resumed from its checkpoint" if spec.resume else "")
            record = RunRecord.from_events(read_metrics(queued.run_dir), queued.run_dir, queued.label) \
                if spec.resume else RunRecord(label=queued.label)
            record.status = "running"
            records[queued.id] = record
        self.running = [queued.id for queued, _ in jobs]
        self.cancelled.clear()
        self.cancelling = False
        self.paused_run = False
        numbers = [self.queue.jobs.index(queued) + 1 for queued, _ in jobs]
        first = jobs[0][0]
        if len(jobs) == 1:
            text = (f"Queue: run {numbers[0]}/{len(self.queue.jobs)}, {first.label}"
                    + (" (resumed)" if jobs[0][1].resume else ""))
        else:
            text = (f"Queue: runs {', '.join(map(str, numbers))} of {len(self.queue.jobs)} together "
                    f"({first.comparison} · {first.teacher} -> {first.student} · seed {first.seed}): "
                    f"{', '.join(queued.folder for queued, _ in jobs)}; one teacher pass per batch feeds their "
                    "students")
        self._changed()
        return Launch(jobs, comparison.reuse(), records, text)

    # -- how runs ended ----------------------------------------------------------------------
    def job_ended(self, job_id: str, summary: dict, *, closing: bool = False) -> None:
        """A queued job's run ended with ``summary`` (its status; empty: never begun)."""
        status = summary.get("status")
        if status == "finished":
            self._mark(job_id, "done", "", (summary.get("student") or {}).get("best_acc"), closing)
        elif status == "failed":
            self._mark(job_id, "failed", f"{summary.get('failed_in')} stage: {summary.get('error')}", None, closing)
        elif status:
            self._mark(job_id, "pending", f"stopped in the {summary.get('stopped_in', '?')} stage; "
                                          "resumes from its checkpoint", None, closing)
        else:
            self._mark(job_id, "pending", "not begun: its group was stopped first", None, closing)

    def group_ended(self, results: list, *, closing: bool = False) -> None:
        """The group ended; its jobs that told no end of their own were never begun."""
        ended = dict(results)
        for job_id in list(self.running):
            self.job_ended(job_id, ended.get(job_id) or {}, closing=closing)
        self.cancelling = False

    def group_failed(self, info: dict, *, closing: bool = False) -> None:
        """The group failed as a whole: each of its jobs still training failed with it (the queue
        goes on; the failure stays in the Queue panel and the log)."""
        for job_id in list(self.running):
            self._mark(job_id, "failed", f"{info.get('stage')} stage: {info.get('message')}", None, closing)
        self.cancelling = False

    def finished_outside(self, run_dir: Path, summary: dict) -> None:
        """A queued job's run finished outside the queue (resumed from the Runs panel): it is done."""
        job = next((j for j in self.queue.jobs if j.run_dir == Path(run_dir) and j.state != "running"), None)
        if job is None or job.state == "done":
            return
        self.queue.mark(job, "done", "finished (resumed from the Runs panel)",
                        (summary.get("student") or {}).get("best_acc"))
        self._changed(job.comparison_dir)

    def _mark(self, job_id: str, state: str, message: str, result: float | None, closing: bool) -> None:
        if job_id in self.running:
            self.running.remove(job_id)
        if not self.running:
            self.paused_run = False
        job = self.queue.job(job_id)
        if job is None:
            return
        if state == "pending" and job_id in self.cancelled:
            state, message = "cancelled", "cancelled while running; its checkpoint is kept"
        elif state == "pending" and not closing and not self.cancelling and self.queue.state == "running":
            self.queue.set_state("paused")  # the user stopped the run: the queue waits too
            self.log("Queue paused: the stopped runs resume from their checkpoints when the queue starts again")
        self.cancelled.discard(job_id)
        self.queue.mark(job, state, message, result)
        self._changed(job.comparison_dir)
