"""Students in lockstep: which runs can train their students together, off one teacher pass.

The runs of a comparison that share a seed and a teacher see the same batches in the same
order (shuffling and augmentation derive from seed, epoch and step) and distil from the same
frozen teacher (and heads). The driver (:mod:`engine.driver`) trains such runs' student stages
together through the one batch loop (:func:`engine.trainer.fit_sessions`): per batch the
teacher's outputs are computed once (:class:`engine.teacher_pass.TeacherPass`) and every student
takes its own optimisation step with its own distiller, optimiser, schedule, random generator,
events, checkpoints and run folder. This module decides who trains with whom
(:func:`group_runs`) and what one more student costs (:func:`student_memory_mib`).

On the CPU, with the same thread count, every student ends bit-identical to the same run
done alone: the teacher pass is the same computation on the same batch, and each student
draws from its own random-generator state (:class:`engine.trainer.FitSession` with
``own_rng``).
"""

from __future__ import annotations

import torch

from engine.jobs import MAX_STUDENTS  # the one limit, beside the jobs it groups
from engine.teacher_pass import TeacherPass


def lockstep_key(cfg) -> tuple:
    """Runs with equal keys see the same batches in the same order (data, seed, batch size), for the
    same number of epochs, with the same numerics; they can train their students together when
    their teachers are the same too (:func:`fingerprint`)."""
    d = cfg.data
    return (d.dataset, d.root, d.image_size, d.test_fraction, d.augment, getattr(d, "normalize", None),
            d.batch_size, cfg.seed, cfg.device, cfg.speed.amp, cfg.speed.channels_last, cfg.student.schedule.epochs)


def fingerprint(module) -> str | None:
    """A digest of a module's weights (None for no module): equal digests, the same frozen teacher."""
    if module is None:
        return None
    import hashlib

    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def group_runs(runs: list) -> list[list]:
    """Runs that can train together: the same batches and schedule length (:func:`lockstep_key`),
    the same teacher weights and, among those with granularity heads, the same heads. A run
    without a teacher (the student-alone reference) joins a group of the same batches."""
    groups: dict[tuple, list] = {}
    for run in runs:
        groups.setdefault((lockstep_key(run.cfg), fingerprint(run.teacher)), []).append(run)
    for key, teacher in list(groups):  # a run without a teacher (the student alone) shares only the batches
        host = next((k for k in groups if k[0] == key and k[1] is not None), None)
        if teacher is None and host is not None:
            groups[host] += groups.pop((key, None))
    out = []
    for members in groups.values():
        by_heads: dict[str, list] = {}
        for run in members:
            if run.teacher_heads is not None:
                by_heads.setdefault(fingerprint(run.teacher_heads), []).append(run)
        parts = list(by_heads.values()) or [[]]
        parts[0] = [run for run in members if run.teacher_heads is None] + parts[0]
        out += [part for part in parts if part]
    return out


def student_memory_mib(run) -> float:
    """What one more student costs in memory: its weights, gradients and momentum (and those of
    its heads' encoders and its baseline's modules), in MiB."""
    params = sum(p.numel() * p.element_size() for p in run.student.parameters())
    if run.student_heads is not None:
        params += sum(p.numel() * p.element_size() for p in run.student_heads.encoder_parameters())
    if run.distiller is not None:
        params += sum(p.numel() * p.element_size() for p in run.distiller.parameters())
        params += sum(b.numel() * b.element_size() for b in run.distiller.buffers())  # CRD's memory bank
    return 3 * params / 2**20


__all__ = ["MAX_STUDENTS", "TeacherPass", "group_runs", "lockstep_key", "fingerprint", "student_memory_mib"]
