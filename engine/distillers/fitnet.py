"""FitNets: hints for thin deep nets (Romero et al. 2015), as in RepDistiller's ``hint``."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from engine.config import setting
from engine.distillers import register_distiller
from engine.distillers._feature_adapt import is_map
from engine.distillers.base import Distiller
from engine.errors import ConfigError


class HintRegressor(nn.Module):
    """Maps the student's hint map ``(C_s, H_s, W_s)`` onto the teacher's ``(C_t, H_t, W_t)``:
    a convolution, then BatchNorm and ReLU (RepDistiller's ``ConvReg``, models/util.py).

    ``kernel_size=None`` (the default) is RepDistiller's choice of convolution by size:

    * ``H_s == 2 H_t``: 3x3, stride 2, padding 1;
    * ``2 H_s == H_t``: a 4x4 transposed convolution, stride 2, padding 1;
    * ``H_s >= H_t``: a ``(1 + H_s - H_t) x (1 + W_s - W_t)`` convolution without padding, so
      a 1x1 convolution when the sizes match (every pair of the paper);
    * otherwise (a smaller student map, not half; RepDistiller refuses the pair): the map is
      upsampled bilinearly to the teacher's size, then a 1x1 convolution.

    ``kernel_size`` 1 or 3: the map is first average-pooled (larger) or upsampled (smaller)
    to the teacher's size, then a size-preserving 1x1 or 3x3 convolution.
    """

    def __init__(self, s_shape, t_shape, kernel_size: int | None = None):
        super().__init__()
        (s_c, s_h, s_w), (t_c, t_h, t_w) = (tuple(int(d) for d in s_shape), tuple(int(d) for d in t_shape))
        self.target = (t_h, t_w)
        self.resize = True
        if kernel_size is not None:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size, padding=kernel_size // 2)
        elif (s_h, s_w) == (2 * t_h, 2 * t_w):
            self.conv, self.resize = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1), False
        elif (2 * s_h, 2 * s_w) == (t_h, t_w):
            self.conv, self.resize = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1), False
        elif s_h >= t_h and s_w >= t_w:
            self.conv, self.resize = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w)), False
        else:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=1)
        self.bn = nn.BatchNorm2d(t_c)

    def forward(self, x):
        if self.resize:
            h, w = self.target
            if x.shape[-2] > h or x.shape[-1] > w:
                x = F.adaptive_avg_pool2d(x, (min(x.shape[-2], h), min(x.shape[-1], w)))
            if tuple(x.shape[-2:]) != (h, w):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return F.relu(self.bn(self.conv(x)))


@dataclass
class FitNetOptions:
    hint_layer: int = setting(2, help="Index of the hint map in [stem, stage1, ..., stageK, pooled], the same for "
                                      "both networks; negative counts from the end.", minimum=-64, maximum=64)
    kernel_size: int | None = setting(
        None, help="Regressor convolution. Empty: RepDistiller's ConvReg, chosen by the maps' sizes (1x1 when "
                   "they match, as in every pair of the paper; 3x3 stride 2 when the student's map is twice the "
                   "teacher's; a transposed 4x4 when half). 1 or 3: resize the map to the teacher's, then that kernel.",
        choices=(1, 3))


@register_distiller("fitnet")
class FitNet(Distiller):
    """FitNet (Romero et al. 2015): the student's hint map (feature index 2) regresses the teacher's through a conv regressor (MSE)."""

    # METHOD.md: (w_ce, w_div, w_kd) = (1, 1, 100), hint at feature index 2.
    default_weights = (1.0, 1.0, 100.0)
    Options = FitNetOptions

    def __init__(self, context):
        super().__init__(context)
        hint, kernel = self.opts.hint_layer, self.opts.kernel_size
        s_shapes, t_shapes = context.student_shapes, context.teacher_shapes
        self.s_index = self._resolve(hint, s_shapes, "student", context.student_arch)
        self.t_index = self._resolve(hint, t_shapes, "teacher", context.teacher_arch)
        self.regressor = HintRegressor(s_shapes[self.s_index], t_shapes[self.t_index], kernel)

    @staticmethod
    def _resolve(hint: int, shapes: list, who: str, arch: str) -> int:
        n = len(shapes)
        index = hint + n if hint < 0 else hint
        maps = [i for i, s in enumerate(shapes) if is_map(s)]
        if not maps:
            raise ConfigError("distiller.name", f"fitnet needs a spatial feature map of the {who}, which has none")
        if index not in maps:
            allowed = f"{maps[0]}..{maps[-1]} (or {maps[0] - n}..{maps[-1] - n})"
            raise ConfigError("distiller.options.hint_layer",
                              f"{hint} is not a spatial feature map of the {who} {arch or ''}".rstrip()
                              + f"; its maps are at indices {allowed} of [stem, stages..., pooled]")
        return index

    def forward(self, student, teacher, labels, indices):
        f_t = teacher.features[self.t_index].detach()
        f_s = self.regressor(student.features[self.s_index])
        return {"fitnet": F.mse_loss(f_s, f_t)}
