"""A checkpoint is verified before it is trusted, and a resumed run records what an uninterrupted one does.

* Teacher, student-weights and heads files that are damaged (inverted bytes), inflated (a small
  deflated archive declaring far more bytes), hold meta/sparse/NaN/absurd tensors, or are
  malformed (tracker, keys) are refused with a CheckpointError naming the file, at plan time.
* A resumed run's ``<stage>_last.pt`` whose position, format or history is off is refused by the
  plan, before any stage starts; ``mgd-train --resume`` exits 2 with one line.
* RepDistiller's ``<arch>_last.pth`` (an ``argparse.Namespace`` beside the weights) loads; a
  pickle of any other object is still refused.
* A stage stopped mid-epoch and resumed records the same epoch history as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import io
import os
import pathlib
import shutil
import zipfile

import pytest
import torch

from engine.cli import EXIT_INPUT, main
from engine.config import set_value
from engine.control import RunControl
from engine.errors import CheckpointError
from engine.models import build_model
from engine.run import plan_experiment, run_experiment
from engine.runfolder import load_checkpoint, save_checkpoint
from tests.engine.conftest import tiny_config

pytestmark = pytest.mark.e2e  # trains end to end (tiny models, a few steps)

TRAINING = {"teacher", "heads", "pretrain", "student", "online", "transfer"}


def base_config():
    return set_value(set_value(tiny_config(), "export.enabled", False), "student.schedule.epochs", 2)


def stop_in_student(control, epoch=2, step=3):
    def subscriber(event):
        if event.type == "StepLosses" and event.stage == "student" and event.epoch == epoch and event.step >= step:
            control.stop()
    return subscriber


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped in the student's second epoch: final teacher.pt and heads.pt, a student_last.pt."""
    root = tmp_path_factory.mktemp("stopped")
    control = RunControl()
    summary = run_experiment(base_config(), run_dir=root / "run", control=control,
                             subscribers=[stop_in_student(control)])
    assert summary["status"] == "stopped"
    assert (root / "run" / "checkpoints" / "student_last.pt").is_file()
    return root / "run"


def copy_run(stopped_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run, ignore=shutil.ignore_patterns(".lock", ".writer"))
    return run


def resume_refused(run, *expected):
    """Resuming ``run`` raises a CheckpointError holding ``expected`` before any stage starts."""
    events = []
    with pytest.raises(CheckpointError) as err:
        run_experiment(None, run_dir=run, resume=True, subscribers=[events.append])
    assert not [e for e in events if e.type in ("StageStarted", "StepLosses")], [e.type for e in events]
    for text in expected:
        assert text in str(err.value), str(err.value)
    assert len(str(err.value).splitlines()) == 1
    return str(err.value)


# ----------------------------------------------------------------------------- resume checkpoints


@pytest.mark.parametrize("edit, expected", [
    ({"epoch": 999}, "resume epoch 999"),
    ({"epoch": -3}, "resume epoch -3"),
    ({"step": 999}, "resume step 999"),
    ({"step": -1}, "resume step -1"),
    ({"epoch": 1.5}, "resume epoch 1.5"),
    ({"format": 99}, "unknown checkpoint format 99"),
    ({"format": None}, "unknown checkpoint format"),
    ({"history": "abc"}, "history is a str"),
    ({"history": [{"x": 1}]}, "epoch record 1"),
    ({"history": []}, "0 epochs for 1 completed"),
    ({"stage": "teacher"}, "not of 'student'"),
    ({"partial": {"sums": {"total": float("nan")}, "correct": 1.0, "seen": 2, "steps": 1}}, "running sums"),
])
def test_a_tampered_resume_checkpoint_is_refused_before_any_stage(stopped_run, tmp_path, edit, expected):
    run = copy_run(stopped_run, tmp_path)
    path = run / "checkpoints" / "student_last.pt"
    state = load_checkpoint(path)
    state.update(edit)
    save_checkpoint(state, path)
    message = resume_refused(run, expected)
    assert str(path) in message
    with pytest.raises(CheckpointError, match="student_last.pt"):  # the plan of the resumed run too
        plan_experiment(tiny_config_of(run), run_dir=run)


