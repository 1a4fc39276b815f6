"""The plan: what a run will do, checked before the first step, and progress drawn from it."""

from __future__ import annotations

import pytest

from engine.config import set_value
from engine.errors import ConfigError, InputError
from engine.events import (EpochEnd, Paused, PlanReady, Resumed, RunFailed, StageFinished, StageProgress,
                           StageStarted, StepLosses)
from engine.plan import GroupProgress, Plan, PlanProgress, StagePlan
from engine.run import plan_experiment
from tests.engine.conftest import tiny_config


def _plan(*stages: StagePlan) -> dict:
    return Plan(name="p", run_dir=None, device="cpu", precision="fp32", channels_last=False,
                data={"dataset": "demo", "classes": 10, "train_size": 100, "test_size": 10, "input_shape": [1, 8, 8],
                      "batch_size": 10}, models={}, distiller={}, stages=list(stages), export={}).to_dict()


def test_progress_weighs_every_stage_and_leaves_pauses_out_of_the_eta():
    now = [0.0]
    plan = _plan(StagePlan("teacher", "train", units=20, epochs=2, steps_per_epoch=10),
                 StagePlan("student", "train", units=20, epochs=2, steps_per_epoch=10),
                 StagePlan("evaluate", "evaluate", units=20),  # 20 batches x 0.35 = 7 step-equivalents
                 StagePlan("export", "export", units=2))  # 2 x 15 = 30
    p = PlanProgress(clock=lambda: now[0])
    p.update(PlanReady(plan))
    assert p.total_cost() == pytest.approx(20 + 20 + 7 + 30) and p.fraction() == 0.0
    assert p.text() == "Starting…"
    p.update(StageStarted("teacher", 2, 10))
    now[0] = 10.0
    p.update(StepLosses("teacher", 1, 10, 10, {}, 0.1))  # 10 steps in 10 s
    assert p.done_cost() == 10 and p.eta() == pytest.approx(67.0)
    p.update(Paused("teacher"))
    now[0] = 100.0  # 90 s paused
    p.update(Resumed("teacher"))
    now[0] = 110.0
    p.update(EpochEnd("teacher", 2, 2, {}, 50.0, 50.0, 0.1, 1.0))
    assert p.eta() == pytest.approx(57.0)  # 20 units in 20 active seconds, 57 to go
    assert p.text() == "Teacher (1/4) · epoch 2/2 · step 10/10 · ETA 0:57"
    p.update(StageFinished("teacher", 20.0, {}))
    p.update(StageStarted("student", 2, 10))
    assert p.done_cost() == 20
    p.update(StageFinished("student", 20.0, {}))
    p.update(StageStarted("evaluate", 1, 20))
    p.update(StageProgress("evaluate", 10, 20))
    assert p.done_cost() == pytest.approx(43.5) and p.text().startswith("Evaluation (3/4) · 10/20")
    p.update(StageFinished("evaluate", 1.0, {}))
    p.update(StageFinished("export", 1.0, {}))
    assert p.fraction() == 1.0


def test_progress_of_a_resumed_run_starts_where_it_stands():
    plan = _plan(StagePlan("teacher", "train", units=20, epochs=2, steps_per_epoch=10, done=True),
                 StagePlan("student", "train", units=20, epochs=2, steps_per_epoch=10))
    p = PlanProgress(clock=lambda: 0.0)
    p.update(PlanReady(plan).to_dict())  # the dict form, as read back from metrics.jsonl
    assert p.fraction() == 0.5
    p.update(StageStarted("student", 2, 10, start_epoch=1).to_dict())
    assert p.fraction() == 0.75


def test_group_progress_counts_every_run_and_guesses_the_unannounced_ones():
    now = [0.0]

    def tagged(job, event):
        return {**event.to_dict(), "job": job}

    first = _plan(StagePlan("teacher", "train", units=40, epochs=2, steps_per_epoch=20),
                  StagePlan("student", "train", units=20, epochs=2, steps_per_epoch=10))
    later = _plan(StagePlan("teacher", "load", units=1), StagePlan("student", "train", units=20, epochs=2,
                                                                      steps_per_epoch=10))
    g = GroupProgress(["a", "b", "c"], clock=lambda: now[0])
    assert g.fraction() == 0.0 and g.text() == "3 runs together · Planning…"
    g.update(tagged("a", PlanReady(first)))
    # b and c have no plan yet: each counts as a's plan without its teacher (20), so 60 + 20 + 20
    assert g.total_cost() == pytest.approx(100.0)
    g.update(tagged("a", StageStarted("teacher", 2, 20)))
    now[0] = 40.0
    g.update(tagged("a", EpochEnd("teacher", 2, 2, {}, 50.0, 50.0, 0.1, 1.0)))  # 40 units in 40 s
    assert g.done_cost() == 40 and g.eta() == pytest.approx(60.0)
    assert g.text() == "3 runs together · Teacher (1/2) · epoch 2/2 · step 20/20 · ETA 1:00"
    g.update(tagged("b", PlanReady(later)))
    g.update(tagged("c", PlanReady(later)))
    assert g.total_cost() == pytest.approx(60 + 21 + 21)
    g.update(tagged("b", Paused("student")))
    now[0] = 1000.0  # paused: not counted
    g.update(tagged("b", Resumed("student")))
    g.update(tagged("c", RunFailed("c", "student", "nan", "nan")))
    assert "c" in g.ended and g.done_cost() == pytest.approx(40 + 21)  # a failed run counts as done
    assert g.active_seconds == pytest.approx(40.0)
    assert g.text().startswith("3 runs together (1 ended) · Teacher")
    g.update({**StageStarted("student", 2, 10).to_dict(), "job": "elsewhere"})  # not of this group: ignored
    assert g.latest == "a"


