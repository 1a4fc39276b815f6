"""Settings mean what they say: a setting a file leaves out takes the same value whether the
file says nothing of its section, writes part of it, or the change comes through --set;
milestones scale with the epochs when none are given; --print-config shows what a run uses."""

from __future__ import annotations

import pytest
import yaml

from engine.cli import EXIT_INPUT, EXIT_OK, main
from engine.config import (ExperimentConfig, apply_override, dumps_config, load_config, resolve, resolve_valid,
                           save_config, scaled_milestones, to_dict, validation_errors)
from engine.errors import ConfigError

BASE = {"name": "defaults", "data": {"dataset": "demo"}}

# (a partial YAML block, the same change as --set values)
PARTIAL = {
    "heads epochs": ({"granularity": {"schedule": {"epochs": 60}}}, ["granularity.schedule.epochs=60"]),
    "heads epochs 40": ({"granularity": {"schedule": {"epochs": 40}}}, ["granularity.schedule.epochs=40"]),
    "teacher epochs": ({"teacher": {"schedule": {"epochs": 3}}}, ["teacher.schedule.epochs=3"]),
    "student momentum": ({"student": {"schedule": {"momentum": 0.8}}}, ["student.schedule.momentum=0.8"]),
    "mobilenet student": ({"student": {"arch": "MobileNetV2", "schedule": {"epochs": 240}}},
                          ["student.arch=MobileNetV2", "student.schedule.epochs=240"]),
    "shufflenet student": ({"student": {"arch": "ShuffleNetV2", "schedule": {"epochs": 100}}},
                           ["student.arch=ShuffleNetV2", "student.schedule.epochs=100"]),
    "transfer epochs": ({"transfer": {"enabled": True, "schedule": {"epochs": 20}}},
                        ["transfer.enabled=true", "transfer.schedule.epochs=20"]),
    "transfer data": ({"transfer": {"data": {"batch_size": 32}}}, ["transfer.data.batch_size=32"]),
    "empty section": ({"teacher": {"schedule": {}}}, []),
    "null section": ({"granularity": None}, []),
    "distiller temperature": ({"distiller": {"temperature": 2.0}}, ["distiller.temperature=2"]),
}


def _file(tmp_path, data: dict):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("case", list(PARTIAL), ids=list(PARTIAL))
def test_a_partial_block_equals_the_same_change_through_set(tmp_path, case):
    block, assignments = PARTIAL[case]
    from_file = load_config(_file(tmp_path, {**BASE, **block}))
    through_set = load_config(_file(tmp_path, BASE))
    for assignment in assignments:
        through_set = apply_override(through_set, assignment)
    assert to_dict(from_file) == to_dict(through_set)
    assert to_dict(resolve(from_file)) == to_dict(resolve(through_set))


@pytest.mark.parametrize("section", ["teacher", "granularity", "student", "transfer", "data", "distiller"])
def test_a_section_written_in_part_keeps_the_sections_defaults(tmp_path, section):
    """Writing one setting of a section changes that setting only: the rest is the full default."""
    default = to_dict(resolve(load_config(_file(tmp_path, BASE))))
    key = {"data": "batch_size", "distiller": "temperature"}.get(section)
    block = {key: 7} if key else {"schedule": {"weight_decay": 1e-3}}
    partial = to_dict(resolve(load_config(_file(tmp_path, {**BASE, section: block}))))
    if key:
        default[section][key] = 7
    else:
        default[section]["schedule"]["weight_decay"] = 1e-3
    assert partial == default


def test_the_method_defaults_of_each_stage_when_a_file_writes_only_epochs(tmp_path):
    cfg = resolve(load_config(_file(tmp_path, {**BASE, "granularity": {"schedule": {"epochs": 60}},
                                               "student": {"arch": "MobileNetV2", "schedule": {"epochs": 240}},
                                               "teacher": {"schedule": {"epochs": 240}}})))
    g, s, t = cfg.granularity.schedule, cfg.student.schedule, cfg.teacher.schedule
    assert (g.lr, g.milestones) == (0.01, [30, 45])  # METHOD.md: not the generic 0.05, 150/180/210
    assert (s.lr, s.milestones) == (0.01, [150, 180, 210])  # MobileNetV2's lr
    assert (t.lr, t.milestones) == (0.05, [60, 120, 180])


