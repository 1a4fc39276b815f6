"""Training on several processes (GPUs, or CPU processes with gloo), one shard of every batch each.

``mgd-train CONFIG --nproc N`` (or ``torchrun --nproc_per_node N -m engine.cli CONFIG``)
starts N processes. Each builds the same models from the same seeds and walks the same
batches (shuffling and augmentation derive from seed, epoch and step); process ``r`` trains
on the ``r``-th of N equal shards of every batch, and the gradients are averaged over the
processes before each optimiser step, as DistributedDataParallel does, so the update is
that of the whole batch: ``data.batch_size`` stays the global batch (each process holds
``batch_size / N`` of it) and the learning rate needs no rescaling. Batch-norm statistics
are each process's own (``speed.sync_batchnorm`` synchronises them on GPUs); its running
statistics are broadcast from process 0 before every evaluation, so that every process
evaluates (the whole test set) and checkpoints the same model. Process 0 alone writes the
run folder and sends events; a stop request (Ctrl-C, SIGTERM, the studio) reaches every
process, and all stop at the same step.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import torch


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and \
        torch.distributed.get_world_size() > 1


def is_main() -> bool:
    return world()[0] == 0


def init(cuda: bool) -> None:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on the CPU); once."""
    if world()[1] > 1 and not torch.distributed.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank())
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")


def shard(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """This process's part of a batch: the rank-th of world-size equal chunks."""
    if not active():
        return tensors
    rank, size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return tuple(t.tensor_split(size)[rank] if t is not None else None for t in tensors)


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients over the processes, in one flat all-reduce."""
    if not active():
        return
    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).clone()
        offset += n


def broadcast_buffers(modules: Iterable[torch.nn.Module]) -> None:
    """Process 0's buffers (batch-norm running statistics) in every process."""
    if not active():
        return
    for module in modules:
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer.data, src=0)


def reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum over the processes (a copy)."""
    if not active():
        return values
    out = values.detach().clone()
    torch.distributed.all_reduce(out)
    return out


def any_process(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true in any process (a stop request, for one)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj: Any) -> Any:
    """Process 0's ``obj`` in every process."""
    if world()[1] <= 1 or not torch.distributed.is_initialized():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def finish() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
