"""The experiment schema: defaults, YAML round trip, overrides and errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import (ExperimentConfig, HeadConfig, apply_override, dumps_config, load_config, loads_config,
                           resolve, save_config, set_value, to_dict, validate, validation_errors)
from engine.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "resources" / "presets").glob("*.yaml"))


def test_defaults_follow_method():
    cfg = resolve(ExperimentConfig())
    assert [(h.dim, h.temperature) for h in cfg.granularity.heads] == [(64, 2.0), (256, 8.0)]
    t, g, s = cfg.teacher.schedule, cfg.granularity.schedule, cfg.student.schedule
    assert (t.epochs, t.lr, t.milestones) == (240, 0.05, [60, 120, 180])
    assert (g.epochs, g.lr, g.milestones) == (60, 0.01, [30, 45])
    assert (s.epochs, s.milestones) == (240, [150, 180, 210])
    for sched in (t, g, s):
        assert (sched.momentum, sched.weight_decay, sched.gamma) == (0.9, 5e-4, 0.1)
    assert cfg.data.batch_size == 64
    assert cfg.distiller.name == "kd" and cfg.distiller.temperature == 4.0
    assert cfg.evaluation.noise_levels == [0.0, 0.05, 0.1, 0.2, 0.3, 0.5]
    assert cfg.granularity.mode == "stable"


def test_resolve_fills_method_defaults():
    r = resolve(ExperimentConfig())
    assert (r.distiller.w_ce, r.distiller.w_div, r.distiller.w_kd) == (0.2, 0.8, 0.0)
    assert r.student.schedule.lr == 0.05
    small = resolve(set_value(ExperimentConfig(), "student.arch", "MobileNetV2"))
    assert small.student.schedule.lr == 0.01
    kept = resolve(set_value(ExperimentConfig(), "distiller.w_ce", 0.5))
    assert kept.distiller.w_ce == 0.5


def test_yaml_round_trip_is_exact(tmp_path):
    cfg = ExperimentConfig()
    cfg.granularity.heads.append(HeadConfig(16, 1.5))
    cfg.distiller.options = {"hint_layer": 2, "nested": {"a": [1, 2]}}
    cfg.data.root = "/some/where"
    path = tmp_path / "exp.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert dumps_config(again) == path.read_text()


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_presets_load_and_validate(preset):
    cfg = load_config(preset)
    validate(resolve(cfg))
    assert dumps_config(loads_config(dumps_config(cfg))) == dumps_config(cfg)


def test_overrides():
    cfg = ExperimentConfig()
    cfg = apply_override(cfg, "student.schedule.epochs=5")
    cfg = apply_override(cfg, "granularity.heads.1.dim=128")
    cfg = apply_override(cfg, "teacher.schedule.milestones=[2, 4]")
    cfg = apply_override(cfg, "data.root=null")
    cfg = apply_override(cfg, "distiller.w_kd=1e-3")
    assert cfg.student.schedule.epochs == 5
    assert cfg.granularity.heads[1].dim == 128
    assert cfg.teacher.schedule.milestones == [2, 4]
    assert cfg.data.root is None
    assert cfg.distiller.w_kd == pytest.approx(1e-3)


@pytest.mark.parametrize("assignment, field", [
    ("student.schedule.epochs=many", "student.schedule.epochs"),
    ("student.nope=1", "student.nope"),
    ("granularity.heads.5.dim=3", "granularity.heads.5"),
    ("seed=true", "seed"),
])
def test_override_errors_name_the_field(assignment, field):
    with pytest.raises(ConfigError) as err:
        apply_override(ExperimentConfig(), assignment)
    assert err.value.field == field


def test_unknown_key_lists_allowed(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("student:\n  archh: resnet8\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.field == "student.archh"
    assert "arch" in str(err.value) and "bad.yaml" in str(err.value)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("student:\n  arch: [resnet8\n")
    with pytest.raises(InputError) as err:
        load_config(path)
    assert "broken.yaml" in str(err.value) and "line" in str(err.value)


def test_missing_file():
    with pytest.raises(InputError, match="no such config file"):
        load_config("/nonexistent/exp.yaml")


def test_validation_errors_name_fields_and_choices():
    cfg = ExperimentConfig()
    cfg.student.arch = "resnet9000"
    cfg.granularity.mode = "sometimes"
    cfg.teacher.schedule.milestones = [5, 3]
    cfg.data.batch_size = 0
    cfg.device = "tpu"
    errors = {e.field: e.reason for e in validation_errors(cfg)}
    assert "resnet8" in errors["student.arch"]  # lists the allowed models
    assert "stable" in errors["granularity.mode"]
    assert "increasing" in errors["teacher.schedule.milestones"]
    assert "minimum" in errors["data.batch_size"]
    assert "cuda:N" in errors["device"]
    with pytest.raises(ConfigError):
        validate(cfg)


def test_dataset_needing_a_folder():
    cfg = set_value(ExperimentConfig(), "data.dataset", "cifar100")
    assert [e.field for e in validation_errors(cfg)] == ["data.root"]


def test_to_dict_is_plain_data():
    data = to_dict(ExperimentConfig())
    assert data["granularity"]["heads"] == [{"dim": 64, "temperature": 2.0}, {"dim": 256, "temperature": 8.0}]


def test_config_import_does_not_import_torch():
    code = "import engine.config, engine.events, engine.control, sys; " \
           "from engine.models import model_names; from engine.distillers import distiller_names; " \
           "assert 'resnet8' in model_names() and 'kd' in distiller_names(); " \
           "assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_yaml_off_is_a_string_not_false(tmp_path):
    path = tmp_path / "off.yaml"
    path.write_text("granularity:\n  mode: off\n")
    cfg = load_config(path)
    assert cfg.granularity.mode == "off"
    assert apply_override(ExperimentConfig(), "granularity.mode=off").granularity.mode == "off"
    save_config(cfg, path)
    assert load_config(path) == cfg