def tiny_config_of(run):
    from engine.config import load_config

    return load_config(run / "config.yaml")


def test_mgd_train_resume_of_a_tampered_checkpoint_exits_2_with_one_line(stopped_run, tmp_path, capsys):
    run = copy_run(stopped_run, tmp_path)
    path = run / "checkpoints" / "student_last.pt"
    state = load_checkpoint(path)
    state["epoch"] = 999
    save_checkpoint(state, path)
    assert main(["--resume", str(run)]) == EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "student_last.pt" in err, err


def invert_middle(path, n=64):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + n] = bytes(b ^ 0xFF for b in data[middle:middle + n])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["student_last.pt", "heads.pt", "teacher.pt"])
def test_a_damaged_checkpoint_of_the_run_is_refused(stopped_run, tmp_path, name):
    run = copy_run(stopped_run, tmp_path)
    invert_middle(run / "checkpoints" / name)
    resume_refused(run, name, "damaged")


def test_nan_weights_in_a_finished_stage_are_refused(stopped_run, tmp_path):
    run = copy_run(stopped_run, tmp_path)
    path = run / "checkpoints" / "teacher.pt"
    state = load_checkpoint(path)
    weights = state["modules"]["model"]
    key = next(k for k, v in weights.items() if v.is_floating_point())
    weights[key] = torch.full_like(weights[key], 1e38)
    save_checkpoint(state, path)
    resume_refused(run, "teacher.pt", key, "1e+38")


def test_an_untouched_stopped_run_resumes(stopped_run, tmp_path):
    """The checks refuse only what is wrong: the checkpoints the engine wrote pass them."""
    run = copy_run(stopped_run, tmp_path)
    assert run_experiment(None, run_dir=run, resume=True)["status"] == "finished"


def test_checkpoints_written_without_running_sums_still_resume(stopped_run, tmp_path):
    """Resume checkpoints from before the running sums were kept (no 'partial') load as before."""
    run = copy_run(stopped_run, tmp_path)
    path = run / "checkpoints" / "student_last.pt"
    state = load_checkpoint(path)
    del state["partial"]
    save_checkpoint(state, path)
    assert run_experiment(None, run_dir=run, resume=True)["status"] == "finished"


# ----------------------------------------------------------------------------- teacher and weights files


def resnet8_state(seed=0):
    torch.manual_seed(seed)
    return build_model("resnet8", 10, 1).state_dict()


def plan_with(tmp_path, key, path):
    return plan_experiment(set_value(base_config(), key, str(path)), run_dir=tmp_path / "new")


@pytest.mark.parametrize("case, expected", [
    ("meta", "meta device"), ("sparse", "sparse"), ("nan", "NaN"), ("huge", "magnitude"), ("inverted", "damaged"),
])
def test_a_hostile_teacher_file_is_refused_at_plan_time(tmp_path, case, expected):
    state = resnet8_state()
    key = "conv1.weight"
    path = tmp_path / "teacher.pth"
    if case == "meta":
        state[key] = torch.empty(state[key].shape, device="meta")
    elif case == "sparse":
        state[key] = state[key].to_sparse()
    elif case == "nan":
        state[key] = torch.full_like(state[key], float("nan"))
    elif case == "huge":
        state[key] = torch.full_like(state[key], 1e38)
    torch.save({"model": state}, path)
    if case == "inverted":
        invert_middle(path)
    with pytest.raises(CheckpointError) as err:
        plan_with(tmp_path, "teacher.checkpoint", path)
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)


def test_absurd_student_starting_weights_are_refused_at_plan_time(tmp_path):
    state = resnet8_state()
    state["fc.weight"] = torch.full_like(state["fc.weight"], -3e7)
    path = tmp_path / "student.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="magnitude"):
        plan_with(tmp_path, "student.weights", path)


