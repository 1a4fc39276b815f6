"""A comparison's folder tells what each run is (job records), and its table follows its runs."""

from __future__ import annotations

import pytest

import json

from engine.comparison import Comparison, run_comparison
from engine.compare import comparison_folders
from engine.control import RunControl
from engine.jobs import read_job
from engine.run import run_experiment
from engine.runs import list_runs
from tests.engine.conftest import tiny_config

pytestmark = pytest.mark.e2e  # trains end to end (tiny models, a few steps)

FAST = {"export.enabled": False, "teacher.schedule.epochs": 1, "teacher.schedule.milestones": [],
        "evaluation.noise_levels": [0.0, 0.2], "comparison.student_alone": False}


def test_a_multi_pair_comparison_records_its_jobs_and_lists_its_runs(tmp_path):
    cfg = tiny_config(**FAST, **{"comparison.baselines": ["kd"], "comparison.modes": ["off"],
                                 "granularity.mode": "off",
                                 "comparison.pairs": [{"teacher": "resnet8", "student": "resnet8"},
                                                      {"teacher": "resnet14", "student": "resnet8"}]})
    out = tmp_path / "runs" / "cmp"
    table = run_comparison(cfg, out)
    assert table["complete"]
    folders = comparison_folders(out)
    jobs = [read_job(f) for f in folders]
    assert [(j.teacher, j.student, j.seed, j.baseline, j.mode) for j in jobs] == [
        ("resnet8", "resnet8", 0, "kd", "off"), ("resnet14", "resnet8", 0, "kd", "off")]
    runs = list_runs(tmp_path / "runs")  # the runs panel lists both, under the comparison
    assert sorted(r.job.teacher for r in runs) == ["resnet14", "resnet8"]
    assert all(r.comparison == cfg.name and r.status == "finished" for r in runs)
    markdown = (out / "comparison.md").read_text()
    assert "resnet14 -> resnet8" in markdown and "resnet8 -> resnet8" in markdown
    # a finished run's summary says every stage of its plan is done
    summary = json.loads((folders[0] / "summary.json").read_text())
    assert summary["plan"] and all(s["done"] for s in summary["plan"])


def test_a_comparison_run_resumed_on_its_own_fills_in_the_table(tmp_path):
    cfg = tiny_config(**FAST, **{"comparison.baselines": ["kd"], "comparison.modes": ["off", "stable"]})
    out = tmp_path / "cmp"
    control = RunControl()

    def stop_in_student(event):
        if event.type == "StepLosses" and event.stage == "student":
            control.stop()

    table = run_comparison(cfg, out, subscribers=[stop_in_student], control=control)
    assert not table["complete"]
    assert all(r["status"] != "finished" for r in table["runs"])
    comparison = Comparison.open(out)
    for job in comparison.jobs:  # as the studio's Runs panel resumes a run: alone, not through the comparison
        summary = run_experiment(run_dir=comparison.run_dir(job), resume=True)
        assert summary["status"] == "finished"
    rebuilt = json.loads((out / "comparison.json").read_text())
    assert [r["status"] for r in rebuilt["runs"]] == ["finished", "finished"]
    row = rebuilt["rows"][0]
    assert row["off"]["final"]["n"] == 1 and row["stable"]["final"]["n"] == 1
    # running the comparison again finds everything done and trains nothing
    events = []
    again = run_comparison(cfg, out, subscribers=[events.append])
    assert again["complete"] and not [e for e in events if e.type == "StageStarted"]


def test_each_run_of_a_group_has_its_own_clock(tmp_path):
    """Stage seconds are the run's own (the group's time for the shared student stage), and the
    student-alone run's clock does not count the time it waited for another run's teacher."""
    cfg = tiny_config(**{**FAST, "comparison.student_alone": True, "teacher.schedule.epochs": 2,
                         "student.schedule.epochs": 2, "student.schedule.milestones": [1]},
                      **{"comparison.baselines": ["kd"], "comparison.modes": ["off", "stable"]})
    out = tmp_path / "cmp"
    run_comparison(cfg, out)
    summaries, metrics = {}, {}
    for folder in comparison_folders(out):
        summaries[folder.name] = json.loads((folder / "summary.json").read_text())
        metrics[folder.name] = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    teacher_seconds = summaries["s0-kd-off"]["stages"]["teacher"]["seconds"]
    for name, summary in summaries.items():
        epochs = [e["seconds"] for e in metrics[name] if e["event"] == "EpochEnd" and e["stage"] == "student"]
        student = summary["stages"]["student"]["seconds"]
        assert summary["lockstep"]["students"] == 3
        assert 0.9 * sum(epochs) <= student <= 1.5 * sum(epochs) + 1.0, name  # not 0 as it was
        assert summary["total_seconds"] >= sum(s["seconds"] for s in summary["stages"].values()) - 0.05
    alone = metrics["s0-none-off"]
    first_step = next(e for e in alone if e["event"] == "StepLosses")
    # it started first but its clock ran only for its own work: not the other run's teacher
    assert first_step["elapsed"] < 0.5 * teacher_seconds + 0.5
    assert summaries["s0-none-off"]["total_seconds"] < summaries["s0-kd-off"]["total_seconds"]


def test_a_run_that_loaded_another_runs_heads_is_inspected_with_them(tmp_path):
    from engine.inspect.load import load_run_models

    cfg = tiny_config(**FAST, **{"comparison.baselines": ["kd"], "comparison.modes": ["granularity", "stable"]})
    out = tmp_path / "cmp"
    assert run_comparison(cfg, out)["complete"]
    assert not (out / "s0-kd-stable" / "checkpoints" / "heads.pt").exists()  # it loaded the granularity run's
    trained = load_run_models(out / "s0-kd-granularity")
    borrowed = load_run_models(out / "s0-kd-stable")
    assert borrowed.teacher_heads is not None  # the granularity columns are not dropped
    for a, b in zip(trained.teacher_heads.state_dict().values(), borrowed.teacher_heads.state_dict().values()):
        assert (a == b).all()
