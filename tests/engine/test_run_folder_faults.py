"""A fault leaves the run folder telling the truth; the writer's lock cannot be deleted away.

Faults are injected in the engine's own process at chosen moments of a tiny run: a full disk
(``os.write`` raising ENOSPC for chosen files), a read-only folder, the folder deleted. The
moment is an event: the metrics writer is wrapped so that an action runs just before a given
event is written.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import engine.runfolder as runfolder
from engine.cli import EXIT_INPUT, EXIT_OK, EXIT_TRAINING, main
from engine.config import save_config
from engine.events import Log
from engine.errors import InputError
from engine.runfolder import DiskFullError, MetricsWriter, RunLock
from tests.engine.conftest import tiny_config

pytestmark = pytest.mark.e2e  # the fault-injection suite: runs that train, faults injected

ROOT = Path(__file__).resolve().parents[2]
CFG = {"export.enabled": False, "evaluation.noise_levels": [0.0, 0.1]}


def config_file(tmp_path, **settings) -> str:
    path = tmp_path / "exp.yaml"
    save_config(tiny_config(**{**CFG, **settings}), path)
    return str(path)


def at_event(monkeypatch, event: str, stage: str | None, action) -> None:
    """Run ``action()`` once, just before the first ``event`` (of ``stage``) is written to metrics.jsonl."""
    real = MetricsWriter.__call__
    done = []

    def call(self, ev):
        if not done and ev.type == event and (stage is None or getattr(ev, "stage", None) == stage):
            done.append(True)
            action()
        return real(self, ev)

    monkeypatch.setattr(MetricsWriter, "__call__", call)


def fail_writes(monkeypatch, matches, err=errno.ENOSPC, half_first=False) -> None:
    """From now on ``os.write`` to a file whose path ``matches`` raises OSError(err); with
    ``half_first`` the first such write writes half its bytes (a short write), then fails."""
    real = os.write
    state = {"half": half_first}

    def write(fd, data):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if matches(name):
            if state["half"]:
                state["half"] = False
                return real(fd, bytes(data)[: len(data) // 2])
            raise OSError(err, os.strerror(err))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def whole_lines(path: Path) -> list[dict]:
    """Every line of metrics.jsonl, parsed (fails on a partial or corrupt line)."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), raw[-80:]
    return [json.loads(line) for line in raw.decode().splitlines()]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- a full disk


@pytest.mark.slow
@pytest.mark.parametrize("target, event, stage, half", [
    ("metrics.jsonl", "StageStarted", "teacher", True),  # a short write, then ENOSPC
    ("metrics.jsonl", "StageStarted", "evaluate", False),
    ("summary.json", "StageStarted", "evaluate", False),
    ("summary.json", "EpochEnd", "teacher", False),  # the summary saved at each epoch's end
    ("teacher.pt", "StageStarted", "teacher", False),
])
def test_a_full_disk_names_the_file_writes_error_log_and_keeps_whole_lines(tmp_path, capsys, monkeypatch,
                                                                           target, event, stage, half):
    out = tmp_path / "r"
    at_event(monkeypatch, event, stage, lambda: fail_writes(monkeypatch, lambda n: target in n, half_first=half))
    assert main([config_file(tmp_path), "--out", str(out), "-q"]) == EXIT_TRAINING
    err = one_line(capsys)
    assert "disk is full" in err and target in err, err
    assert (out / "error.log").is_file()  # the failure's own traceback, though the disk is "full" for target
    summary = json.loads((out / "summary.json").read_text())
    if target != "summary.json":
        assert summary["status"] == "failed" and target in summary["error"]
    events = whole_lines(out / "metrics.jsonl")
    if target != "metrics.jsonl":
        assert events[-1]["event"] == "RunFailed" and target in events[-1]["message"]
    assert not list(out.rglob(".*.tmp"))
    monkeypatch.undo()  # space again: the resume finishes, and the log still holds whole lines only
    assert main(["--resume", str(out), "-q"]) == EXIT_OK
    assert [e["event"] for e in whole_lines(out / "metrics.jsonl")].count("RunFinished") == 1


