"""Two tiny finished runs on the demo digits for the inspection tests (made once per test process).

``mgd``: KD + MGD (stable), resnet8 teacher and student, with its own teacher.
``kd``: plain KD (MGD off), same seed, whose teacher is loaded from the first run's teacher.pt
(``teacher.checkpoint``): the path by which a run holds no teacher.pt of its own.
"""

from __future__ import annotations

from pathlib import Path

_RUNS: dict[str, Path] = {}

TINY = {
    "teacher.arch": "resnet8",
    "student.arch": "resnet8",
    "teacher.schedule.epochs": 3,
    "teacher.schedule.milestones": [2],
    "granularity.schedule.epochs": 2,
    "granularity.schedule.milestones": [1],
    "student.schedule.epochs": 2,
    "student.schedule.milestones": [1],
    "export.enabled": False,
    "evaluation.noise_levels": [0.0],
    "device": "cpu",
}


def inspect_runs(tmp_path_factory) -> dict[str, Path]:
    if _RUNS:
        return dict(_RUNS)
    from engine.config import load_config, set_value
    from engine.run import run_experiment

    root = tmp_path_factory.mktemp("inspect-runs")
    demo = Path(__file__).resolve().parents[1] / "resources" / "presets" / "demo.yaml"
    cfg = load_config(demo)
    for key, value in TINY.items():
        cfg = set_value(cfg, key, value)
    run_experiment(set_value(cfg, "name", "kd-mgd"), run_dir=root / "mgd")
    kd = set_value(set_value(set_value(cfg, "name", "kd"), "granularity.mode", "off"),
                   "teacher.checkpoint", str(root / "mgd" / "checkpoints" / "teacher.pt"))
    run_experiment(kd, run_dir=root / "kd")
    _RUNS.update({"mgd": root / "mgd", "kd": root / "kd", "root": root})
    return dict(_RUNS)
