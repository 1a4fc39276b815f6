"""The studio's one background primitive (mgd_gui/tasks.py): answers as signals in the GUI
thread, the newest request of a kind wins, cancel, progress and streamed values, errors."""

from __future__ import annotations

import threading

import pytest

from mgd_gui.tasks import Tasks


@pytest.fixture
def lane(qtbot):
    tasks = Tasks()
    heard = {"done": [], "failed": [], "progress": [], "message": []}
    for name, items in heard.items():
        getattr(tasks, name).connect(lambda kind, token, value, items=items: items.append((kind, token, value)))
    yield tasks, heard
    tasks.close(timeout=2.0)


def test_an_answer_arrives_in_the_gui_thread(lane, qtbot):
    tasks, heard = lane
    threads = []
    tasks.done.connect(lambda *_: threads.append(threading.current_thread()))
    token = tasks.submit("sum", sum, [1, 2, 3])
    qtbot.waitUntil(lambda: bool(heard["done"]), timeout=5000)
    assert heard["done"] == [("sum", token, 6)] and threads == [threading.main_thread()]
    assert not tasks.busy()


def test_the_newest_request_of_a_kind_wins(lane, qtbot):
    tasks, heard = lane
    release = threading.Event()

    def slow(task, value):
        release.wait(5)
        return value if not task.cancelled else "late"

    first = tasks.submit("count", slow, "first", state=True)
    waiting = tasks.submit("count", slow, "waiting", state=True)
    other = tasks.submit("other", lambda: "other kind")
    newest = tasks.submit("count", slow, "newest", state=True)
    assert not tasks.is_latest("count", first) and not tasks.is_latest("count", waiting)
    release.set()
    qtbot.waitUntil(lambda: len(heard["done"]) == 2, timeout=5000)
    qtbot.wait(100)
    assert sorted(heard["done"]) == [("count", newest, "newest"), ("other", other, "other kind")]


def test_a_running_task_sees_it_is_cancelled_and_its_answer_is_dropped(lane, qtbot):
    tasks, heard = lane
    started, seen = threading.Event(), []

    def work(task):
        started.set()
        seen.append(task.wait_cancelled(5))
        task.emit("after the cancel")
        return "result"

    tasks.submit("job", work, state=True)
    started.wait(5)
    tasks.cancel("job")
    qtbot.waitUntil(lambda: bool(seen), timeout=5000)
    qtbot.wait(100)
    assert seen == [True] and heard["done"] == [] and heard["message"] == []
    assert not tasks.busy("job")


def test_progress_and_streamed_values_come_in_order_before_the_answer(lane, qtbot):
    tasks, heard = lane
    order = []
    for name in ("progress", "message", "done"):
        getattr(tasks, name).connect(lambda *_, name=name: order.append(name))

    def work(task):
        for i in range(3):
            task.progress(i + 1, 3, f"step {i + 1}")
            task.emit(i)
        return "end"

    tasks.submit("job", work, state=True)
    qtbot.waitUntil(lambda: bool(heard["done"]), timeout=5000)
    assert order == ["progress", "message"] * 3 + ["done"]
    assert [v for *_, v in heard["message"]] == [0, 1, 2]
    assert [(p.done, p.total, p.text, p.fraction) for *_, p in heard["progress"]][-1] == (3, 3, "step 3", 1.0)


def test_an_error_is_a_signal_with_its_traceback_and_the_lane_goes_on(lane, qtbot):
    tasks, heard = lane

    def broken():
        raise ValueError("not an image")

    tasks.submit("a", broken)
    tasks.submit("b", lambda: 2)
    qtbot.waitUntil(lambda: bool(heard["done"]), timeout=5000)
    (kind, _, error), = heard["failed"]
    assert kind == "a" and isinstance(error, ValueError) and "not an image" in error.details
    assert [v for *_, v in heard["done"]] == [2]


def test_a_closed_lane_tells_nothing_and_takes_nothing(lane, qtbot):
    tasks, heard = lane
    started = threading.Event()

    def work(task):
        started.set()
        task.wait_cancelled(5)
        return "too late"

    tasks.submit("job", work, state=True)
    started.wait(5)
    assert tasks.close(timeout=2.0)  # the running task saw the cancel and ended
    assert tasks.submit("job", lambda: 1) == 0
    qtbot.wait(100)
    assert heard["done"] == []


def test_an_answer_already_on_its_way_is_dropped_when_a_newer_request_comes(lane, qtbot):
    tasks, heard = lane
    release = threading.Event()
    tasks.submit("count", lambda: "old")
    assert tasks.wait(5)  # its answer is queued to the GUI thread, not delivered yet
    newest = tasks.submit("count", lambda: release.wait(5) and "new")
    qtbot.wait(100)  # the old answer is delivered now, or never
    assert heard["done"] == []
    release.set()
    qtbot.waitUntil(lambda: bool(heard["done"]), timeout=5000)
    assert heard["done"] == [("count", newest, "new")]
