"""Attention transfer (Zagoruyko & Komodakis 2017), as in RepDistiller's ``attention``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.config import setting
from engine.distillers import register_distiller
from engine.distillers._feature_adapt import pool_to_common, stage_pairs
from engine.distillers.base import Distiller


def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """``normalize(mean_c |f|^p)``: the L2-normalised spatial attention of a ``(N, C, H, W)`` map, ``(N, H*W)``.

    The paper's ``sum_c |A_c|^p`` (the mean differs by a constant that the normalisation
    removes); RepDistiller's ``f.pow(p)`` is the same for its p = 2, and the absolute value
    keeps other p defined on stage outputs that can be negative (MobileNetV2's linear
    bottlenecks)."""
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


@dataclass
class ATOptions:
    p: float = setting(2.0, help="Exponent of the attention map: the mean over channels of |feature|^p.", above=0.0,
                       maximum=100.0)


@register_distiller("at")
class AT(Distiller):
    """AT (Zagoruyko & Komodakis 2017): the student matches the teacher's normalised spatial attention maps at every stage output."""

    # METHOD.md: (w_ce, w_div, w_kd) = (1, 1, 1000); p = 2 (RepDistiller).
    default_weights = (1.0, 1.0, 1000.0)
    Options = ATOptions

    def __init__(self, context):
        super().__init__(context)
        self.p = self.opts.p
        # stage outputs features[1:-1], aligned from the last stage backwards (see _feature_adapt)
        self.pairs = stage_pairs(context.student_shapes, context.teacher_shapes)

    def forward(self, student, teacher, labels, indices):
        loss = 0.0
        for i_s, i_t in self.pairs:
            # a larger map is average-pooled to the smaller size before the attention is taken
            f_s, f_t = pool_to_common(student.features[i_s], teacher.features[i_t].detach())
            loss = loss + (attention_map(f_s, self.p) - attention_map(f_t, self.p)).pow(2).mean()
        return {"at": loss}