def test_a_fine_tuned_teacher_gets_its_lr_unless_one_is_given(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    cfg = load_config(_file(tmp_path, {**BASE, "teacher": {"weights": str(weights), "schedule": {"epochs": 5}}}))
    assert resolve(cfg).teacher.schedule.lr == 0.01
    assert resolve(apply_override(cfg, "teacher.schedule.lr=0.2")).teacher.schedule.lr == 0.2


@pytest.mark.parametrize("stage,epochs,expected", [
    ("student", 240, [150, 180, 210]), ("student", 120, [75, 90, 105]), ("student", 8, [5, 6, 7]),
    ("student", 3, [2]), ("student", 1, []), ("teacher", 240, [60, 120, 180]), ("teacher", 3, [1, 2]),
    ("granularity", 60, [30, 45]), ("granularity", 4, [2, 3]), ("transfer", 50, [20, 25]), ("transfer", 10, [4, 5]),
])
def test_milestones_scale_with_the_epochs(stage, epochs, expected):
    assert scaled_milestones(stage, epochs) == expected
    cfg = apply_override(ExperimentConfig(), f"{stage}.schedule.epochs={epochs}")
    assert getattr(resolve(cfg), stage).schedule.milestones == expected
    assert all(1 <= m < epochs for m in expected)


def test_scaled_milestones_are_the_same_through_a_file_set_and_a_null(tmp_path):
    from_file = resolve(load_config(_file(tmp_path, {**BASE, "student": {"schedule": {"epochs": 40}}})))
    through_set = resolve(apply_override(load_config(_file(tmp_path, BASE)), "student.schedule.epochs=40"))
    explicit_null = resolve(load_config(_file(tmp_path, {**BASE, "student": {"schedule": {"epochs": 40,
                                                                                         "milestones": None}}})))
    assert from_file.student.schedule.milestones == through_set.student.schedule.milestones == \
        explicit_null.student.schedule.milestones == [25, 30, 35]


@pytest.mark.parametrize("milestones,epochs", [([150, 180, 210], 60), ([30, 60], 60), ([3], 3), ([1], 1)])
def test_explicit_milestones_at_or_past_the_end_are_refused_with_the_field(tmp_path, milestones, epochs, capsys):
    block = {"granularity": {"schedule": {"epochs": epochs, "milestones": milestones}}}
    cfg = load_config(_file(tmp_path, {**BASE, **block}))
    assert [e.field for e in validation_errors(cfg)] == ["granularity.schedule.milestones"]
    assert main([str(_file(tmp_path, {**BASE, **block})), "--print-config"]) == EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "granularity.schedule.milestones" in err
    through_set = apply_override(ExperimentConfig(), "student.schedule.milestones=[50, 100]")
    with pytest.raises(ConfigError, match="student.schedule.milestones"):
        resolve_valid(apply_override(through_set, "student.schedule.epochs=100"))


def test_explicit_milestones_below_the_end_are_kept():
    cfg = apply_override(apply_override(ExperimentConfig(), "teacher.schedule.epochs=10"),
                         "teacher.schedule.milestones=[4, 9]")
    assert resolve_valid(cfg).teacher.schedule.milestones == [4, 9]


def test_print_config_shows_what_the_run_uses(tmp_path, capsys):
    from engine.run import prepare_run

    path = _file(tmp_path, {**BASE, "student": {"arch": "MobileNetV2", "schedule": {"epochs": 12}},
                            "granularity": {"schedule": {"epochs": 6}}})
    assert main([str(path), "--set", "teacher.schedule.epochs=4", "--print-config"]) == EXIT_OK
    printed = capsys.readouterr().out
    shown = yaml.safe_load(printed)
    assert shown["student"]["schedule"]["lr"] == 0.01 and shown["student"]["schedule"]["milestones"] == [8, 9, 11]
    assert shown["granularity"]["schedule"] == {**shown["granularity"]["schedule"], "lr": 0.01, "milestones": [3, 5]}
    assert shown["teacher"]["schedule"]["milestones"] == [1, 2, 3] and shown["distiller"]["w_ce"] == 0.2
    cfg = apply_override(load_config(path), "teacher.schedule.epochs=4")
    used, _ = prepare_run(cfg, tmp_path / "run", tmp_path, resume=False)  # what the run writes
    assert printed == dumps_config(used)


def test_print_config_of_a_run_folder_is_its_resolved_config(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    cfg = resolve(apply_override(ExperimentConfig(name="r"), "student.schedule.epochs=20"))
    save_config(cfg, run / "config.yaml")
    assert main(["--resume", str(run), "--print-config"]) == EXIT_OK
    assert capsys.readouterr().out == dumps_config(cfg)
    assert main(["--resume", str(tmp_path / "nowhere"), "--print-config"]) == EXIT_INPUT
    assert "not a run folder" in capsys.readouterr().err
