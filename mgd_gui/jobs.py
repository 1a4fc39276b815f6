"""One background thread for the GUI's torch-side look-ups (devices, data preview,
parameter counts, checkpoint checks), so that the GUI thread never imports torch.

Jobs run one at a time, in order; when several jobs of the same kind are waiting, only
the newest runs (the user changed the architecture three times: count once).
"""

from __future__ import annotations

import itertools
import queue
import threading
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal


class JobThread(QObject):
    """``submit(kind, fn, *args)``; ``finished(kind, token, result, error)`` arrives in the GUI thread."""

    finished = Signal(str, int, object, object)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._queue: queue.Queue = queue.Queue()
        self._latest: dict[str, int] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, kind: str, fn: Callable[..., Any], *args: Any) -> int:
        if self._closed:
            return 0
        token = next(self._tokens)
        with self._lock:
            self._latest[kind] = token
        self._queue.put((kind, token, fn, args))
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mgd-jobs", daemon=True)
            self._thread.start()
        return token

    def is_latest(self, kind: str, token: int) -> bool:
        with self._lock:
            return self._latest.get(kind) == token

    def close(self, timeout: float = 2.0) -> None:
        self._closed = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, token, fn, args = item
            if not self.is_latest(kind, token):
                continue  # superseded while waiting
            try:
                result, error = fn(*args), None
            except Exception as exc:  # reported to the GUI, never fatal
                result, error = None, exc
                error.details = traceback.format_exc()  # type: ignore[attr-defined]
            if self._closed:
                return
            try:
                self.finished.emit(kind, token, result, error)
            except RuntimeError:  # the receiver is gone (window closed)
                return
