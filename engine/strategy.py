"""How training is spread over processes: the one seam of the batch loop for it.

The batch loop (:mod:`engine.trainer`) and the run (:mod:`engine.experiment`) never ask whether
they run in several processes; they call their :class:`Strategy`, as Lightning's loop calls its
strategy. :class:`SingleProcess` is the identity: the whole batch in this process, nothing to
synchronise, this process writes the run folder. :class:`ProcessGroup` is a run of several
processes started by torchrun (:mod:`engine.distributed`): each process takes its shard of every
batch, gradients are averaged over the processes before each step, logged losses and counts are
those of the whole batch, batch-norm statistics come from process 0 before an evaluation, and
process 0 alone writes. :func:`current_strategy` picks one from the environment.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from engine import distributed


class Strategy:
    """One process (the base class is the identity for every seam)."""

    rank = 0
    processes = 1

    @property
    def is_writer(self) -> bool:
        """This process writes the run folder and sends the events."""
        return self.rank == 0

    def setup(self, cuda: bool) -> None:
        """Join the other processes (nothing alone)."""

    def place(self, device: torch.device) -> torch.device:
        """The device this process trains on (one GPU per process)."""
        return device

    def shard(self, *tensors: torch.Tensor) -> tuple:
        """This process's part of a batch."""
        return tensors

    def sync_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Make every process's gradients those of the whole batch (after backward, before the step)."""

    def mean(self, values: dict[str, Any]) -> dict[str, Any]:
        """Logged values (sums over this process's steps) as those of the whole batch."""
        return values

    def total(self, counts: list[float], device: torch.device | None = None) -> list[float]:
        """Counts summed over the processes (``device``: where the collective runs, the model's)."""
        return [float(c) for c in counts]

    def before_evaluation(self, modules: Iterable[torch.nn.Module]) -> None:
        """Make every process evaluate (and checkpoint) the same model."""

    def any(self, flag: bool, device: torch.device) -> bool:
        """True when ``flag`` is true in any process (a stop request)."""
        return flag

    def broadcast_object(self, obj: Any) -> Any:
        """The writer's ``obj`` in every process."""
        return obj

    def finish(self) -> None:
        """Leave the process group."""


class SingleProcess(Strategy):
    """Training in this process alone."""


class ProcessGroup(Strategy):
    """One of several processes started by torchrun (one GPU each, or CPU processes with gloo)."""

    def __init__(self) -> None:
        self.rank, self.processes = distributed.world()

    def setup(self, cuda: bool) -> None:
        distributed.init(cuda=cuda)

    def place(self, device: torch.device) -> torch.device:
        return torch.device("cuda", distributed.local_rank()) if device.type == "cuda" else device

    def shard(self, *tensors):
        return distributed.shard(*tensors)

    def sync_gradients(self, params) -> None:
        distributed.average_gradients(params)

    def mean(self, values: dict[str, Any]) -> dict[str, Any]:
        if not distributed.active() or not values:
            return values
        keys = list(values)
        total = distributed.reduce_sum(torch.stack([torch.as_tensor(values[k]).float() for k in keys]))
        return dict(zip(keys, total / self.processes))

    def total(self, counts: list[float], device: torch.device | None = None) -> list[float]:
        if not distributed.active():
            return [float(c) for c in counts]
        values = torch.tensor(counts, dtype=torch.float64, device=device or "cpu")
        return [float(v) for v in distributed.reduce_sum(values)]

    def before_evaluation(self, modules) -> None:
        distributed.broadcast_buffers(modules)

    def any(self, flag: bool, device: torch.device) -> bool:
        return distributed.any_process(flag, device)

    def broadcast_object(self, obj: Any) -> Any:
        return distributed.broadcast_object(obj)

    def finish(self) -> None:
        distributed.finish()


def current_strategy() -> Strategy:
    """The strategy of this process: a process group under torchrun, else one process."""
    return ProcessGroup() if distributed.world()[1] > 1 else SingleProcess()


__all__ = ["Strategy", "SingleProcess", "ProcessGroup", "current_strategy"]
