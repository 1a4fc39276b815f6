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
    """Maps the student's hint map onto the teacher's: size, then Conv -> BN -> ReLU.

    Spatial size: a larger student map is average-pooled down to the teacher's size; a
    smaller one is upsampled bilinearly to it, so the student always regresses the
    teacher's hint at the teacher's own resolution (RepDistiller's ``ConvReg`` does the
    same with strided / transposed convolutions, for factors of 2 only). Channels: the
    convolution (1x1 or 3x3, padding keeps the size) maps ``C_s`` to ``C_t``.
    """

    def __init__(self, s_channels: int, t_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(s_channels, t_channels, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(t_channels)

    def forward(self, x, size):
        h, w = int(size[0]), int(size[1])
        if x.shape[-2] > h or x.shape[-1] > w:
            x = F.adaptive_avg_pool2d(x, (min(x.shape[-2], h), min(x.shape[-1], w)))
        if tuple(x.shape[-2:]) != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return F.relu(self.bn(self.conv(x)))


@dataclass
class FitNetOptions:
    hint_layer: int = setting(2, help="Index of the hint map in [stem, stage1, ..., stageK, pooled], the same for "
                                      "both networks; negative counts from the end.", minimum=-64, maximum=64)
    kernel_size: int = setting(3, help="Kernel size of the regressor's convolution.", choices=(1, 3))


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
        s_shape, t_shape = s_shapes[self.s_index], t_shapes[self.t_index]
        self.regressor = HintRegressor(s_shape[0], t_shape[0], kernel)

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
        f_s = self.regressor(student.features[self.s_index], f_t.shape[-2:])
        return {"fitnet": F.mse_loss(f_s, f_t)}
