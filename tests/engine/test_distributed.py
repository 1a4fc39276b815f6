"""Several processes (torchrun, gloo on the CPU): each trains on its part of every batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import save_config
from engine.control import RunControl
from engine.errors import ConfigError, ProcessFailed, ProcessRefused
from engine.processes import run_processes
from engine.run import plan_experiment, run_experiment
from tests.engine.conftest import tiny_config

pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"teacher.schedule.epochs": 3, "teacher.schedule.milestones": [2], "granularity.schedule.epochs": 2,
            "student.schedule.epochs": 2, "export.formats": ["weights"]}
#: a run of several processes called from this process (engine.processes): short, or long enough to
#: be stopped or killed after its first teacher epoch
QUICK = {"export.enabled": False, "evaluation.noise_levels": [0.0]}
LONG = {**QUICK, "teacher.schedule.epochs": 40, "teacher.schedule.milestones": [30]}


@pytest.fixture
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers' (two processes on a small machine)


def test_two_processes_finish_within_a_few_points_of_one(tmp_path):
    """Two CPU processes (gloo) train the demo; the figures land within 6 points of the same run in
    one process (measured: teacher 94.9 vs 93.5, student 70.7 vs 73.5): the update is the whole
    batch's, only batch norm sees half a batch in each process."""
    path = tmp_path / "exp.yaml"
    save_config(tiny_config(**SETTINGS), path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "two"
    done = subprocess.run([sys.executable, "-m", "engine.cli", str(path), "--nproc", "2", "--out", str(out), "-q"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    two = json.loads((out / "summary.json").read_text())
    assert two["status"] == "finished" and "2 processes, 32 images of each batch each" in two["device"]
    events = [json.loads(line)["event"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert events.count("PlanReady") == 1 and events.count("RunFinished") == 1  # process 0 alone writes
    assert (out / "export" / "student.safetensors").is_file()
    one = run_experiment(tiny_config(**SETTINGS), run_dir=tmp_path / "one")
    assert abs(two["teacher"]["test_acc"] - one["teacher"]["test_acc"]) <= 6.0
    assert abs(two["student"]["best_acc"] - one["student"]["best_acc"]) <= 6.0
    assert two["student"]["best_acc"] > 50.0


def test_what_several_processes_cannot_do_is_refused_at_plan_time(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError) as err:  # 64 images do not split into 3 equal parts
        plan_experiment(tiny_config())
    assert err.value.field == "data.batch_size"
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError) as err:
        plan_experiment(tiny_config(**{"distiller.name": "crd"}))
    assert err.value.field == "distiller.name" and "memory bank" in str(err.value)
    assert "2 processes" in plan_experiment(tiny_config()).device
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError) as err:
        plan_experiment(tiny_config(**{"speed.sync_batchnorm": True}))
    assert err.value.field == "speed.sync_batchnorm"
    # planned from outside the processes, as mgd-train --nproc and the studio's "all GPUs" do
    assert "2 processes, 32 images of each batch each" in plan_experiment(tiny_config(), processes=2).device
    with pytest.raises(ConfigError) as err:
        plan_experiment(tiny_config(), processes=3)
    assert err.value.field == "data.batch_size"


def test_two_processes_stop_together_and_resume(tmp_path):
    import signal

    proc, out, env = _start_two(tmp_path, epochs=12, milestone=10)
    proc.send_signal(signal.SIGTERM)  # as a scheduler would: both processes stop at the same step
    _, err = proc.communicate(timeout=120)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stopped_in"] == "teacher"
    assert proc.returncode == 0 and f"resume with: mgd-train --resume {out} --nproc 2" in err  # as in one process
    done = subprocess.run([sys.executable, "-m", "engine.cli", "--resume", str(out), "--nproc", "2", "-q"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["teacher"]["test_acc"] > 50.0


def _workers_of(launcher: int) -> dict[int, int]:
    """{rank: pid} of the worker processes a launcher started (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher and "RANK" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


def _start_two(tmp_path, epochs: int = 40, milestone: int = 30):
    """``mgd-train --nproc 2`` on a teacher of ``epochs`` epochs, left running once its first checkpoint
    is written; returns (the launcher, the run folder, the environment)."""
    import time

    path = tmp_path / "exp.yaml"
    save_config(tiny_config(**{**SETTINGS, "teacher.schedule.epochs": epochs,
                               "teacher.schedule.milestones": [milestone], "export.enabled": False}), path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    command = [sys.executable, "-m", "engine.cli", str(path), "--nproc", "2", "--out", str(out), "-q"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "teacher_last.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    return proc, out, env


def _start_two_workers(tmp_path):
    """:func:`_start_two` with the {rank: pid} of its two workers."""
    proc, out, _ = _start_two(tmp_path)
    workers = _workers_of(proc.pid)
    assert sorted(workers) == [0, 1], workers
    return proc, workers, out


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie of a dead parent is gone for our purpose
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) == "Z"
    except OSError:
        return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_a_killed_worker_ends_the_run_with_one_line_naming_it(tmp_path):
    import signal

    proc, workers, out = _start_two_workers(tmp_path)
    os.kill(workers[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "Connection" not in err, err
    failures = [line for line in err.splitlines() if line.startswith("mgd-train: training failed")]
    assert failures == [err.strip().splitlines()[-1]], err
    assert "process 1 of 2 was killed by SIGKILL" in failures[0] and f"--resume {out} --nproc 2" in failures[0]
    assert all(_gone(pid) for pid in workers.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "process 1 of 2 was killed" in summary["error"]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_launchers_death_ends_its_workers(tmp_path):
    import signal
    import time

    proc, workers, out = _start_two_workers(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while not all(_gone(pid) for pid in workers.values()):
        assert time.monotonic() < deadline, "the workers outlived their launcher"
        time.sleep(0.2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped"  # the kernel's parent-death signal: they stopped together, with a checkpoint


# ----------------------------------------------------------------------------- run_processes


def test_the_launchers_failure_is_the_record_of_the_process_that_failed_first():
    """Process 1 records its failure (as every process of a launch does, not only the one that
    writes the run folder) and exits 1; process 0 is stopped by the launcher's SIGTERM."""
    from engine.launch import run_workers

    worker = ("import os, signal, sys, time\n"
              "from engine.launch import note_failure\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
              "if os.environ['RANK'] == '1':\n"
              "    note_failure('student', 'out of memory on the device', 'oom')\n"
              "    sys.exit(1)\n"
              "time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code, failure = run_workers([sys.executable, "-c", worker], 2, env)
    assert code == 1 and failure["rank"] == 1 and failure["processes"] == 2
    assert (failure["message"], failure["kind"], failure["stage"]) == ("out of memory on the device", "oom", "student")


def test_run_processes_hands_on_each_event_and_returns_the_summary(tmp_path, one_thread):
    events = []
    summary = run_processes(tiny_config(**QUICK), 2, run_dir=tmp_path / "run", subscribers=[events.append])
    assert summary["status"] == "finished" and "2 processes" in summary["device"]
    kinds = [e.type for e in events]  # event objects, as run_experiment's subscribers get them
    assert kinds[:2] == ["PlanReady", "RunStarted"] and kinds[-1] == "RunFinished" and "Progress" in kinds
    assert kinds.count("PlanReady") == 1 and events[-1].summary["status"] == "finished"


def test_run_processes_refuses_bad_input_naming_the_field(tmp_path, one_thread, monkeypatch):
    import engine.experiment

    bad = tiny_config(**{**QUICK, "data.batch_size": 63})
    with pytest.raises(ConfigError) as err:  # checked here, before any process starts
        run_processes(bad, 2, run_dir=tmp_path / "bad")
    assert err.value.field == "data.batch_size" and not (tmp_path / "bad").exists()
    # past the launcher's check, the processes refuse it themselves: their failure record tells it
    monkeypatch.setattr(engine.experiment, "plan_experiment", lambda *args, **kwargs: None)
    with pytest.raises(ProcessRefused) as err:
        run_processes(bad, 2, run_dir=tmp_path / "bad")
    refused = err.value
    assert refused.kind == "input" and refused.field == "data.batch_size" and refused.stage == "setup"
    assert str(refused).startswith("data.batch_size: ") and "63" in str(refused) and refused.rank in (0, 1)
    assert not (tmp_path / "bad").exists()


def test_run_processes_stops_on_request_with_a_checkpoint(tmp_path, one_thread):
    control, events = RunControl(), []

    def stop_after_an_epoch(event):
        events.append(event)
        if event.type == "EpochEnd":
            control.stop()

    summary = run_processes(tiny_config(**LONG), 2, run_dir=tmp_path / "run", subscribers=[stop_after_an_epoch],
                            control=control)
    assert summary["status"] == "stopped" and summary["stopped_in"] == "teacher"
    assert events[-1].type == "RunFinished" and events[-1].stopped
    assert (tmp_path / "run" / "checkpoints" / "teacher_last.pt").is_file()
    assert 1 <= sum(e.type == "EpochEnd" for e in events) < 40


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_run_processes_names_the_process_that_was_killed(tmp_path, one_thread):
    import signal

    events, killed = [], []

    def kill_process_1(event):  # after the teacher's first epoch
        events.append(event)
        if event.type == "CheckpointWritten" and not killed:
            killed.append(_workers_of(os.getpid())[1])
            os.kill(killed[0], signal.SIGKILL)

    with pytest.raises(ProcessFailed) as err:
        run_processes(tiny_config(**LONG), 2, run_dir=tmp_path / "run", subscribers=[kill_process_1])
    failed = err.value
    assert failed.rank == 1 and str(failed).startswith("process 1 of 2 was killed by SIGKILL")
    assert failed.kind == "error" and failed.stage == "teacher" and failed.run_dir == str(tmp_path / "run")
    last = events[-1]  # the run's last event, also in its metrics.jsonl: the cause, named
    assert last.type == "RunFailed" and last.message == str(failed) and last.stage == "teacher"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == str(failed)
