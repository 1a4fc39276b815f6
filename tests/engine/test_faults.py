"""Bad input is refused before any training; faults during a run keep their promises."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import EXIT_INPUT, EXIT_OK, EXIT_TRAINING, main
from engine.config import save_config
from engine.runfolder import RunLock, load_checkpoint
from tests.engine.conftest import tiny_config

pytestmark = pytest.mark.e2e  # trains end to end (tiny models, a few steps)

ROOT = Path(__file__).resolve().parents[2]


def write(cfg, tmp_path, name="exp.yaml"):
    path = tmp_path / name
    save_config(cfg, path)
    return str(path)


def refused(capsys, argv, *expected) -> str:
    """Run mgd-train, check it exits 2 with one line holding ``expected``, before any training."""
    assert main(argv) == EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    return err


# ----------------------------------------------------------------------------- refused before training


def trained_nothing(monkeypatch):
    """Fail the test if any training step runs."""
    from engine.trainer import Trainer

    def no_training(*args, **kwargs):
        raise AssertionError("a training step ran")

    monkeypatch.setattr(Trainer, "fit", no_training)


@pytest.mark.parametrize("settings, expected", [
    ({"distiller.options": {"foo": 1}}, ["distiller.options.foo", "unknown"]),
    ({"distiller.name": "fitnet", "distiller.options": {"hint_layer": 9}}, ["distiller.options.hint_layer"]),
    ({"seed": 2**64 - 1}, ["seed", "maximum"]),
    ({"evaluation.noise_seed": -1}, ["evaluation.noise_seed"]),
])
def test_bad_settings_exit_2_before_any_training(tmp_path, capsys, monkeypatch, settings, expected):
    trained_nothing(monkeypatch)
    refused(capsys, [write(tiny_config(**settings), tmp_path), "--out", str(tmp_path / "r")], *expected)
    assert not (tmp_path / "r").exists()  # no run folder left behind


def test_unwritable_export_and_run_folders_exit_2(tmp_path, capsys, monkeypatch):
    trained_nothing(monkeypatch)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cfg = write(tiny_config(**{"export.dir": str(a_file / "export")}), tmp_path)
    refused(capsys, [cfg, "--out", str(tmp_path / "r")], "export.dir", "is a file")
    good = write(tiny_config(), tmp_path, "good.yaml")
    refused(capsys, [good, "--out", str(a_file)], "--out", "is a file")
    if os.geteuid() != 0:  # root writes anywhere; the file case above covers the same check then
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        refused(capsys, [good, "--out", str(locked / "r")], "not writable")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("text, expected", [
    ("", "holds no settings"),
    ("# only a comment\n", "holds no settings"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi")), "alias bomb"),
    ("distiller:\n  options: &o {x: [*o]}\n", "recursive alias"),
    ("[" * 5000 + "]" * 5000 + "\n", "nested more than"),
])
def test_hostile_yaml_is_refused_within_a_second(tmp_path, capsys, text, expected):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    t0 = time.perf_counter()
    refused(capsys, [str(path), "--out", str(tmp_path / "r")], expected, "hostile.yaml")
    assert time.perf_counter() - t0 < 1.0
    assert not (tmp_path / "r").exists()


def test_plan_prints_the_stages_without_training(tmp_path, capsys, monkeypatch):
    trained_nothing(monkeypatch)
    assert main([write(tiny_config(), tmp_path), "--plan", "--out", str(tmp_path / "r")]) == EXIT_OK
    out = capsys.readouterr().out
    for line in ("1. teacher   2 epochs x 23 steps", "2. heads", "3. student", "4. evaluate", "5. export"):
        assert line in out
    assert "resnet8, 77,754 parameters" in out and not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- faults during a run


def test_disk_full_names_the_path_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    import engine.runfolder as runfolder

    real_write = os.write
    written = {"checkpoints": 0}

    def write_then_fill(fd, data):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "student_last.pt" in name:  # the student's second checkpoint finds the disk full
            written["checkpoints"] += 1
            if written["checkpoints"] >= 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(runfolder.os, "write", write_then_fill)
    out = tmp_path / "r"
    cfg = write(tiny_config(**{"student.schedule.epochs": 3}), tmp_path)
    assert main([cfg, "--out", str(out), "-q"]) == EXIT_TRAINING
    err = capsys.readouterr().err
    assert "disk is full" in err and "student_last.pt" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "disk is full" in summary["error"]
    last = load_checkpoint(out / "checkpoints" / "student_last.pt")  # the first one, intact
    assert last["epoch"] == 1
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_second_writer_exits_2_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "r"
    assert main([write(tiny_config(**{"export.enabled": False}), tmp_path), "--out", str(out), "-q"]) == EXIT_OK
    capsys.readouterr()
    with RunLock(out):
        refused(capsys, ["--resume", str(out)], "being written by process", str(os.getpid()))
    assert main(["--resume", str(out), "-q"]) == EXIT_OK  # released: the resume goes ahead


def test_resume_removes_orphans_and_keeps_start_time_and_total_time(tmp_path, capsys):
    out = tmp_path / "r"
    assert main([write(tiny_config(**{"export.enabled": False}), tmp_path), "--out", str(out), "-q"]) == EXIT_OK
    first = json.loads((out / "summary.json").read_text())
    orphan = out / "checkpoints" / ".student.pt.12345.tmp"
    orphan.write_bytes(b"\0" * 1000)
    first_started = "2020-01-01T00:00:00"
    (out / "summary.json").write_text(json.dumps({**first, "started": first_started, "status": "stopped"}))
    assert main(["--resume", str(out), "-q"]) == EXIT_OK
    again = json.loads((out / "summary.json").read_text())
    assert not orphan.exists()
    assert again["started"] == first_started
    assert again["total_seconds"] > first["total_seconds"]  # the earlier sessions' time is kept


def test_export_failure_fails_the_run_and_resume_exports_again(tmp_path, capsys, monkeypatch):
    import engine.export as export
    from engine.export import ExportError

    real = export.export_model

    def broken(*args, **kwargs):
        raise ExportError("the exporter broke")

    monkeypatch.setattr(export, "export_model", broken)
    out = tmp_path / "r"
    assert main([write(tiny_config(), tmp_path), "--out", str(out), "-q"]) == EXIT_TRAINING
    assert "the exporter broke" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed_in"] == "export"
    assert (out / "checkpoints" / "student.pt").is_file()
    monkeypatch.setattr(export, "export_model", real)
    assert main(["--resume", str(out), "-q"]) == EXIT_OK
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    assert (out / "export" / "student.safetensors").is_file()


def test_sigterm_stops_like_ctrl_c(tmp_path):
    cfg = write(tiny_config(**{"teacher.schedule.epochs": 200, "teacher.schedule.milestones": [150]}), tmp_path)
    out = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", cfg, "--out", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "teacher_last.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_OK, stderr
    assert "SIGTERM" in stderr and "resume with" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stopped_in"] == "teacher"
