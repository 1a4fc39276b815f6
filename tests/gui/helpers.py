"""Helpers shared by the GUI tests."""

from __future__ import annotations

TINY = {  # a run of a few seconds on 2 CPU cores
    "teacher.arch": "resnet8",
    "student.arch": "resnet8",
    "teacher.schedule.epochs": 1,
    "teacher.schedule.milestones": [],  # the preset's milestones lie past one epoch
    "granularity.schedule.epochs": 1,
    "granularity.schedule.milestones": [],
    "student.schedule.epochs": 1,
    "student.schedule.milestones": [],
    "export.enabled": False,
}


def apply(window, settings: dict) -> None:
    for key, value in settings.items():
        window.form.set_field(key, value)


def wait_idle(qtbot, window, timeout: float = 300.0) -> None:
    """Wait for the run to end (generous: a shared 2-core machine can be slow)."""
    qtbot.waitUntil(lambda: not window.runner.active and window.state == "idle", timeout=int(timeout * 1000))
