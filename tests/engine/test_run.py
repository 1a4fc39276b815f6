"""Whole runs on the bundled demo set: teacher -> heads -> student, resume, stop, NaN, determinism."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from engine.config import load_config, set_value
from engine.control import RunControl
from engine.errors import CheckpointError, TrainingError
from engine.events import event_from_dict
from engine.run import run_experiment
from engine.runfolder import load_checkpoint as safe_load
from tests.engine.conftest import tiny_config

pytestmark = pytest.mark.e2e  # trains end to end (tiny models, a few steps)


def run(cfg, tmp_path, name="run", subscribers=(), **kw):
    events = []
    summary = run_experiment(cfg, run_dir=tmp_path / name, subscribers=[events.append, *subscribers], **kw)
    return summary, events


def test_full_run_writes_the_run_folder(tmp_path):
    summary, events = run(tiny_config(), tmp_path)
    d = tmp_path / "run"
    assert summary["status"] == "finished"
    for key in ("teacher", "heads", "student", "stages"):
        assert key in summary
    # the accuracy measured after the teacher's last epoch is the clean point of the evaluation
    # stage's noise curve (the same final weights, measured by the other code path)
    teacher_epochs = [e for e in events if e.type == "EpochEnd" and e.stage == "teacher"]
    assert summary["teacher"]["test_acc"] == teacher_epochs[-1].test_acc == summary["teacher"]["noise_curve"][0][1]
    assert len(summary["heads"]) == 2 and all("test_acc" in h for h in summary["heads"])
    s = summary["student"]
    assert s["test_acc"] is not None and s["best_acc"] >= s["test_acc"] - 1e-9
    assert [lv for lv, _ in s["noise_curve"]] == [0.0, 0.05, 0.1, 0.2, 0.3, 0.5]
    assert list(summary["stages"]) == ["teacher", "heads", "student", "evaluate", "export"]
    assert all(v["seconds"] > 0 for v in summary["stages"].values())
    assert json.loads((d / "summary.json").read_text()) == summary
    assert (d / "config.yaml").is_file()
    for name in ("teacher.pt", "heads.pt", "student.pt"):
        assert (d / "checkpoints" / name).is_file()
    # metrics.jsonl holds every event the subscribers saw, and reads back
    lines = (d / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == [e.type for e in events]
    assert event_from_dict(json.loads(lines[0])) == events[0]
    assert events[0].type == "PlanReady"  # the plan comes first, and the run follows it
    assert [s["name"] for s in events[0].plan["stages"]] == list(summary["stages"])
    assert [e.stage for e in events if e.type == "StageStarted"] == list(summary["stages"])
    kinds = {e.type for e in events}
    for kind in ("RunStarted", "StageStarted", "StepLosses", "EpochEnd", "Evaluation", "HeadAccuracies",
                 "NoiseCurve", "CheckpointWritten", "StageFinished", "RunFinished", "Exported"):
        assert kind in kinds
    step_names = set().union(*(e.losses for e in events if e.type == "StepLosses" and e.stage == "student"))
    assert {"ce", "kd", "code1_d64", "code2_d256", "total"} <= step_names


def test_mode_off_skips_self_analysis(tmp_path):
    cfg = set_value(tiny_config(), "granularity.mode", "off")
    summary, events = run(cfg, tmp_path)
    assert summary["heads"] == [] and "heads" not in summary["stages"]
    names = set().union(*(e.losses for e in events if e.type == "StepLosses" and e.stage == "student"))
    assert not any(n.startswith("code") for n in names)


def test_same_seed_same_numbers(tmp_path):
    cfg = set_value(tiny_config(), "export.enabled", False)
    a, _ = run(cfg, tmp_path, "a")
    b, _ = run(cfg, tmp_path, "b")
    for key in ("teacher", "student"):
        assert a[key]["test_acc"] == b[key]["test_acc"]
        assert a[key]["noise_curve"] == b[key]["noise_curve"]
    wa = safe_load(tmp_path / "a" / "checkpoints" / "student.pt")["modules"]["student"]
    wb = safe_load(tmp_path / "b" / "checkpoints" / "student.pt")["modules"]["student"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_stop_then_resume_matches_uninterrupted_run(tmp_path):
    cfg = set_value(tiny_config(), "export.enabled", False)
    cfg = set_value(cfg, "student.schedule.epochs", 2)
    reference, _ = run(cfg, tmp_path, "ref")

    control = RunControl()

    def stop_mid_student(event):
        if event.type == "StepLosses" and event.stage == "student" and event.epoch == 2 and event.step >= 3:
            control.stop()

    stopped, events = run(cfg, tmp_path, "cut", control=control, subscribers=[stop_mid_student])
    assert stopped["status"] == "stopped" and stopped["stopped_in"] == "student"
    assert events[-1].type == "RunFinished" and events[-1].stopped
    last = safe_load(tmp_path / "cut" / "checkpoints" / "student_last.pt")
    assert last["epoch"] == 1 and last["step"] >= 3  # a usable mid-epoch checkpoint

    resumed, _ = run(None, tmp_path, "cut", resume=True)
    assert resumed["status"] == "finished"
    assert resumed["teacher"]["test_acc"] == reference["teacher"]["test_acc"]
    wa = safe_load(tmp_path / "ref" / "checkpoints" / "student.pt")["modules"]["student"]
    wb = safe_load(tmp_path / "cut" / "checkpoints" / "student.pt")["modules"]["student"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bit-exact on the CPU
    assert not (tmp_path / "cut" / "checkpoints" / "student_last.pt").exists()  # the final one replaces it


def test_pause_and_resume_from_another_thread(tmp_path):
    cfg = set_value(tiny_config(), "export.enabled", False)
    control = RunControl()
    seen = []

    def on_event(event):
        seen.append(event.type)
        if event.type == "StageStarted" and event.stage == "student":
            control.pause()
            threading.Timer(0.3, control.resume).start()

    summary, _ = run(cfg, tmp_path, control=control, subscribers=[on_event])
    assert summary["status"] == "finished"
    assert "Paused" in seen and "Resumed" in seen and seen.index("Paused") < seen.index("Resumed")


def test_nan_loss_fails_cleanly(tmp_path, nan_in_teacher):
    cfg = tiny_config()
    events = []
    with pytest.raises(TrainingError) as err:
        run_experiment(cfg, run_dir=tmp_path / "nan", subscribers=[events.append])
    assert err.value.kind == "nan"
    assert events[-1].type == "RunFailed" and events[-1].kind == "nan" and events[-1].stage == "teacher"
    summary = json.loads((tmp_path / "nan" / "summary.json").read_text())
    assert summary["status"] == "failed" and "loss became" in summary["error"]


def test_teacher_checkpoint_for_other_architecture_is_refused(tmp_path):
    from engine.models import build_model

    path = tmp_path / "wrong.pth"
    torch.save({"model": build_model("resnet20", 10, 1).state_dict()}, path)
    cfg = set_value(tiny_config(), "teacher.checkpoint", str(path))
    with pytest.raises(CheckpointError):
        run_experiment(cfg, run_dir=tmp_path / "r")


def test_teacher_checkpoint_is_used(tmp_path):
    from engine.models import build_model

    torch.manual_seed(123)
    model = build_model("resnet8", 10, 1)
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    cfg = set_value(tiny_config(), "teacher.checkpoint", str(path))
    summary, events = run(cfg, tmp_path)
    assert summary["teacher"]["source"].startswith("checkpoint")
    assert not [e for e in events if e.type == "StepLosses" and e.stage == "teacher"]  # loaded, not trained
    assert events[0].plan["stages"][0]["action"] == "load"
    loaded = safe_load(tmp_path / "run" / "checkpoints" / "heads.pt")
    assert loaded["stage"] == "heads"
    # the loaded weights are what the evaluation stage measured (its clean point of the noise curve)
    assert summary["teacher"]["test_acc"] == summary["teacher"]["noise_curve"][0][1]


def test_demo_preset_is_valid():
    cfg = load_config("resources/presets/demo.yaml")
    assert cfg.data.dataset == "demo"


@pytest.mark.parametrize("mode", ["granularity", "off"])
def test_online_mgd_trains_peers_without_teacher(tmp_path, mode):
    cfg = set_value(tiny_config(), "online.enabled", True)
    cfg = set_value(cfg, "granularity.mode", mode)
    cfg = set_value(cfg, "online.peers", ["resnet8", "wrn_16_1"])
    summary, events = run(cfg, tmp_path)
    assert summary["status"] == "finished"
    assert [p["arch"] for p in summary["peers"]] == ["resnet8", "wrn_16_1"]
    assert summary["teacher"]["arch"] is None and summary["heads"] == []
    assert [e.stage for e in events if e.type == "StageStarted"] == ["online", "evaluate", "export"]
    # the best peer is the student: exported from the run folder like any student
    from engine.runs import load_trained_student
    model, info = load_trained_student(tmp_path / "run")
    assert info["arch"] == summary["student"]["arch"] and info["best_acc"] == summary["student"]["best_acc"]
    names = set().union(*(e.losses for e in events if e.type == "StepLosses"))
    assert "dml" in names and (("code1_d64" in names) == (mode == "granularity"))
    assert summary["student"]["best_acc"] == max(p["best_acc"] for p in summary["peers"])


def test_online_refuses_stable_mode():
    from engine.config import validation_errors

    cfg = set_value(tiny_config(), "online.enabled", True)
    assert [e.field for e in validation_errors(cfg)] == ["granularity.mode"]


def test_transfer_trains_only_a_new_classifier(tmp_path):
    cfg = set_value(tiny_config(), "granularity.mode", "off")
    cfg = set_value(cfg, "transfer.enabled", True)
    cfg = set_value(cfg, "transfer.schedule.epochs", 2)
    cfg = set_value(cfg, "transfer.schedule.milestones", [1])
    summary, events = run(cfg, tmp_path)
    t = summary["transfer"]
    assert t["dataset"] == "demo" and t["classes"] == 10
    probe = [e for e in events if e.type == "EpochEnd" and e.stage == "transfer"]
    best = max(range(len(probe)), key=lambda i: probe[i].test_acc)  # the first of equals
    assert len(probe) == 2 and (t["best_acc"], t["best_epoch"]) == (probe[best].test_acc, best + 1)
    started = [e for e in events if e.type == "StageStarted" and e.stage == "transfer"]
    assert started and started[0].parameters == 64 * 10 + 10  # resnet8's pooled width 64 -> 10 classes
    # the exported student is the distilled one, untouched by the probe
    assert (tmp_path / "run" / "export" / "student.safetensors").is_file()


def test_transfer_refuses_other_channel_count(tmp_path):
    from PIL import Image

    from engine.errors import InputError

    for split in ("train", "test"):
        for cls in ("a", "b"):
            folder = tmp_path / "rgb" / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (40 * i, 200 if cls == "a" else 10, 90)).save(folder / f"{i}.png")
    cfg = set_value(tiny_config(), "granularity.mode", "off")
    cfg = set_value(cfg, "transfer.enabled", True)
    cfg = set_value(cfg, "transfer.data.dataset", "imagefolder")
    cfg = set_value(cfg, "transfer.data.root", str(tmp_path / "rgb"))
    events = []
    with pytest.raises(InputError, match="channel"):
        run_experiment(cfg, run_dir=tmp_path / "r", subscribers=[events.append])
    assert not [e for e in events if e.type == "StageStarted"]  # refused before any training
    assert not (tmp_path / "r").exists()


def test_student_alone_skips_the_teacher(tmp_path):
    cfg = set_value(tiny_config(), "distiller.name", "none")
    cfg = set_value(cfg, "granularity.mode", "off")
    summary, events = run(cfg, tmp_path)
    assert summary["teacher"]["arch"] is None
    assert [e.stage for e in events if e.type == "StageStarted"] == ["student", "evaluate", "export"]
    names = set().union(*(e.losses for e in events if e.type == "StepLosses"))
    assert names == {"ce", "total"}
    s = summary["student"]
    assert s["cpu_latency_ms"] > 0
    # calibration and output noise are those of the kept (best) weights on the test set
    from engine.data import load_dataset, make_loader
    from engine.evaluate import expected_calibration_error, output_noise
    from engine.runs import load_trained_student

    model, info = load_trained_student(tmp_path / "run")
    test = make_loader(load_dataset("demo"), "test", batch_size=97, device=torch.device("cpu"), train=False)
    forward = lambda x: model(x)[0]  # noqa: E731
    assert s["ece"] == pytest.approx(expected_calibration_error(forward, test), rel=1e-6)
    assert s["output_noise"] == pytest.approx(output_noise(forward, test), rel=1e-6)
    assert s["best_acc"] == info["best_acc"] == s["noise_curve"][0][1]


def test_bf16_lands_within_two_points_of_fp32(tmp_path):
    """Mixed precision is an opt-in speed-up: a short bf16 run of the demo ends within 2 points
    (7 of 355 test images) of the same run in fp32, for the teacher and the student (measured:
    0.3 and 0.8 points for seeds 0 and 1)."""
    settings = {"teacher.schedule.epochs": 4, "teacher.schedule.milestones": [3], "granularity.schedule.epochs": 2,
                "student.schedule.epochs": 4, "student.schedule.milestones": [3], "export.enabled": False}
    fp32, _ = run(tiny_config(**settings), tmp_path, "fp32")
    bf16, _ = run(tiny_config(**settings, **{"speed.amp": "bf16", "speed.channels_last": "on"}), tmp_path, "bf16")
    assert fp32["speed"]["precision"] == "fp32" and bf16["speed"]["precision"] == "bf16"
    assert abs(bf16["teacher"]["test_acc"] - fp32["teacher"]["test_acc"]) <= 2.0
    assert abs(bf16["student"]["best_acc"] - fp32["student"]["best_acc"]) <= 2.0
    assert bf16["student"]["best_acc"] > 80.0  # both learned: the comparison means something
    assert all(st["peak_rss_mib"] > 0 for st in bf16["stages"].values())
    # the best epoch's accuracy (measured under bf16 training) is what the evaluation stage
    # measures again on the restored weights
    assert bf16["student"]["best_acc"] == max(e["test_acc"] for e in
                                              safe_load(tmp_path / "bf16" / "checkpoints" / "student.pt")["history"])


def test_the_student_learns_from_the_teachers_best_or_last_epoch(tmp_path):
    # a learning rate high enough that the last of 3 epochs is often not the best; which seed shows it
    # depends on the CPU's rounding (seed 0 here, another on CI's machine), so the first seed that does
    settings = {"teacher.schedule.epochs": 3, "teacher.schedule.milestones": [], "granularity.mode": "off",
                "export.enabled": False, "teacher.schedule.lr": 0.5}
    for seed in range(6):
        settings["seed"] = seed
        best, _ = run(tiny_config(**settings), tmp_path, f"best{seed}")
        t = best["teacher"]
        assert t["kept"] == "best" and t["epoch_used"] == t["best_epoch"] and t["test_acc"] == t["best_acc"]
        if t["best_epoch"] < 3:
            break
    else:
        pytest.fail("no seed of six had a teacher whose last epoch was not its best")
    assert t["best_acc"] > t["final_acc"]
    state = safe_load(tmp_path / f"best{seed}" / "checkpoints" / "teacher.pt")
    kept = state["tracker"]["model"]["state"]
    assert all(torch.equal(state["modules"]["model"][k], kept[k]) for k in kept)  # the checkpoint holds the best
    assert t["noise_curve"][0][1] == t["best_acc"]  # the evaluated (and distilled-from) teacher is the best one
    last, _ = run(tiny_config(**settings, **{"teacher.keep": "last"}), tmp_path, "last")
    t = last["teacher"]
    assert t["kept"] == "last" and t["epoch_used"] == 3 and t["test_acc"] == t["final_acc"]
    assert t["noise_curve"][0][1] == t["final_acc"]


def test_in_memory_off_streams_an_image_folder(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c, cls in enumerate(("dark", "light")):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(6):
                Image.new("L", (8, 8), 30 + 180 * c + i).save(folder / f"{i}.png")
    cfg = tiny_config(**{"data.dataset": "imagefolder", "data.root": str(tmp_path / "imgs"), "data.image_size": 8,
                         "data.in_memory": "off", "data.workers": 0, "granularity.mode": "off",
                         "export.enabled": False})
    summary, _ = run(cfg, tmp_path)
    assert summary["status"] == "finished" and summary["data"]["streamed"] is True
    assert summary["data"]["classes"] == 2
