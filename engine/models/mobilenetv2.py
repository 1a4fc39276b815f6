"""MobileNetV2 at half width, RepDistiller's ``mobile_half`` (models/mobilenetv2.py).

Expansion 6, width multiplier 0.5, stride-2 stem for 32x32 inputs, seven groups of
inverted residual blocks, a 1x1 conv to 1280 channels, one linear classifier.
State-dict names: ``conv1.{0,1}``, ``blocks.{g}.{i}.conv.{0,1,3,4,6,7}``,
``conv2.{0,1}``, ``classifier.0`` (RepDistiller wraps the linear layer in an
``nn.Sequential``, so ``classifier_name`` is the module path "classifier.0").

Features follow RepDistiller: the stem, the outputs of block groups 1, 2, 4 and 6, and
the pooled vector. Those group outputs end in a linear (relu-free) projection, so they
already are pre-activations: ``preact`` returns the same list.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.zoo import register_model
from engine.models._base import ZooModel, global_avg_pool, init_conv_bn

# (expansion t, output channels c, blocks n, first stride s) at width 1; RepDistiller's table.
_SETTINGS = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),  # None: the network's expansion ratio T
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]
_FEATURE_GROUPS = (1, 2, 4, 6)  # block groups whose outputs are the stage features


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(ZooModel):
    def __init__(
        self,
        expansion: int = 6,
        width_mult: float = 0.5,
        num_classes: int = 100,
        in_channels: int = 3,
    ):
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = conv_bn_relu(in_channels, channels, 3, stride=2)
        stem_channels = channels
        group_out: list[int] = []
        self.blocks = nn.ModuleList()
        for t, c, n, s in _SETTINGS:
            out_channels = int(c * width_mult)
            group = []
            for stride in [s] + [1] * (n - 1):
                group.append(InvertedResidual(channels, out_channels, stride, t or expansion))
                channels = out_channels
            self.blocks.append(nn.Sequential(*group))
            group_out.append(out_channels)
        # RepDistiller keeps 1280 for width <= 1 and scales it only above 1.
        last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_bn_relu(channels, last_channels, 1, stride=1)
        self.classifier = nn.Sequential(nn.Linear(last_channels, num_classes))
        init_conv_bn(self)
        nn.init.normal_(self.classifier[0].weight, 0, 0.01)
        nn.init.zeros_(self.classifier[0].bias)

        self.num_classes = num_classes
        self.feature_dim = last_channels
        self.classifier_name = "classifier.0"
        self.stem_channels = stem_channels
        self.stage_channels = [group_out[g] for g in _FEATURE_GROUPS]

    def forward(self, x: torch.Tensor, preact: bool = False):
        stem = self.conv1(x)
        out = stem
        stages = []
        for index, group in enumerate(self.blocks):
            out = group(out)
            if index in _FEATURE_GROUPS:
                stages.append(out)
        # RepDistiller's AvgPool2d(2, ceil_mode=True) is a global average on 32x32 inputs.
        pooled = global_avg_pool(self.conv2(out))
        logits = self.classifier(pooled)
        return logits, [stem, *stages, pooled]


@register_model("MobileNetV2")
def mobilenetv2_half(num_classes: int = 100, in_channels: int = 3) -> MobileNetV2:
    """MobileNetV2 at half width (RepDistiller's mobile_half), 0.81 M parameters for 100 classes"""
    return MobileNetV2(6, 0.5, num_classes, in_channels)
