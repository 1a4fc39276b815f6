"""Self-supervised KD with singular value decomposition (Lee et al. 2018), as in RepDistiller's ``kdsvd``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import setting
from engine.distillers import register_distiller
from engine.distillers._feature_adapt import stage_pairs
from engine.distillers.base import Distiller
from engine.errors import ConfigError


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _finite_grad(g: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


def top_singular(f: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``n`` singular values (L2-normalised, ``(N, n)``) and right singular vectors
    (unit columns, ``(N, C, n)``) of each sample's ``(H*W, C)`` feature matrix."""
    x = f.flatten(2).transpose(1, 2)  # (N, HW, C)
    if x.requires_grad:
        # the SVD's backward divides by differences of singular values: a degenerate
        # spectrum (dead channels, 1x1 maps) gives inf/NaN there; drop those entries
        x.register_hook(_finite_grad)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    v = vh.transpose(1, 2)
    s, v = _finite(s), _finite(v)
    return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)


def align_to(v_s: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
    """For each teacher singular vector (column of ``v_t``), the student's singular vector
    (column of ``v_s``) with the largest absolute cosine to it, its sign turned so that the
    cosine is positive, ``(N, C, k)``.

    A singular vector is defined only up to its sign (the SVD may return ``v`` or ``-v``), so
    without the sign the RBF correlations of consecutive stages would depend on the solver's
    arbitrary choice; RepDistiller's ``align_rsv`` multiplies by the sign of the cosine (a
    cosine of exactly 0 gives a zero vector there too).
    """
    cosine = v_s.transpose(1, 2) @ v_t  # (N, k_s, k_t)
    best = cosine.abs().argmax(dim=1, keepdim=True)  # (N, 1, k_t)
    sign = torch.gather(cosine, 1, best).sign()  # (N, 1, k_t)
    return torch.gather(v_s, 2, best.expand(-1, v_s.shape[1], -1)) * sign


def rbf_between(v: torch.Tensor, v_prev: torch.Tensor) -> torch.Tensor:
    """``exp(-(v[c] - v_prev[c'])^2 / 8)`` for every channel pair and singular vector, ``(N, C, C', k)``."""
    return torch.exp(-(v.unsqueeze(2) - v_prev.unsqueeze(1)).pow(2) / 8)


@dataclass
class KDSVDOptions:
    k: int = setting(1, help="Singular vectors kept per feature map.", minimum=1, maximum=1024)


@register_distiller("kdsvd")
class KDSVD(Distiller):
    """KDSVD (Lee et al. 2018): the student matches RBF correlations between the top singular vectors of consecutive stage outputs."""

    # METHOD.md: (w_ce, w_div, w_kd) = (1, 1, 1) (RepDistiller's default); k = 1 singular vector.
    default_weights = (1.0, 1.0, 1.0)
    Options = KDSVDOptions

    def __init__(self, context):
        super().__init__(context)
        self.k = self.opts.k
        # stage outputs features[1:-1], aligned from the last stage backwards (see _feature_adapt)
        self.pairs = stage_pairs(context.student_shapes, context.teacher_shapes)
        if len(self.pairs) < 2:
            raise ConfigError("distiller.name", "kdsvd compares consecutive stage outputs and needs at least "
                              "two stages in both models")
        # The right singular vectors live in channel space, so paired stages must have the
        # same channel count (RepDistiller supports only such pairs). Where they differ, a
        # trainable 1x1 conv + BN connector maps the student's stage onto the teacher's
        # channels; where they agree, the student's map is used as it is.
        connectors = []
        for i_s, i_t in self.pairs:
            c_s, c_t = int(context.student_shapes[i_s][0]), int(context.teacher_shapes[i_t][0])
            if c_s == c_t:
                connectors.append(nn.Identity())
            else:
                connectors.append(nn.Sequential(nn.Conv2d(c_s, c_t, 1, bias=False), nn.BatchNorm2d(c_t)))
        self.connectors = nn.ModuleList(connectors)

    def forward(self, student, teacher, labels, indices):
        n = student.features[0].shape[0]
        loss = 0.0
        prev_s = prev_t = None
        for (i_s, i_t), connect in zip(self.pairs, self.connectors):
            with torch.no_grad():
                s_t, v_t = top_singular(teacher.features[i_t].detach(), self.k)
            _, v_s = top_singular(connect(student.features[i_s]), self.k + 3)
            v_s = align_to(v_s, v_t)
            scale = s_t.unsqueeze(1)  # (N, 1, k): the teacher's normalised singular values
            v_t, v_s = v_t * scale, v_s * scale
            if prev_s is not None:
                k = min(v_t.shape[2], prev_t.shape[2])  # fewer than k vectors only on maps smaller than k
                v_s, v_t, prev_s, prev_t = v_s[..., :k], v_t[..., :k], prev_s[..., :k], prev_t[..., :k]
                diff = (rbf_between(v_s, prev_s) - rbf_between(v_t, prev_t)).pow(2)
                loss = loss + _finite(diff).sum() / n
            prev_s, prev_t = v_s, v_t
        return {"kdsvd": loss}
