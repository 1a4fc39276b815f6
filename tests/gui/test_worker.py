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
