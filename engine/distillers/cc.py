"""Correlation congruence (Peng et al. 2019), as in RepDistiller's ``correlation``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.config import setting
from engine.distillers import register_distiller
from engine.distillers.base import Distiller


def correlation_loss(e_s: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    """RepDistiller's CC term: with ``d_i = |e_s,i - e_t,i|`` (per sample), the mean over
    consecutive samples of ``sum_k d_i,k * d_i+1,k``."""
    if e_s.shape[0] < 2:  # no consecutive pair in a batch of one
        return (e_s - e_t).sum() * 0.0
    delta = (e_s - e_t).abs()
    return (delta[:-1] * delta[1:]).sum(1).mean()


@dataclass
class CCOptions:
    embed_dim: int = setting(128, help="Width of the linear embeddings whose correlations are matched.", minimum=1,
                             maximum=65536)


@register_distiller("cc")
class CC(Distiller):
    """CC (Peng et al. 2019): correlation congruence between student and teacher pooled features through linear embeddings.

    The form is RepDistiller's (the code its authors shared with RepDistiller), for which
    the weight 0.02 was tuned: both pooled features are embedded by trainable linear
    layers, and the products of the embedding gaps of consecutive samples are penalised.
    """

    # METHOD.md: (w_ce, w_div, w_kd) = (1, 1, 0.02); embedding width 128 (RepDistiller's feat_dim).
    default_weights = (1.0, 1.0, 0.02)
    Options = CCOptions

    def __init__(self, context):
        super().__init__(context)
        dim = self.opts.embed_dim
        # both embeddings are trainable (RepDistiller's LinearEmbed on each side); they
        # bring the pooled widths of any two families to the same size
        self.embed_s = nn.Linear(int(context.student_shapes[-1][0]), dim)
        self.embed_t = nn.Linear(int(context.teacher_shapes[-1][0]), dim)

    def forward(self, student, teacher, labels, indices):
        e_s = self.embed_s(student.features[-1].flatten(1))
        e_t = self.embed_t(teacher.features[-1].detach().flatten(1))
        return {"cc": correlation_loss(e_s, e_t)}
