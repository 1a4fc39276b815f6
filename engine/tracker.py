"""Best-weights bookkeeping, one object for every stage that keeps "the best epoch".

A :class:`BestTracker` watches named modules (one per head, per peer, the student...)
and, after each evaluation, keeps a CPU copy of a module's weights when its metric beats
its best so far. Like a Lightning callback it owns its state through :meth:`state_dict`
and :meth:`load_state_dict`, which the stage checkpoints hold, so resuming a stage
resumes its bookkeeping too.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn


def cpu_state(module: nn.Module) -> dict:
    """A detached CPU copy of a module's state dict (for 'best weights' snapshots)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class BestTracker:
    """For each named module: the best metric, its epoch and a copy of the weights then."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules = dict(modules)
        self.metric = {k: -math.inf for k in self.modules}
        self.epoch = {k: 0 for k in self.modules}
        self.state: dict[str, dict | None] = {k: None for k in self.modules}

    def update(self, key: str, metric: float, epoch: int) -> bool:
        """Record ``metric`` of ``key`` after ``epoch``; keep its weights if it is the best so far
        (ties keep the earlier epoch)."""
        if metric > self.metric[key]:
            self.metric[key], self.epoch[key] = float(metric), int(epoch)
            self.state[key] = cpu_state(self.modules[key])
            return True
        return False

    def best_key(self, keys: list[str] | None = None) -> str:
        """The key (of ``keys``, default all) with the highest best metric (the first one on ties)."""
        return max(keys or list(self.modules), key=lambda k: self.metric[k])

    def best_state(self, key: str) -> dict:
        """The best weights of ``key``; its current weights when it was never evaluated."""
        state = self.state[key]
        return state if state is not None else cpu_state(self.modules[key])

    def restore(self, key: str | None = None) -> None:
        """Load the best weights into ``key``'s module (every module when ``key`` is None)."""
        for k in [key] if key is not None else list(self.modules):
            if self.state[k] is not None:
                self.modules[k].load_state_dict(self.state[k])

    def best_metric(self, key: str) -> float | None:
        value = self.metric[key]
        return None if value == -math.inf else value

    def state_dict(self) -> dict[str, Any]:
        return {k: {"metric": self.best_metric(k), "epoch": self.epoch[k], "state": self.state[k]}
                for k in self.modules}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in self.modules if k not in state]
        if missing:
            raise KeyError(f"best-weights state lacks {missing}")
        for k in self.modules:
            entry = state[k]
            self.metric[k] = -math.inf if entry["metric"] is None else float(entry["metric"])
            self.epoch[k] = int(entry["epoch"])
            self.state[k] = entry["state"]
