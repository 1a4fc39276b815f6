"""Variational information distillation (Ahn et al., CVPR 2019), as in RepDistiller.

For every paired stage output ``(s, t)`` a regressor ``mu(s)`` (three 1x1 convs with ReLUs
between, mid width = the teacher's channels, no bias, PyTorch's default init) predicts the
mean of a Gaussian over the teacher's map, with one learned variance per teacher channel,
``sigma_c^2 = softplus(a_c) + eps``, ``a_c`` initialised so that ``sigma_c^2 = init_pred_var``
(5.0). The term is the Gaussian negative log-likelihood without its constant,

    L = sum over stages of  mean_{n,c,h,w} 0.5 * ((t - mu(s))^2 / sigma_c^2 + log sigma_c^2),

which lower-bounds (up to constants) the mutual information between the two maps.

Pairs that differ: the larger map is average-pooled to the smaller one's size (RepDistiller
does the same for square maps); channels are handled by the regressor; stage lists of
different lengths are aligned from the last stage backwards (``_feature_adapt.pair_stages``).
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import setting
from engine.distillers import register_distiller
from engine.distillers._feature_adapt import (
    common_size, conv1x1, pair_stages, pool_to, stage_maps,
)
from engine.distillers.base import Distiller
from engine.errors import ConfigError


class VariationalRegressor(nn.Module):
    """Mean regressor plus per-channel learned variance for one stage pair."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, init_pred_var: float, eps: float):
        super().__init__()
        self.regressor = nn.Sequential(
            conv1x1(in_channels, mid_channels), nn.ReLU(),
            conv1x1(mid_channels, mid_channels), nn.ReLU(),
            conv1x1(mid_channels, out_channels),
        )
        # softplus(a) = init_pred_var - eps  <=>  a = log(exp(init_pred_var - eps) - 1)
        init = math.log(math.expm1(init_pred_var - eps))
        self.log_scale = nn.Parameter(torch.full((out_channels,), init))
        self.eps = eps

    def variance(self) -> torch.Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        size = common_size(tuple(source.shape), tuple(target.shape))
        source, target = pool_to(source, size), pool_to(target, size)
        mean = self.regressor(source)
        var = self.variance().view(1, -1, 1, 1)
        return (0.5 * ((mean - target) ** 2 / var + torch.log(var))).mean()


@dataclass
class VIDOptions:
    init_pred_var: float = setting(5.0, help="Initial predicted variance of each regressor (must exceed eps).",
                                   above=0.0, maximum=1e6)
    eps: float = setting(1e-5, help="Smallest variance (keeps the log-likelihood finite).", above=0.0, maximum=1.0)


@register_distiller("vid")
class VID(Distiller):
    """VID (Ahn et al. 2019): per stage output, a variational regressor with learned variance maximises student-teacher mutual information."""

    # METHOD.md: (w_ce, w_div, w_kd) = (1, 1, 1)
    default_weights = (1.0, 1.0, 1.0)
    Options = VIDOptions

    def __init__(self, context):
        super().__init__(context)
        eps, init_pred_var = self.opts.eps, self.opts.init_pred_var
        if init_pred_var <= eps:
            raise ConfigError("distiller.options.init_pred_var", f"must be greater than eps ({eps:g}), got {init_pred_var:g}")
        s_maps = stage_maps(context.student_shapes, "student", "VID")
        t_maps = stage_maps(context.teacher_shapes, "teacher", "VID")
        self.pairs = pair_stages(len(s_maps), len(t_maps))
        # RepDistiller: VIDLoss(s_channels, t_channels, t_channels), i.e. mid width = teacher channels
        self.regressors = nn.ModuleList(
            VariationalRegressor(s_maps[i][0], t_maps[j][0], t_maps[j][0], init_pred_var, eps) for i, j in self.pairs)

    def forward(self, student, teacher, labels, indices):
        s_stages, t_stages = student.features[1:-1], teacher.features[1:-1]
        terms = [reg(s_stages[i], t_stages[j]) for reg, (i, j) in zip(self.regressors, self.pairs)]
        return {"vid": torch.stack(terms).sum()}
