"""The jobs of a comparison, as typed records: what each run of a comparison is.

A comparison (``comparison:`` in an experiment file) is a list of :class:`Job` s, one per
(pair, seed, baseline, mode), each with its own experiment config. :func:`comparison_jobs`
makes the list; it is the one place where a job's folder name is made, and nothing reads a
folder name back: every run folder of a comparison holds ``job.json`` (:func:`write_job`),
the job's record, written by the engine when the run begins, and the runs list, the studio's
queue and the comparison's table read that record (:func:`read_job`).

This module imports no torch.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.config import ExperimentConfig
from engine.runfolder import atomic_write

#: the most students trained together in lockstep (each extra student costs its weights, gradients
#: and momentum in memory; the studio's plots overlay up to eight runs): a larger group of one
#: pair and seed trains in several groups, in order (the later ones load its teacher and heads)
MAX_STUDENTS = 8

#: the job record in a comparison's run folder
JOB_FILE = "job.json"
JOB_RECORD_VERSION = 1

#: where RepDistiller's fetch_pretrained_teachers.sh puts each teacher (save/models/<arch>_vanilla/...)
REPDISTILLER_TEACHER = "{arch}_vanilla/ckpt_epoch_240.pth"


@dataclass
class Job:
    """One run of a comparison: its place in the comparison and its experiment."""

    folder: str  # the run folder's name inside the comparison folder (for people; never parsed)
    comparison: str  # the comparison's name (its experiment's ``name``)
    teacher: str | None  # the pair: teacher architecture (the configured one, even for the student alone)
    student: str
    seed: int
    baseline: str  # a distiller name; "none" is the student trained alone
    mode: str  # MGD mode: off, granularity, stable
    config: ExperimentConfig | None = field(default=None, repr=False)

    @property
    def pair(self) -> tuple[str | None, str]:
        return self.teacher, self.student

    @property
    def group(self) -> tuple[str | None, str, int]:
        """Jobs with the same group train together (their students in lockstep): one pair, one seed."""
        return self.teacher, self.student, self.seed

    @property
    def label(self) -> str:
        """How people see the job: ``teacher -> student · seed · baseline · mode``."""
        pair = f"{self.teacher} -> {self.student} · " if self.teacher else ""
        return f"{pair}s{self.seed} · {self.baseline} · {self.mode}"

    def record(self, comparison_dir: str | Path | None = None) -> dict[str, Any]:
        """The job's record (what ``job.json`` holds): everything but the config."""
        data = {k: v for k, v in asdict(self).items() if k != "config"}
        data["version"] = JOB_RECORD_VERSION
        if comparison_dir is not None:
            data["comparison_dir"] = str(comparison_dir)
        return data

    @classmethod
    def from_record(cls, data: dict[str, Any], config: ExperimentConfig | None = None) -> "Job":
        return cls(folder=str(data["folder"]), comparison=str(data.get("comparison") or ""),
                   teacher=data.get("teacher"), student=str(data["student"]), seed=int(data["seed"]),
                   baseline=str(data["baseline"]), mode=str(data["mode"]), config=config)


def write_job(run_dir: str | Path, job: Job, comparison_dir: str | Path | None = None) -> None:
    """Record in ``run_dir`` which job of which comparison it is (atomically)."""
    atomic_write(Path(run_dir) / JOB_FILE, json.dumps(job.record(comparison_dir), indent=1))


def read_job(run_dir: str | Path) -> Job | None:
    """The job record of a comparison's run folder, or None (a run of its own, or unreadable)."""
    path = Path(run_dir) / JOB_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != JOB_RECORD_VERSION:
            return None
        return Job.from_record(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def comparison_dir_of(run_dir: str | Path) -> Path | None:
    """The comparison folder a run folder belongs to (from its job record), or None."""
    path = Path(run_dir) / JOB_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    folder = data.get("comparison_dir")
    return Path(folder) if folder and Path(folder).is_dir() else Path(run_dir).parent


def comparison_pairs(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    return [(p.teacher, p.student) for p in cfg.comparison.pairs] or [(cfg.teacher.arch, cfg.student.arch)]


def comparison_jobs(cfg: ExperimentConfig) -> list[Job]:
    """Every job of ``cfg``'s comparison, in the order they run: per pair and seed, the
    student-alone reference first, then each baseline in each mode. Each job's config is the
    experiment with that pair, seed, baseline (with its own defaults) and mode."""
    c = cfg.comparison
    jobs: list[Job] = []
    for teacher, student in comparison_pairs(cfg):
        prefix = f"{teacher}-{student}-" if c.pairs else ""
        for seed in c.seeds:
            kinds = [("none", "off")] if c.student_alone else []
            kinds += [(b, m) for b in c.baselines for m in c.modes if b != "none"]
            for baseline, mode in kinds:
                child = copy.deepcopy(cfg)
                child.comparison = type(cfg.comparison)(baselines=[])
                child.seed = seed
                if (teacher, student) != (cfg.teacher.arch, cfg.student.arch):  # another pair: its own defaults
                    child.teacher.arch, child.student.arch = teacher, student
                    child.teacher.checkpoint = None
                    child.student.schedule.lr = None  # resolved for this student (METHOD.md)
                if c.teachers_dir:
                    child.teacher.checkpoint = str(Path(c.teachers_dir).expanduser()
                                                   / REPDISTILLER_TEACHER.format(arch=teacher))
                if baseline != cfg.distiller.name:  # each baseline with its own defaults
                    child.distiller = type(cfg.distiller)(name=baseline, temperature=cfg.distiller.temperature)
                child.granularity.mode = mode
                child.name = f"{cfg.name}-{prefix}{baseline}-{mode}-s{seed}"
                jobs.append(Job(folder=f"{prefix}s{seed}-{baseline}-{mode}", comparison=cfg.name, teacher=teacher,
                                student=student, seed=seed, baseline=baseline, mode=mode, config=child))
    return jobs


__all__ = ["Job", "JOB_FILE", "write_job", "read_job", "comparison_dir_of", "comparison_jobs", "comparison_pairs", "REPDISTILLER_TEACHER"]