def test_a_small_deflated_file_declaring_huge_sizes_is_refused_before_loading(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    torch.save({"model": resnet8_state()}, buffer)
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename))
        out.writestr("archive/data/999", bytes(64 << 20))  # 64 MiB of zeros, deflated to about 64 KiB
    assert path.stat().st_size < 1 << 20

    def no_load(*args, **kwargs):
        raise AssertionError("torch.load ran on an inflated archive")

    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(CheckpointError, match="declares") as err:
        plan_with(tmp_path, "teacher.checkpoint", path)
    assert str(path) in str(err.value)


def test_a_file_declaring_far_more_than_the_model_is_refused(tmp_path):
    from engine.verify import check_archive

    path = tmp_path / "big.pt"
    torch.save({"model": torch.zeros(5 << 20)}, path)  # 20 MiB, stored (as torch writes)
    check_archive(path)  # sound as an archive
    with pytest.raises(CheckpointError, match="for weights of 1,000 bytes"):
        check_archive(path, needed_bytes=1000)
    check_archive(path, needed_bytes=1 << 20)


def test_the_engine_writes_a_digest_even_when_torchs_crc_is_off(tmp_path, monkeypatch):
    from engine.verify import check_archive

    crc = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        save_checkpoint({"w": torch.ones(256)}, tmp_path / "ours.pt")
        torch.save({"w": torch.ones(256)}, tmp_path / "theirs.pt")
    finally:
        torch.serialization.set_crc32_options(crc)
    invert_middle(tmp_path / "ours.pt", n=8)
    with pytest.raises(CheckpointError, match="CRC-32"):
        load_checkpoint(tmp_path / "ours.pt")
    check_archive(tmp_path / "theirs.pt")  # no digest to check: loads as torch.load would


# ----------------------------------------------------------------------------- RepDistiller's files


