"""Every registered baseline through the whole engine: one epoch on the demo set with MGD stable
(the mode that exercises the most: codes, the stable target handed to the baseline), and KD in
every mode. The baselines' losses are checked by hand in test_distillers_feature_and_logit_losses.py and test_distillers_with_own_modules.py."""

from __future__ import annotations

import pytest
import torch

from engine.config import set_value
from engine.distillers import DISTILLERS, distiller_class, distiller_names
from engine.run import run_experiment
from tests.engine.conftest import tiny_config

pytestmark = pytest.mark.e2e  # trains end to end (tiny models, a few steps)

MODES = ("off", "granularity", "stable")


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    from engine.models import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "resnet8.pth"
    torch.save(build_model("resnet8", 10, 1).state_dict(), path)
    return str(path)


def test_every_baseline_is_described():
    names = distiller_names()
    assert "kd" in names and "none" in names
    for name in names:
        assert DISTILLERS.describe(name), f"{name} has no one-line description"
        cls = distiller_class(name)
        assert len(cls.default_weights) == 3


@pytest.mark.parametrize("name, mode", [(n, "stable") for n in distiller_names() if n not in ("kd", "none")]
                         + [("kd", mode) for mode in MODES] + [("none", "off")])
def test_one_epoch_on_demo(name, mode, teacher_checkpoint, tmp_path):
    cls = distiller_class(name)
    cfg = tiny_config(**{
        "teacher.checkpoint": teacher_checkpoint,  # resnet8 teacher ...
        "student.arch": "wrn_16_1",  # ... and a student of another family
        "granularity.mode": mode,
        "export.enabled": False,
        "evaluation.noise_levels": [0.0, 0.1],
    })
    if cls.pretrain_epochs_option:
        cfg = set_value(cfg, f"distiller.options.{cls.pretrain_epochs_option}", 1)
    cfg = set_value(cfg, "distiller.name", name)
    events = []
    summary = run_experiment(cfg, run_dir=tmp_path / "run", subscribers=[events.append])
    assert summary["status"] == "finished"
    epochs = [e for e in events if e.type == "EpochEnd" and e.stage == "student"]
    # the evaluation stage measures the kept weights again: the epoch's test accuracy
    assert summary["student"]["best_acc"] == epochs[0].test_acc
    assert len(epochs) == 1 and all(v == v for v in epochs[0].losses.values())  # finite, not NaN
    # the evaluation stage measures the kept (best) weights: the accuracy of the epoch they come from
    assert summary["student"]["best_acc"] == epochs[0].test_acc and summary["student"]["best_epoch"] == 1
    names = set(epochs[0].losses)
    if name == "none":
        assert names == {"ce", "total"}
    else:
        assert {"ce", "kd", "total"} <= names
        assert ({"code1_d64", "code2_d256"} <= names) == (mode != "off")
    if cls.pretrain_epochs_option:
        assert any(e.type == "StageStarted" and e.stage == "pretrain" for e in events)
