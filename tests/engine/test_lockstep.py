"""Students in lockstep: one teacher pass per batch, every student as it would be alone."""

from __future__ import annotations

import pytest

import json

import torch

from engine.run import RunSpec, run_experiment, run_group
from engine.runfolder import load_checkpoint
from tests.engine.conftest import tiny_config

pytestmark = pytest.mark.e2e  # trains end to end (tiny models, a few steps)

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


def run_lockstep(jobs, subscribers_for=lambda job: [], control=None):
    """The jobs ((config, folder, resume)) as one group of the driver."""
    return run_group([RunSpec(cfg, d, resume=resume, subscribers=subscribers_for((cfg, d, resume)))
                      for cfg, d, resume in jobs], control=control)


def _student(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "student.pt")["modules"]["student"]


def test_students_in_lockstep_end_bit_identical_to_their_runs_alone(tmp_path):
    configs = _children(tmp_path)
    for i, cfg in enumerate(configs):
        run_experiment(cfg, run_dir=tmp_path / f"alone{i}")
    passes = {"n": 0}
    from engine.teacher_pass import TeacherPass

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



def test_a_failing_student_stops_alone_and_a_stop_resumes_in_lockstep(tmp_path, monkeypatch):
    from engine import stages
    from engine.control import RunControl

    configs = _children(tmp_path)
    alone = tmp_path / "alone0"
    run_experiment(configs[0], run_dir=alone)

    real_step = stages.StudentTask.step

    def diverging(self, x, y, idx):  # the CRD + MGD granularity student's loss becomes NaN
        result = real_step(self, x, y, idx)
        if self.mode == "granularity":
            result.total = result.total * float("nan")
        return result

    monkeypatch.setattr(stages.StudentTask, "step", diverging)
    control = RunControl()
    steps = {"n": 0}

    def stop_in_epoch_two(event):
        if event.type == "StepLosses" and event.stage == "student" and event.epoch == 2:
            steps["n"] += 1
            if steps["n"] == 3:
                control.stop()

    jobs = [(cfg, tmp_path / f"lock{i}", False) for i, cfg in enumerate(configs)]
    first = run_lockstep(jobs, subscribers_for=lambda job: [stop_in_epoch_two], control=control)
    assert first[2]["status"] == "failed" and "loss became nan" in first[2]["error"]  # the diverging one, alone
    assert [s["status"] for s in first[:2]] == ["stopped", "stopped"]
    last = [load_checkpoint(tmp_path / f"lock{i}" / "checkpoints" / "student_last.pt") for i in range(2)]
    assert {(c["epoch"], c["step"]) for c in last} == {(1, last[0]["step"])} and last[0]["step"] > 0  # together
    monkeypatch.setattr(stages.StudentTask, "step", real_step)
    again = run_lockstep([(None, tmp_path / f"lock{i}", True) for i in range(2)])
    assert [s["status"] for s in again] == ["finished", "finished"] and again[0]["lockstep"]["students"] == 2
    resumed = _student(tmp_path / "lock0")
    reference = _student(alone)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)  # stopped, resumed: still bit-identical


def test_a_job_refused_before_it_begins_fails_alone_and_a_stop_begins_no_further_job(tmp_path):
    from engine.config import set_value
    from engine.control import RunControl

    configs = _children(tmp_path)[:2]
    missing = set_value(configs[0], "teacher.checkpoint", str(tmp_path / "nowhere" / "teacher.pt"))
    jobs = [(configs[0], tmp_path / "a", False), (missing, tmp_path / "b", False), (configs[1], tmp_path / "c", False)]
    events = {job[1]: [] for job in jobs}
    summaries = run_lockstep(jobs, subscribers_for=lambda job: [events[job[1]].append])
    assert [s["status"] for s in summaries] == ["finished", "failed", "finished"]
    assert summaries[1]["failed_in"] == "setup" and "nowhere" in summaries[1]["error"]
    assert summaries[1]["field"] == "teacher.checkpoint" and summaries[1]["kind"] == "input"
    failed = [e for e in events[tmp_path / "b"] if e.type == "RunFailed"]
    assert len(failed) == 1 and failed[0].stage == "setup" and failed[0].kind == "input"
    assert not (tmp_path / "b").exists()  # refused before it began: no folder
    assert summaries[0]["lockstep"]["students"] == 2  # the other two still trained together

    # a stop requested while the first job trains its teacher: the second is never begun
    control = RunControl()

    def stop_at_first_step(event):
        if event.type == "StepLosses":
            control.stop()

    own_teacher = tiny_config(**{"export.enabled": False})
    fresh = [(own_teacher, tmp_path / "d", False), (configs[1], tmp_path / "e", False)]
    stopped = run_lockstep(fresh, subscribers_for=lambda job: [stop_at_first_step], control=control)
    assert [s["status"] for s in stopped] == ["stopped"] and stopped[0]["stopped_in"] == "teacher"
    assert not (tmp_path / "e").exists()


def test_the_student_alone_trains_beside_the_distilled_students(tmp_path):
    from engine.config import set_value

    kd = _children(tmp_path)[0]
    alone_cfg = set_value(set_value(kd, "distiller.name", "none"), "granularity.mode", "off")
    alone_cfg = set_value(alone_cfg, "granularity.checkpoint", None)
    run_experiment(alone_cfg, run_dir=tmp_path / "alone")
    summaries = run_lockstep([(kd, tmp_path / "kd", False), (alone_cfg, tmp_path / "none", False)])
    assert [s["lockstep"]["students"] for s in summaries] == [2, 2]  # one group: the same batches
    reference, together = _student(tmp_path / "alone"), _student(tmp_path / "none")
    assert all(torch.equal(reference[k], together[k]) for k in reference)
