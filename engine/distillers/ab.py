"""Activation boundaries (Heo et al., AAAI 2019), as in RepDistiller.

Features: the *pre-activation* stage outputs (``needs_preact``). Each student map ``s`` goes
through a connector ``r`` (1x1 conv without bias + batch norm, the AB paper's connector;
the identity when the student and teacher maps already have the same shape, as in
RepDistiller) and is compared with the teacher's pre-activation ``t`` by the alternative
(squared-hinge) loss with margin ``mu``:

    l(s, t) = sum_{n,c,h,w} (r(s) + mu)^2 * [r(s) > -mu and t <= 0]
                          + (r(s) - mu)^2 * [r(s) <= mu and t > 0]

and ``L = sum_i 2^(i - n + 1) * l_i / B * 3 / 1000`` over the ``n`` paired stages (the deepest
weighs 1, each earlier one half the next; RepDistiller's scaling).

Training, as RepDistiller does it: a pre-training stage of ``init_epochs`` (30) epochs
minimises ``L`` over the student's layers (all but its classifier) and the connectors; the
main stage then adds **no** AB term (RepDistiller's ``train_distill`` sets ``loss_kd = 0`` for
"abound" even though its script passes ``-b 1``), so the main stage is CE + the logit KD term
(+ MGD). METHOD.md's weight 1 is kept as ``w_kd``; set ``main_stage_loss: true`` to also add
``L`` during the main stage. Pairs that differ: the larger map is average-pooled to the
smaller one's size before the connector (RepDistiller uses strided / transposed convs and
fails for other ratios); stage lists of different lengths are aligned from the last stage
backwards (``_feature_adapt.pair_stages``).
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch
from torch import nn

from engine.config import setting
from engine.distillers import register_distiller
from engine.distillers._feature_adapt import (
    backbone_parameters, common_size, conv1x1, pair_stages, pool_to, stage_maps,
)
from engine.distillers.base import Distiller


def make_connector(s_channels: int, t_channels: int, same_shape: bool) -> nn.Module:
    if same_shape:
        return nn.Identity()
    conv = conv1x1(s_channels, t_channels)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / t_channels))  # He, fan-out of a 1x1 conv
    bn = nn.BatchNorm2d(t_channels)
    return nn.Sequential(conv, bn)


def ab_criterion(source: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """The alternative l2 loss of AB, summed over every element."""
    neg = ((source > -margin) & (target <= 0)).to(source.dtype)
    pos = ((source <= margin) & (target > 0)).to(source.dtype)
    return ((source + margin) ** 2 * neg + (source - margin) ** 2 * pos).sum()


@dataclass
class ABOptions:
    init_epochs: int = setting(30, help="Epochs of the pre-training stage that teaches the activation boundaries (0: none).",
                               minimum=0, maximum=100000)
    margin: float = setting(1.0, help="Margin of the activation-boundary hinge loss.", minimum=0.0)
    main_stage_loss: bool = setting(False, help="Also add the AB term in the main stage (RepDistiller: off, weight 0 after pre-training).")


@register_distiller("ab")
class AB(Distiller):
    """AB (Heo et al. 2019): a pre-training stage teaches the student the teacher's activation boundaries (pre-activation signs)."""

    # METHOD.md: AB 1 with its pre-training stage (the main stage adds no AB term by default, see above)
    default_weights = (1.0, 1.0, 1.0)
    Options = ABOptions
    needs_preact = True
    pretrain_epochs_option = "init_epochs"

    def __init__(self, context):
        super().__init__(context)
        self.margin = self.opts.margin
        self.main_stage_loss = self.opts.main_stage_loss
        s_maps = stage_maps(context.student_shapes, "student", "AB")
        t_maps = stage_maps(context.teacher_shapes, "teacher", "AB")
        self.pairs = pair_stages(len(s_maps), len(t_maps))
        self.sizes = [common_size(s_maps[i], t_maps[j]) for i, j in self.pairs]
        self.connectors = nn.ModuleList(
            make_connector(s_maps[i][0], t_maps[j][0], s_maps[i] == t_maps[j]) for i, j in self.pairs)
        n = len(self.pairs)
        self.stage_weights = [2.0 ** (k - n + 1) for k in range(n)]

    def ab_loss(self, student, teacher) -> torch.Tensor:
        s_stages, t_stages = student.features[1:-1], teacher.features[1:-1]
        batch = s_stages[0].shape[0]
        total = 0.0
        for (i, j), size, connector, w in zip(self.pairs, self.sizes, self.connectors, self.stage_weights):
            source = connector(pool_to(s_stages[i], size))
            target = pool_to(t_stages[j], size)
            total = total + w * ab_criterion(source, target, self.margin) / batch / 1000 * 3
        return total

    def pretrain_parameters(self, student):
        return backbone_parameters(student) + list(self.connectors.parameters())

    def pretrain_loss(self, student, teacher):
        return {"ab": self.ab_loss(student, teacher)}

    def forward(self, student, teacher, labels, indices):
        if not self.main_stage_loss:
            return {}  # RepDistiller: loss_kd = 0 for AB after its initialisation
        return {"ab": self.ab_loss(student, teacher)}
