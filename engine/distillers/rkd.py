"""Relational knowledge distillation (Park et al. 2019), as in RepDistiller's ``rkd``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.config import setting
from engine.distillers import register_distiller
from engine.distillers.base import Distiller


def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances between the rows of ``e``, zero on the diagonal."""
    sq = e.pow(2).sum(1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * (e @ e.t())).clamp(min=eps)
    d = d2.sqrt()
    return d * (1 - torch.eye(len(e), dtype=e.dtype, device=e.device))


def normalised_distances(e: torch.Tensor) -> torch.Tensor:
    """Distances divided by their mean over the distinct (non-zero) pairs."""
    d = pairwise_distances(e)
    positive = d > 0
    mean = (d * positive).sum() / positive.sum().clamp(min=1)
    return d / mean.clamp(min=1e-12)


def angles(e: torch.Tensor) -> torch.Tensor:
    """``cos`` of the angle at every anchor j between the directions to i and k, flattened ``(N^3,)``."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [j, i] = unit(e_i - e_j)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


@dataclass
class RKDOptions:
    w_distance: float = setting(25.0, help="Weight of the distance-wise relation term.", minimum=0.0)
    w_angle: float = setting(50.0, help="Weight of the angle-wise relation term.", minimum=0.0)


@register_distiller("rkd")
class RKD(Distiller):
    """RKD (Park et al. 2019): the student preserves the teacher's distance and angle relations between the pooled features of a batch."""

    # METHOD.md: (w_ce, w_div, w_kd) = (1, 1, 1); RepDistiller weighs the distance term 25
    # and the angle term 50 inside the loss.
    default_weights = (1.0, 1.0, 1.0)
    Options = RKDOptions

    def __init__(self, context):
        super().__init__(context)
        self.w_distance, self.w_angle = self.opts.w_distance, self.opts.w_angle

    # Distances and angles between samples do not depend on the feature width: any pair works.
    def forward(self, student, teacher, labels, indices):
        s = student.features[-1].flatten(1)
        t = teacher.features[-1].detach().flatten(1)
        with torch.no_grad():
            t_d = normalised_distances(t)
            t_a = angles(t)
        loss_d = F.smooth_l1_loss(normalised_distances(s), t_d)
        loss_a = F.smooth_l1_loss(angles(s), t_a)
        return {"rkd_distance": self.w_distance * loss_d, "rkd_angle": self.w_angle * loss_a}
