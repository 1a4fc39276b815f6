"""The plan: what a run will do, checked before the first step."""

from __future__ import annotations

import pytest

from engine.config import set_value
from engine.errors import ConfigError, InputError
from engine.run import plan_experiment
from tests.engine.conftest import tiny_config


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
    from engine.comparison import estimate_comparison

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
