"""Neuron selectivity transfer (Huang & Wang 2017), as in RepDistiller's ``nst``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.distillers import register_distiller
from engine.distillers._feature_adapt import pool_to_common, stage_pairs
from engine.distillers.base import Distiller


def poly_kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over samples and channel pairs of the polynomial kernel ``(a_i . b_j)^2`` (d=2, c=0);
    ``a``: ``(N, Ca, L)``, ``b``: ``(N, Cb, L)``."""
    return torch.bmm(b, a.transpose(1, 2)).pow(2).mean()


def nst_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Squared MMD with a polynomial kernel between the channels' spatial distributions."""
    f_s, f_t = pool_to_common(f_s, f_t)
    s = F.normalize(f_s.flatten(2), dim=2)
    t = F.normalize(f_t.flatten(2), dim=2)
    return poly_kernel_mean(t, t).detach() + poly_kernel_mean(s, s) - 2 * poly_kernel_mean(s, t)


@register_distiller("nst")
class NST(Distiller):
    """NST (Huang & Wang 2017): MMD with a polynomial kernel between student and teacher neuron-selectivity patterns at every stage output."""

    # METHOD.md: (w_ce, w_div, w_kd) = (1, 1, 50) (RepDistiller's default).
    default_weights = (1.0, 1.0, 50.0)

    def __init__(self, context):
        super().__init__(context)
        # stage outputs features[1:-1], aligned from the last stage backwards; the kernel
        # compares channels with channels, so the channel counts may differ
        self.pairs = stage_pairs(context.student_shapes, context.teacher_shapes)

    def forward(self, student, teacher, labels, indices):
        loss = 0.0
        for i_s, i_t in self.pairs:
            loss = loss + nst_loss(student.features[i_s], teacher.features[i_t].detach())
        return {"nst": loss}
