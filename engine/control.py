"""Pause, resume and stop a run from another thread (the GUI, a signal handler)."""

from __future__ import annotations

import threading


class RunControl:
    """Thread-safe switches that the training loop checks between steps.

    ``stop()`` makes the loop write a checkpoint and end the run; a paused loop waits
    without using the CPU until ``resume()`` or ``stop()``.
    """

    def __init__(self) -> None:
        self._running = threading.Event()  # set = not paused
        self._running.set()
        self._stop = threading.Event()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused loop so that it can stop

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Block while paused; return True if it had to wait."""
        if self._running.is_set():
            return False
        self._running.wait(timeout)
        return True
