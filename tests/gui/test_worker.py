"""The engine runner: events reach the GUI thread in order, then exactly one of
finished/failed; the engine thread runs at a lower CPU priority than the GUI."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from engine.errors import InputError
from engine.events import Log, RunStarted
from mgd_gui.run.worker import EngineRunner, lower_thread_priority


def test_events_arrive_in_order_in_the_gui_thread_then_finished(qtbot):
    gui = threading.get_ident()
    seen: list = []

    def engine(config, *, subscribers, control, **kw):
        subscribers[0](RunStarted("/x", {}, "cpu"))
        for i in range(50):
            subscribers[0](Log(f"m{i}"))
        return {"status": "finished"}

    runner = EngineRunner(engine)
    runner.event.connect(lambda e: seen.append((e["event"], e.get("message"), threading.get_ident())))
    with qtbot.waitSignal(runner.finished, timeout=10000) as blocker:
        runner.start({}, runs_root="/tmp")
    assert blocker.args == [{"status": "finished"}]
    assert [m for _, m, _ in seen[1:]] == [f"m{i}" for i in range(50)]
    assert all(t == gui for _, _, t in seen)
    assert not runner.active

    release = threading.Event()
    runner.engine = lambda config, **kw: release.wait(10) and {"status": "finished"}
    with qtbot.waitSignal(runner.finished, timeout=10000):
        runner.start({}, runs_root="/tmp")
        assert runner.active
        with pytest.raises(RuntimeError):  # one run at a time
            runner.start({}, runs_root="/tmp")
        release.set()
    assert not runner.active


def test_an_exception_before_any_event_is_reported_as_a_failure(qtbot):
    def engine(config, **kw):
        raise InputError("data.root: no such folder")

    runner = EngineRunner(engine)
    with qtbot.waitSignal(runner.failed, timeout=10000) as blocker:
        runner.start({}, runs_root="/tmp")
    info = blocker.args[0]
    assert info["message"] == "InputError: data.root: no such folder" and info["kind"] == "input"
    assert "Traceback" in info["details"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux-only")
def test_the_engine_thread_gets_a_lower_priority():
    seen = {}

    def work():
        lower_thread_priority(7, batch=True)
        seen["worker"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        seen["policy"] = os.sched_getscheduler(threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["worker"] >= min(19, max(before, 7))
    assert seen["policy"] == os.SCHED_BATCH
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the GUI thread keeps its own


def test_several_processes_run_as_a_subprocess_whose_events_are_followed(qtbot, tmp_path):
    """"All GPUs": the run goes to ``mgd-train --nproc`` (torchrun; here two CPU processes with gloo)
    and its events are read back from the run folder; a stop keeps the checkpoint and a resume
    finishes; bad input is refused with the launcher's message."""
    from engine.config import load_config
    from engine.events import EpochEnd
    from tests.engine.conftest import tiny_config

    cfg = tiny_config(**{"teacher.schedule.epochs": 8, "teacher.schedule.milestones": [6],
                         "granularity.schedule.epochs": 1, "student.schedule.epochs": 1, "export.enabled": False})
    runner = EngineRunner()
    seen: list[dict] = []
    runner.event.connect(seen.append)
    epochs = []

    def stop_after_first_epoch(e):
        if e["event"] == EpochEnd.__name__:
            epochs.append(e)
            runner.stop()

    runner.event.connect(stop_after_first_epoch)
    out = tmp_path / "run"
    with qtbot.waitSignal(runner.finished, timeout=240000) as blocker:
        runner.start_processes(cfg, 2, run_dir=out, runs_root=tmp_path)
    stopped = blocker.args[0]
    assert stopped["status"] == "stopped" and stopped["stopped_in"] == "teacher", stopped
    kinds = [e["event"] for e in seen]
    assert kinds[:2] == ["PlanReady", "RunStarted"] and kinds[-1] == "RunFinished"
    assert "Progress" in kinds  # the engine's progress, read back from metrics.jsonl like every event
    assert "2 processes, 32 images of each batch each" in seen[1]["device"]
    assert epochs and len(epochs) < 8  # stopped early, at the same step in both processes
    assert load_config(out / "config.yaml").teacher.schedule.epochs == 8

    runner.event.disconnect(stop_after_first_epoch)
    seen.clear()
    with qtbot.waitSignal(runner.finished, timeout=240000) as blocker:
        runner.start_processes(None, 2, run_dir=out, runs_root=tmp_path, resume=True)
    done = blocker.args[0]
    assert done["status"] == "finished" and done["student"]["best_acc"] > 0
    assert [e["event"] for e in seen][0] == "PlanReady"  # only the new session's events: the past is on disk
    assert sum(e["event"] == "PlanReady" for e in seen) == 1

    bad = tiny_config(**{"data.batch_size": 63})
    with qtbot.waitSignal(runner.failed, timeout=120000) as blocker:
        runner.start_processes(bad, 2, run_dir=tmp_path / "bad", runs_root=tmp_path)
    info = blocker.args[0]
    assert info["kind"] == "input" and "data.batch_size" in info["message"] and "63" in info["message"]
    assert not (tmp_path / "bad").exists()
