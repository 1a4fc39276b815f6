"""Flow of solution procedure (Yim et al., CVPR 2017), as in RepDistiller.

Features: the stem and the stage outputs ``feats[:-1]``. For consecutive maps ``bottom``
(``C_b`` channels) and ``top`` (``C_t``) of one network, after average-pooling the larger to
the smaller's size, the FSP matrix is

    G[n, i, j] = mean_{h,w} top[n, i, h, w] * bottom[n, j, h, w]       (C_t x C_b),

and the term is ``sum over consecutive pairs of mean_{n,i,j} (G_s - G_t)^2``.

Training, as RepDistiller does it: a pre-training stage of ``init_epochs`` (30) epochs
minimises that term over the student's layers (all but its classifier); the main stage then
adds **no** FSP term (RepDistiller's ``train_distill`` sets ``loss_kd = 0`` for "fsp" even
though its script passes ``-b 50``), so the main stage is CE + the logit KD term (+ MGD).
METHOD.md's weight 50 is kept as ``w_kd``; set ``main_stage_loss: true`` to also add the
term during the main stage.

Pairs that differ (RepDistiller refuses them: it needs equal list lengths and equal channel
counts): the stem meets the stem and the stages are aligned from the last one backwards
(``_feature_adapt.pair_stages``); a student map whose channel count differs from its
teacher partner's goes through a 1x1 conv connector (no bias; trained with the student in
the pre-training stage) before its FSP matrices are formed. Pairs that already agree use no
connector, which is exactly RepDistiller's FSP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.config import setting
from engine.distillers import register_distiller
from engine.distillers._feature_adapt import (
    backbone_parameters, conv1x1, feature_map, pair_stages, pool_to_common, stage_maps,
)
from engine.distillers.base import Distiller


def fsp_matrix(bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """``N x C_top x C_bottom`` FSP matrix of two maps of one network."""
    bottom, top = pool_to_common(bottom, top)
    return torch.einsum("nihw,njhw->nij", top, bottom) / (top.shape[-2] * top.shape[-1])


def fsp_matrices(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    return [fsp_matrix(maps[k], maps[k + 1]) for k in range(len(maps) - 1)]


@dataclass
class FSPOptions:
    init_epochs: int = setting(30, help="Epochs of the pre-training stage on the FSP matrices (0: none).", minimum=0,
                               maximum=100000)
    main_stage_loss: bool = setting(False, help="Also add the FSP term in the main stage (RepDistiller: off).")


@register_distiller("fsp")
class FSP(Distiller):
    """FSP (Yim et al. 2017): a pre-training stage matches the teacher's FSP matrices (Gram matrices of consecutive stage outputs)."""

    # METHOD.md: FSP 50 with its pre-training (the main stage adds no FSP term by default, see above)
    default_weights = (1.0, 1.0, 50.0)
    Options = FSPOptions
    pretrain_epochs_option = "init_epochs"

    def __init__(self, context):
        super().__init__(context)
        self.main_stage_loss = self.opts.main_stage_loss
        s_stem = feature_map(context.student_shapes[0], "student", "FSP", "stem output")
        t_stem = feature_map(context.teacher_shapes[0], "teacher", "FSP", "stem output")
        s_maps = stage_maps(context.student_shapes, "student", "FSP")
        t_maps = stage_maps(context.teacher_shapes, "teacher", "FSP")
        # feature-list indices (0 = stem, k = stage k) of the student and teacher maps used
        self.pairs = [(0, 0)] + [(i + 1, j + 1) for i, j in pair_stages(len(s_maps), len(t_maps))]
        s_all, t_all = [s_stem, *s_maps], [t_stem, *t_maps]
        self.connectors = nn.ModuleList(
            nn.Identity() if s_all[i][0] == t_all[j][0] else conv1x1(s_all[i][0], t_all[j][0]) for i, j in self.pairs)

    def fsp_loss(self, student, teacher) -> torch.Tensor:
        s_maps = [c(student.features[i]) for c, (i, _) in zip(self.connectors, self.pairs)]
        t_maps = [teacher.features[j] for _, j in self.pairs]
        terms = [(gs - gt).pow(2).mean() for gs, gt in zip(fsp_matrices(s_maps), fsp_matrices(t_maps))]
        return torch.stack(terms).sum()

    def pretrain_parameters(self, student):
        return backbone_parameters(student) + list(self.connectors.parameters())

    def pretrain_loss(self, student, teacher):
        return {"fsp": self.fsp_loss(student, teacher)}

    def forward(self, student, teacher, labels, indices):
        if not self.main_stage_loss:
            return {}  # RepDistiller: loss_kd = 0 for FSP after its initialisation
        return {"fsp": self.fsp_loss(student, teacher)}