def test_a_full_disk_before_the_start_leaves_no_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    cfg = config_file(tmp_path)
    fail_writes(monkeypatch, lambda n: str(out) in n)
    assert main([cfg, "--out", str(out), "-q"]) == EXIT_TRAINING
    assert "disk is full" in one_line(capsys)
    assert not out.exists()


def test_the_metrics_log_drops_a_partial_last_line_and_never_writes_half_a_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"event": "Log", "message": "a"}\n{"eve')  # a crash cut the last line
    writer = MetricsWriter(tmp_path)
    assert path.read_bytes() == b'{"event": "Log", "message": "a"}\n'
    writer(Log("b"))
    fail_writes(monkeypatch, lambda n: n.endswith("metrics.jsonl"), half_first=True)
    with pytest.raises(DiskFullError, match="metrics.jsonl"):
        writer(Log("c" * 1000))
    writer(Log("d"))  # a failed writer writes nothing more (the run is stopping)
    monkeypatch.undo()
    writer.close()
    assert [e["message"] for e in whole_lines(path)] == ["a", "b"]


# ----------------------------------------------------------------------------- a read-only or vanished folder


@pytest.mark.slow
def test_a_read_only_folder_mid_run_fails_naming_the_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"

    def read_only():
        if os.geteuid() == 0:  # chmod does not stop root: the same refusal, injected
            real_open = open

            def refuse(path, mode="r", *args, **kwargs):
                if str(out) in str(path) and any(c in mode for c in "wax+"):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real_open(path, mode, *args, **kwargs)

            monkeypatch.setattr(runfolder, "open", refuse, raising=False)
        else:
            for folder in (out, out / "checkpoints"):
                folder.chmod(0o555)

    at_event(monkeypatch, "EpochEnd", "teacher", read_only)
    try:
        assert main([config_file(tmp_path), "--out", str(out), "-q"]) == EXIT_TRAINING
    finally:
        for folder in (out, out / "checkpoints"):
            if folder.is_dir():
                folder.chmod(0o755)
    err = one_line(capsys)
    assert str(out) in err and "could not write" in err and "Permission denied" in err, err
    whole_lines(out / "metrics.jsonl")
    monkeypatch.undo()
    assert main(["--resume", str(out), "-q"]) == EXIT_OK


@pytest.mark.slow
def test_a_run_whose_folder_is_deleted_stops_and_does_not_recreate_it(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    at_event(monkeypatch, "EpochEnd", "teacher", lambda: shutil.rmtree(out))
    assert main([config_file(tmp_path, **{"teacher.schedule.epochs": 3}), "--out", str(out), "-q"]) == EXIT_TRAINING
    err = one_line(capsys)
    assert f"the run folder {out} was deleted or moved" in err, err
    assert not out.exists()


# ----------------------------------------------------------------------------- the lock


HOLD = """
import sys, time
from engine.runfolder import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_deleting_the_lock_and_other_files_lets_no_second_writer_in(tmp_path, capsys):
    out = tmp_path / "r"
    assert main([config_file(tmp_path), "--out", str(out), "-q"]) == EXIT_OK
    capsys.readouterr()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        for name in (".lock", "summary.json", "metrics.jsonl"):
            (out / name).unlink(missing_ok=True)
        assert main(["--resume", str(out), "-q"]) == EXIT_INPUT
        err = one_line(capsys)
        assert "being written by process" in err and str(holder.pid) in err, err
        (out / ".writer").unlink()  # even without the note of who holds it
        with pytest.raises(InputError, match="being written by another process"):
            RunLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the holder's death releases the lock
        try:
            RunLock(out).acquire().release()
            break
        except InputError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_refused_lock_leaves_no_folder_it_created(tmp_path, monkeypatch):
    target = tmp_path / "new"

    def refuse(self):
        raise InputError("held")

    monkeypatch.setattr(RunLock, "_take", refuse)
    with pytest.raises(InputError):
        RunLock(target).acquire()
    assert not target.exists()