def test_plan_of_the_demo_lists_every_stage_without_training(tmp_path):
    plan = plan_experiment(tiny_config(), tmp_path / "never")
    assert [(s.name, s.action) for s in plan.stages] == [
        ("teacher", "train"), ("heads", "train"), ("student", "train"), ("evaluate", "evaluate"), ("export", "export")]
    teacher, heads, student = plan.stages[:3]
    assert (teacher.epochs, teacher.steps_per_epoch) == (2, 23)  # 1,442 images in batches of 64
    assert heads.trains == ["teacher_heads"] and heads.frozen == ["teacher"]
    assert student.trains == ["student", "student_heads (encoders)"]
    assert student.frozen == ["teacher", "teacher_heads"]
    assert [teacher.seed, heads.seed, student.seed] == [0, 1, 2]
    assert plan.models["student"]["params"] == plan.models["teacher"]["params"] > 70_000  # resnet8 twice
    assert plan.data["input_shape"] == [1, 8, 8]
    assert not (tmp_path / "never").exists()  # planning writes nothing
    text = plan.describe()
    assert "heads     1 epochs x 23 steps; trains teacher_heads; frozen teacher" in text


def test_plan_follows_the_config():
    off = plan_experiment(set_value(tiny_config(), "granularity.mode", "off"))
    assert "heads" not in [s.name for s in off.stages]
    alone = plan_experiment(tiny_config(**{"distiller.name": "none", "granularity.mode": "off",
                                           "export.enabled": False}))
    assert [s.name for s in alone.stages] == ["student", "evaluate"]
    ab = plan_experiment(tiny_config(**{"distiller.name": "ab", "distiller.options": {"init_epochs": 3}}))
    pre = ab.stage("pretrain")
    assert pre is not None and pre.epochs == 3 and pre.schedule["milestones"] == []
    assert ab.distiller["options"] == {"init_epochs": 3, "margin": 1.0, "main_stage_loss": False}


@pytest.mark.parametrize("settings, field", [
    ({"distiller.options": {"foo": 1}}, "distiller.options.foo"),
    ({"distiller.name": "fitnet", "distiller.options": {"hint_layer": 9}}, "distiller.options.hint_layer"),
    ({"distiller.name": "at", "distiller.options": {"p": -1}}, "distiller.options.p"),
])
def test_bad_distiller_options_are_refused_at_plan_time(settings, field):
    with pytest.raises(ConfigError) as err:
        plan_experiment(tiny_config(**settings))
    assert err.value.field == field


def test_unwritable_folders_are_refused_at_plan_time(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(InputError, match="export.dir"):
        plan_experiment(tiny_config(**{"export.dir": str(a_file / "out")}))
    with pytest.raises(InputError, match="--out"):
        plan_experiment(tiny_config(), a_file / "run")


def test_plan_estimates_the_run_time_from_timed_passes():
    from engine.estimate import estimate_stages

    plan = plan_experiment(tiny_config(), estimate=True)
    est = plan.estimate
    assert set(est) == {"teacher", "heads", "student", "evaluate", "export", "total"}
    assert est["total"] == pytest.approx(sum(v for k, v in est.items() if k != "total"))
    assert all(v > 0 for v in est.values())
    assert "expected run time on this machine: about" in plan.describe()
    # twice the epochs, twice the teacher's time (the timings are cached: the same figures)
    longer = plan_experiment(tiny_config(**{"teacher.schedule.epochs": 4}))
    import torch
    assert estimate_stages(longer, torch.device("cpu"))["teacher"] == pytest.approx(2 * est["teacher"])


def test_a_comparison_plan_counts_each_teacher_once_per_seed(tmp_path, capsys):
    from engine.cli import main
    from engine.config import save_config
    from engine.estimate import estimate_comparison

    cfg = tiny_config(**{"comparison.baselines": ["kd"], "comparison.modes": ["off", "stable"],
                         "comparison.seeds": [0, 1]})
    est = estimate_comparison(cfg)
    runs = {j["run"]: j["seconds"] for j in est["jobs"]}
    assert list(runs) == ["s0-none-off", "s0-kd-off", "s0-kd-stable", "s1-none-off", "s1-kd-off", "s1-kd-stable"]
    assert runs["s0-kd-off"] == pytest.approx(runs["s1-kd-off"])  # the seed changes no stage's cost
    assert runs["s0-none-off"] < runs["s0-kd-stable"] < runs["s0-kd-off"]  # kd-off trains the teacher
    assert est["total"] == pytest.approx(sum(runs.values()))
    path = tmp_path / "cmp.yaml"
    save_config(cfg, path)
    assert main([str(path), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "6 runs" in out and "expected run time on this machine" in out and not (tmp_path / "runs").exists()
