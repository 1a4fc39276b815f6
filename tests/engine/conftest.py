"""Shared helpers of the engine tests."""

from __future__ import annotations

from pathlib import Path

from engine.config import ExperimentConfig, load_config, set_value

DEMO = Path(__file__).resolve().parents[2] / "resources" / "presets" / "demo.yaml"


def tiny_config(**settings) -> ExperimentConfig:
    """The demo preset shrunk to seconds: resnet8 teacher and student, one or two epochs."""
    cfg = load_config(DEMO)
    base = {
        "teacher.arch": "resnet8",
        "student.arch": "resnet8",
        "teacher.schedule.epochs": 2,
        "teacher.schedule.milestones": [1],
        "granularity.schedule.epochs": 1,
        "granularity.schedule.milestones": [1],
        "student.schedule.epochs": 1,
        "student.schedule.milestones": [1],
        "export.formats": ["weights"],
        "evaluation.noise_levels": [0.0, 0.05, 0.1, 0.2, 0.3, 0.5],
    }
    base.update(settings)
    for stage in ("teacher", "granularity", "student"):  # a milestone at or after the end is refused
        key, epochs = f"{stage}.schedule.milestones", base[f"{stage}.schedule.epochs"]
        if key not in settings:
            base[key] = [m for m in base[key] if m < epochs]
    for key, value in base.items():
        cfg = set_value(cfg, key, value)
    return cfg


import pytest  # noqa: E402


@pytest.fixture
def nan_in_teacher(monkeypatch):
    """Make the teacher's loss NaN from its fifth step on (a diverging run, deterministically)."""
    from engine import stages

    original = stages.TeacherTask.step
    calls = {"n": 0}

    def step(self, x, y, idx):
        result = original(self, x, y, idx)
        calls["n"] += 1
        if calls["n"] >= 5:
            result.total = result.total * float("nan")
        return result

    monkeypatch.setattr(stages.TeacherTask, "step", step)
