"""Probabilistic knowledge transfer (Passalis & Tefas 2018), as in RepDistiller's ``pkt``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.config import setting
from engine.distillers import register_distiller
from engine.distillers.base import Distiller


def cosine_probabilities(f: torch.Tensor, eps: float) -> torch.Tensor:
    """Per sample, the conditional distribution over the batch given by cosine similarities
    rescaled to [0, 1]: ``P_ij = (1 + cos_ij) / 2 / sum_j (1 + cos_ij) / 2``."""
    f = f.flatten(1)
    f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)
    f = torch.nan_to_num(f, nan=0.0)
    sim = (f @ f.t() + 1.0) / 2.0
    return sim / sim.sum(1, keepdim=True)


@dataclass
class PKTOptions:
    eps: float = setting(1e-7, help="Small constant that keeps the cosine similarities and the divergence finite.",
                         above=0.0, maximum=1.0)


@register_distiller("pkt")
class PKT(Distiller):
    """PKT (Passalis & Tefas 2018): KL divergence between teacher and student cosine-similarity distributions of the pooled features."""

    # METHOD.md: (w_ce, w_div, w_kd) = (1, 1, 30000) (RepDistiller's default).
    default_weights = (1.0, 1.0, 30000.0)
    Options = PKTOptions

    def __init__(self, context):
        super().__init__(context)
        self.eps = self.opts.eps

    # Similarities between samples do not depend on the feature width: any pair works.
    def forward(self, student, teacher, labels, indices):
        p_s = cosine_probabilities(student.features[-1], self.eps)
        p_t = cosine_probabilities(teacher.features[-1].detach(), self.eps)
        return {"pkt": (p_t * torch.log((p_t + self.eps) / (p_s + self.eps))).mean()}
