"""Progress and cancellation for the inspection's long computations.

Every computation takes ``progress(done, total)`` (called from the worker thread) and
``cancelled()`` (polled between batches); :class:`Phases` turns several computations
into one overall count so a window shows a single bar.
"""

from __future__ import annotations

from typing import Callable

from engine.errors import StopRequested

ProgressFn = Callable[[int, int], None]
CancelledFn = Callable[[], bool]


class Cancelled(StopRequested):
    """The user cancelled the inspection."""


def check(cancelled: CancelledFn | None) -> None:
    """Raise :class:`Cancelled` when the user asked to cancel."""
    if cancelled is not None and cancelled():
        raise Cancelled("inspection cancelled")


def report(progress: ProgressFn | None, done: int, total: int) -> None:
    if progress is not None:
        progress(int(done), int(total))


class Phases:
    """One overall ``progress(done, total)`` over phases of known relative cost.

    ``phases.part(name)`` gives the ``progress`` callable of one phase: its own
    ``(done, total)`` is mapped onto that phase's share of ``Phases.TOTAL`` steps.
    """

    TOTAL = 1000

    def __init__(self, progress: ProgressFn | None, weights: dict[str, float]):
        self.progress = progress
        total = sum(weights.values()) or 1.0
        self.start: dict[str, float] = {}
        self.share: dict[str, float] = {}
        at = 0.0
        for name, weight in weights.items():
            self.start[name] = at
            self.share[name] = weight / total
            at += weight / total

    def part(self, name: str) -> ProgressFn:
        start, share = self.start[name], self.share[name]

        def progress(done: int, total: int) -> None:
            fraction = start + share * (done / total if total else 1.0)
            report(self.progress, round(fraction * self.TOTAL), self.TOTAL)

        return progress

    def finish(self) -> None:
        report(self.progress, self.TOTAL, self.TOTAL)
