"""Similarity-preserving KD (Tung & Mori 2019), as in RepDistiller's ``similarity``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.distillers import register_distiller
from engine.distillers.base import Distiller


def similarity(f: torch.Tensor) -> torch.Tensor:
    """Row-normalised batch Gram matrix ``normalize(F F^T)`` of flattened features, ``(N, N)``."""
    flat = f.flatten(1)
    return F.normalize(flat @ flat.t(), dim=1)


@register_distiller("sp")
class SP(Distiller):
    """SP (Tung & Mori 2019): the student's batch similarity matrix of the last stage output matches the teacher's."""

    # METHOD.md: (w_ce, w_div, w_kd) = (1, 1, 3000); features[-2] of each model.
    default_weights = (1.0, 1.0, 3000.0)

    # The batch Gram matrix is N x N whatever the channels and spatial size, so any pair works.
    def forward(self, student, teacher, labels, indices):
        g_s = similarity(student.features[-2])
        g_t = similarity(teacher.features[-2].detach())
        n = g_s.shape[0]
        return {"sp": (g_t - g_s).pow(2).sum() / (n * n)}