def repdistiller_last(path, state):
    """As RepDistiller's train_teacher.py saves its last epoch: {'opt': opt, 'model': ..., 'optimizer': ...}."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt = argparse.Namespace(print_freq=100, batch_size=64, num_workers=8, epochs=240, learning_rate=0.05,
                             lr_decay_epochs=[150, 180, 210], lr_decay_rate=0.1, weight_decay=5e-4, momentum=0.9,
                             dataset="cifar100", model="resnet8", trial="0", model_path="./save/models",
                             model_name="resnet8_cifar100_lr_0.05_decay_0.0005_trial_0",
                             save_folder="./save/models/resnet8_cifar100_lr_0.05_decay_0.0005_trial_0")
    torch.save({"opt": opt, "model": state, "optimizer": optimizer.state_dict()}, path)


def test_repdistillers_last_file_loads_as_a_teacher(tmp_path):
    state = resnet8_state(seed=5)
    path = tmp_path / "resnet8_last.pth"
    repdistiller_last(path, state)
    cfg = set_value(base_config(), "teacher.checkpoint", str(path))
    plan_experiment(cfg, run_dir=tmp_path / "new")
    from engine.models.checkpoint import load_weights

    model = build_model("resnet8", 10, 1)
    load_weights(model, path, "resnet8")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo should-never-run > /dev/null",))


@pytest.mark.parametrize("extra", [Exploit(), pathlib.PurePosixPath("/etc")])
def test_any_other_object_in_a_teacher_file_is_still_refused(tmp_path, extra):
    path = tmp_path / "resnet8_last.pth"
    torch.save({"opt": argparse.Namespace(model="resnet8"), "model": resnet8_state(), "x": extra}, path)
    with pytest.raises(CheckpointError, match="safe loading refuses"):
        plan_with(tmp_path, "teacher.checkpoint", path)


# ----------------------------------------------------------------------------- heads checkpoints


def heads_file(stopped_run, tmp_path, edit):
    state = load_checkpoint(stopped_run / "checkpoints" / "heads.pt")
    edit(state)
    path = tmp_path / "heads.pt"
    torch.save(state, path)
    return path


def _nan_heads(state):
    heads = state["modules"]["heads"]
    for k, v in heads.items():
        if v.is_floating_point():
            heads[k] = torch.full_like(v, float("nan"))


def _int_key(state):
    heads = state["modules"]["heads"]
    first = next(iter(heads))
    heads[7] = heads.pop(first)


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.update(tracker=[1, 2]), "tracker is a list"),
    (lambda s: s.update(tracker={"head1": 3}), "entry 'head1'"),
    (lambda s: s.update(tracker={1: {"metric": 1.0, "epoch": 1, "state": None}}), "not a string"),
    (lambda s: s["tracker"]["head1"].update(epoch="x"), "epoch 'x'"),
    (_int_key, "key 7 is not a string"),
    (_nan_heads, "NaN"),
    (lambda s: s.update(modules={"heads": [1]}), "not a state dict"),
])
def test_a_malformed_heads_checkpoint_is_refused_at_plan_time(stopped_run, tmp_path, edit, expected):
    path = heads_file(stopped_run, tmp_path, edit)
    cfg = set_value(base_config(), "granularity.checkpoint", str(path))
    with pytest.raises(CheckpointError) as err:
        plan_experiment(cfg, run_dir=tmp_path / "new")
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)


def test_a_sound_heads_checkpoint_is_accepted(stopped_run, tmp_path):
    path = heads_file(stopped_run, tmp_path, lambda s: None)
    plan_experiment(set_value(base_config(), "granularity.checkpoint", str(path)), run_dir=tmp_path / "new")


# ----------------------------------------------------------------------------- resumed history


def test_a_stage_stopped_mid_epoch_records_the_history_of_an_uninterrupted_run(tmp_path, monkeypatch):
    """The interrupted epoch's loss averages and train accuracy travel in the checkpoint: a log
    point every 5 steps, so the stop also falls inside a logging window."""
    from engine.trainer import FitSession

    init = FitSession.__init__

    def sparse_logging(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.log_every = 5

    monkeypatch.setattr(FitSession, "__init__", sparse_logging)
    cfg = base_config()
    run_experiment(cfg, run_dir=tmp_path / "ref")

    from engine import stages

    control, counted = RunControl(), {"steps": None, "n": 0}
    original = stages.StudentTask.step

    def step(self, x, y, idx):  # stop 13 steps into the second epoch, between two log points
        counted["n"] += 1
        if counted["n"] == counted["steps"] + 13:
            control.stop()
        return original(self, x, y, idx)

    def steps_of(event):
        if event.type == "StageStarted" and event.stage == "student":
            counted["steps"] = event.steps_per_epoch

    monkeypatch.setattr(stages.StudentTask, "step", step)
    stopped = run_experiment(cfg, run_dir=tmp_path / "cut", control=control, subscribers=[steps_of])
    monkeypatch.setattr(stages.StudentTask, "step", original)
    assert stopped["status"] == "stopped"
    last = load_checkpoint(tmp_path / "cut" / "checkpoints" / "student_last.pt")
    assert last["epoch"] == 1 and last["step"] == 13 and last["partial"]["steps"] == 13
    started = []
    assert run_experiment(None, run_dir=tmp_path / "cut", resume=True, subscribers=[started.append])["status"] \
        == "finished"
    # where it resumed is in its StageStarted event (the progress model counts those steps as done)
    assert [(e.start_epoch, e.start_step) for e in started if e.type == "StageStarted" and e.stage == "student"] \
        == [(1, 13)]

    ref = load_checkpoint(tmp_path / "ref" / "checkpoints" / "student.pt")["history"]
    cut = load_checkpoint(tmp_path / "cut" / "checkpoints" / "student.pt")["history"]
    assert len(ref) == len(cut) == 2
    for a, b in zip(ref, cut):
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1e-6)
        assert a["test_acc"] == b["test_acc"]
        assert a["losses"].keys() == b["losses"].keys()
        for k in a["losses"]:
            assert a["losses"][k] == pytest.approx(b["losses"][k], rel=1e-6, abs=1e-6)
