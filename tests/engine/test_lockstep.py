"""Students in lockstep: one teacher pass per batch, every student as it would be alone."""

from __future__ import annotations

import json

import torch

from engine.lockstep import run_lockstep
from engine.run import run_experiment
from engine.runfolder import load_checkpoint
from tests.engine.conftest import tiny_config

STUDENTS = [("kd", "stable"), ("crd", "off"), ("crd", "granularity")]  # CRD draws at random every step


def _children(tmp_path):
    """A first run trains the teacher and its heads; the students then load both, as a comparison does."""
    base = {"student.schedule.epochs": 2, "student.schedule.milestones": [1], "export.enabled": False,
            "evaluation.noise_levels": [0.0, 0.2]}
    run_experiment(tiny_config(**{**base, "student.schedule.epochs": 0}), run_dir=tmp_path / "teacher")
    shared = {**base, "teacher.checkpoint": str(tmp_path / "teacher" / "checkpoints" / "teacher.pt")}
    heads = str(tmp_path / "teacher" / "checkpoints" / "heads.pt")
    return [tiny_config(**shared, **{"distiller.name": name, "granularity.mode": mode,
                                     **({"granularity.checkpoint": heads} if mode != "off" else {})})
            for name, mode in STUDENTS]


def _student(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "student.pt")["modules"]["student"]


def test_students_in_lockstep_end_bit_identical_to_their_runs_alone(tmp_path):
    configs = _children(tmp_path)
    for i, cfg in enumerate(configs):
        run_experiment(cfg, run_dir=tmp_path / f"alone{i}")
    passes = {"n": 0}
    from engine.lockstep import TeacherPass

    real = TeacherPass.teacher

    def counted(self, model, preact):
        if preact not in self._teacher:
            passes["n"] += 1
        return real(self, model, preact)

    TeacherPass.teacher = counted
    jobs = [(cfg, tmp_path / f"lock{i}", False) for i, cfg in enumerate(configs)]
    events = {job[1]: [] for job in jobs}
    try:
        summaries = run_lockstep(jobs, subscribers_for=lambda job: [events[job[1]].append])
    finally:
        TeacherPass.teacher = real
    for i in range(len(configs)):
        assert summaries[i]["status"] == "finished"
        alone, together = _student(tmp_path / f"alone{i}"), _student(tmp_path / f"lock{i}")
        assert all(torch.equal(alone[k], together[k]) for k in alone), STUDENTS[i]
        assert summaries[i]["student"]["best_acc"] == json.loads(
            (tmp_path / f"alone{i}" / "summary.json").read_text())["student"]["best_acc"]
        assert summaries[i]["lockstep"]["students"] == 3 and summaries[i]["lockstep"][
            "memory_per_extra_student_mib"] > 0
    steps = 2 * 23  # two epochs of the demo: one teacher pass per batch for the three students
    assert passes["n"] == steps
    # each run has its own events and folder: the student stage's epochs are in every metrics log
    for i in range(len(configs)):
        epochs = [e for e in events[tmp_path / f"lock{i}"] if e.type == "EpochEnd" and e.stage == "student"]
        assert [e.epoch for e in epochs] == [1, 2]

