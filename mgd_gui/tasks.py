"""The studio's one way to work in the background.

A :class:`Tasks` lane runs functions one at a time, in order, in a worker thread of its own,
and tells the GUI thread what became of them through Qt signals: ``done`` (the result),
``failed`` (the exception, its traceback in ``details``), ``progress`` (done, total, text) and
``message`` (values a task streams while it runs, e.g. a run's events). Every signal names the
task's *kind* and its *token*.

The newest request of a kind wins: submitting a kind again drops a request of that kind still
waiting, tells a running one that it is cancelled (:attr:`TaskState.cancelled`), and withholds
the answers of both, so a view only ever hears about the question it asked last. A task that
wants to report progress, stream values or notice a cancel takes a :class:`TaskState` as its
first argument (``submit(..., state=True)``). ``close`` cancels everything and lets the thread
end; a closed lane accepts nothing and tells nothing, so a window can close while a task runs.

The plan checks, previews, look-ups, export, inspect, review and engine runs (one process or
several) all use it (the pattern of Orange's ``TaskState`` and napari's ``thread_worker``).
"""

from __future__ import annotations

import itertools
import queue
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal

__all__ = ["Progress", "TaskState", "Tasks"]


@dataclass(frozen=True)
class Progress:
    done: float
    total: float | None = None
    text: str = ""

    @property
    def fraction(self) -> float | None:
        return None if not self.total else max(0.0, min(1.0, self.done / self.total))


class TaskState:
    """What a running task knows of the GUI's interest in it (used in the worker thread)."""

    def __init__(self, lane: "Tasks", kind: str, token: int):
        self._lane, self.kind, self.token = lane, kind, token
        self._cancel = threading.Event()
        self._ended = threading.Event()

    @property
    def cancelled(self) -> bool:
        """True once a newer request of the same kind came, or the task was cancelled, or the lane closed."""
        return self._cancel.is_set()

    def progress(self, done: float, total: float | None = None, text: str = "") -> None:
        self._lane._tell("progress", self, Progress(done, total, text))

    def emit(self, value: Any) -> None:
        """Stream a value to the GUI thread (``message``), in order with the task's other signals."""
        self._lane._tell("message", self, value)

    def wait_cancelled(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on a cancel; True when cancelled."""
        return self._cancel.wait(timeout)


class Tasks(QObject):
    """One background lane: ``submit(kind, fn, *args)``; answers arrive as signals in the GUI thread."""

    done = Signal(str, int, object)  # kind, token, result
    failed = Signal(str, int, object)  # kind, token, exception (``details``: its traceback)
    progress = Signal(str, int, object)  # kind, token, Progress
    message = Signal(str, int, object)  # kind, token, a value the task streamed
    # the worker thread's side: (signal name, kind, token, value), queued to the lane's own thread,
    # where an answer is told only if it is still wanted then (a newer request may have come meanwhile)
    _answer = Signal(str, str, int, object)

    def __init__(self, parent: QObject | None = None, *, name: str = "mgd-tasks"):
        super().__init__(parent)
        self._answer.connect(self._deliver)
        self.name = name
        self._queue: queue.Queue = queue.Queue()
        self._latest: dict[str, int] = {}
        self._states: dict[int, TaskState] = {}  # the waiting and running tasks, by token
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- the GUI thread's side ---------------------------------------------------------------
    def submit(self, kind: str, fn: Callable[..., Any], *args: Any, state: bool = False, **kwargs: Any) -> int:
        """Run ``fn(*args, **kwargs)`` (``fn(task_state, *args, **kwargs)`` with ``state=True``) after
        the lane's earlier tasks; a waiting or running task of the same kind is superseded. Returns
        the task's token (0 when the lane is closed)."""
        if self._closed:
            return 0
        token = next(self._tokens)
        task = TaskState(self, kind, token)
        with self._lock:
            previous = self._latest.get(kind)
            self._latest[kind] = token
            older = self._states.get(previous) if previous is not None else None
            self._states[token] = task
        if older is not None:
            older._cancel.set()
        self._queue.put((task, fn, args, kwargs, state))
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        return token

    def on_answer(self, slot: Callable[[str, int, Any, BaseException | None], None]) -> None:
        """Connect ``slot(kind, token, result, error)`` to both ends of a task: ``done`` (error None)
        and ``failed`` (result None)."""
        self.done.connect(lambda kind, token, result: slot(kind, token, result, None))
        self.failed.connect(lambda kind, token, error: slot(kind, token, None, error))

    def is_latest(self, kind: str, token: int) -> bool:
        """True when ``token`` is the newest request of ``kind`` (its answers are still wanted)."""
        with self._lock:
            return not self._closed and self._latest.get(kind) == token

    def cancel(self, kind: str | None = None, *, drop: bool = True) -> None:
        """Tell every waiting or running task of ``kind`` (of every kind: None) that it is cancelled.
        With ``drop`` its answers are dropped too; without, the task's own end (its result, or the
        error it raises on noticing the cancel) is still told."""
        with self._lock:
            kinds = [kind] if kind is not None else list(self._latest)
            for k in kinds:
                token = self._latest.pop(k, None) if drop else self._latest.get(k)
                task = self._states.get(token) if token is not None else None
                if task is not None:
                    task._cancel.set()

    def busy(self, kind: str | None = None) -> bool:
        """True while a task (of ``kind``) whose answer is wanted waits or runs."""
        with self._lock:
            return any(t.token == self._latest.get(t.kind) and (kind is None or t.kind == kind)
                       for t in self._states.values())  # answered tasks leave _states

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every task submitted so far has ended (for shutdown and tests); True if they did."""
        with self._lock:
            tasks = list(self._states.values())
        for task in tasks:
            if not task._ended.wait(timeout):
                return False
        return True

    def close(self, timeout: float = 0.0) -> bool:
        """Cancel everything and let the thread end; wait up to ``timeout`` seconds for it (a task
        that ignores its cancel goes on in a daemon thread: it never keeps the process alive).
        True when no task is running any more."""
        self._closed = True
        self.cancel()
        self._queue.put(None)
        if self._thread is not None and timeout > 0:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    # -- the worker thread's side --------------------------------------------------------------
    def _wanted(self, task: TaskState) -> bool:
        return self.is_latest(task.kind, task.token)

    def _tell(self, signal: str, task: TaskState, value: Any) -> None:
        if not self._wanted(task):
            return
        try:
            self._answer.emit(signal, task.kind, task.token, value)
        except RuntimeError:  # the lane is gone (window closed): nobody to tell
            task._cancel.set()

    def _deliver(self, signal: str, kind: str, token: int, value: Any) -> None:
        if self.is_latest(kind, token):
            getattr(self, signal).emit(kind, token, value)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            task, fn, args, kwargs, with_state = item
            outcome = None
            try:
                if not self._wanted(task):
                    continue  # superseded while it waited
                try:
                    outcome = ("done", fn(task, *args, **kwargs) if with_state else fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - reported to the GUI, never fatal
                    exc.details = traceback.format_exc()  # type: ignore[attr-defined]
                    outcome = ("failed", exc)
            finally:
                with self._lock:  # the task has ended before its answer is told: whoever hears it finds
                    self._states.pop(task.token, None)  # the lane free (busy() False, wait() returns)
                task._ended.set()
            if outcome is not None:
                self._tell(outcome[0], task, outcome[1])
