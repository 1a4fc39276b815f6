"""One frozen-teacher forward pass per batch, shared by every student that learns from it.

The batch loop (:func:`engine.trainer.fit_sessions`) makes one :class:`TeacherPass` per batch
and hands it to each session's task; a student task asks it for the teacher's (and the teacher
heads') outputs, which are computed the first time they are asked for and reused by the other
students of the batch (students in lockstep). The teacher is frozen and in eval mode, so the
outputs are the same whoever asks first.
"""

from __future__ import annotations

import torch


class TeacherPass:
    """The frozen teacher's (and heads') outputs on one batch, computed once for every student
    (per pre-activation flag: AB compares pre-activation features)."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self._teacher: dict[bool, tuple] = {}
        self._heads: dict[bool, tuple] = {}

    @torch.no_grad()
    def teacher(self, model, preact: bool) -> tuple:
        if preact not in self._teacher:
            self._teacher[preact] = model(self.x, preact=preact)
        return self._teacher[preact]

    @torch.no_grad()
    def heads(self, heads, features, preact: bool) -> tuple:
        if preact not in self._heads:
            self._heads[preact] = heads(features[-1])
        return self._heads[preact]


__all__ = ["TeacherPass"]
