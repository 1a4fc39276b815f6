"""The window's run state machine, without Qt: every transition in one table.

States: ``idle`` (nothing trains), ``running``, ``pausing`` (asked; the engine pauses after its
current step), ``paused`` (the engine said so), ``stopping`` (asked; the run ends after its
current step and keeps its checkpoint). The user's requests (:meth:`pause`, :meth:`resume`,
:meth:`stop`) and the engine's answers (:meth:`paused`, :meth:`resumed`, :meth:`ended`) are
the only ways to change it; a request that does not apply in the current state changes nothing
and returns False. What the window shows (which actions are on, Pause or Resume) is read from
:meth:`actions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

STATES = ("idle", "running", "pausing", "paused", "stopping")

#: (state, what happened) -> the next state; anything else is not a transition
TRANSITIONS: dict[tuple[str, str], str] = {
    ("idle", "start"): "running",
    ("running", "pause"): "pausing",
    ("running", "paused"): "paused",  # the engine paused (a pause asked another way, e.g. the queue)
    ("pausing", "paused"): "paused",
    ("pausing", "resume"): "running",
    ("paused", "resume"): "running",
    ("pausing", "resumed"): "running",
    ("paused", "resumed"): "running",
    ("running", "stop"): "stopping",
    ("pausing", "stop"): "stopping",
    ("paused", "stop"): "stopping",
    ("running", "ended"): "idle",
    ("pausing", "ended"): "idle",
    ("paused", "ended"): "idle",
    ("stopping", "ended"): "idle",
    ("idle", "ended"): "idle",
}


@dataclass(frozen=True)
class Actions:
    """What the run actions offer in a state."""

    run: bool  # Run (the form's validity is the window's to add)
    pause: bool  # Pause or Resume
    pause_label: str  # "Pause" or "Resume"
    stop: bool
    busy: bool  # something trains: the runs panel keeps its hands off the active runs


class RunState:
    """The current state, with listeners told of every change (``listener(old, new)``)."""

    def __init__(self) -> None:
        self.state = "idle"
        self.listeners: list[Callable[[str, str], None]] = []

    def _go(self, happened: str) -> bool:
        new = TRANSITIONS.get((self.state, happened))
        if new is None:
            return False
        old, self.state = self.state, new
        if new != old:
            for listener in list(self.listeners):
                listener(old, new)
        return True

    # the user's requests
    def start(self) -> bool:
        return self._go("start")

    def pause(self) -> bool:
        return self._go("pause")

    def resume(self) -> bool:
        return self._go("resume")

    def stop(self) -> bool:
        return self._go("stop")

    def toggle_pause(self) -> str | None:
        """Pause a running run or resume a paused one: "pause", "resume" or None (neither applies)."""
        if self.pause():
            return "pause"
        if self.resume():
            return "resume"
        return None

    # the engine's answers
    def paused(self) -> bool:
        return self._go("paused")

    def resumed(self) -> bool:
        return self._go("resumed")

    def ended(self) -> bool:
        return self._go("ended")

    @property
    def idle(self) -> bool:
        return self.state == "idle"

    def actions(self, *, pausable: bool = True, engine_active: bool = False) -> Actions:
        """The run actions in this state (``pausable``: the kind of run can pause; ``engine_active``:
        the engine still runs, e.g. just after its end was asked for)."""
        s = self.state
        paused = s in ("paused", "pausing")
        return Actions(run=s == "idle" and not engine_active,
                       pause=pausable and s in ("running", "paused", "pausing"),
                       pause_label="Resume" if paused else "Pause",
                       stop=s in ("running", "pausing", "paused"),
                       busy=engine_active or s != "idle")
