"""ShuffleNetV1 for CIFAR (groups 3), RepDistiller's ``ShuffleV1`` (models/ShuffleNetv1.py).

A 1x1 stem to 24 channels (no down-sampling), three stages of 4/8/4 bottlenecks ending
at 240/480/960 channels; the first bottleneck of a stage halves the resolution and
concatenates an average-pooled shortcut. State-dict names: ``conv1``, ``bn1``,
``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3}``, ``linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.zoo import register_model
from engine.models._base import ZooModel, channel_shuffle, global_avg_pool, run_stage

_STEM = 24


class Bottleneck(nn.Module):
    """Grouped 1x1, shuffle, 3x3 depthwise, grouped 1x1; returns ``(out, preact)``."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid_planes = out_planes // 4
        # The stem has 24 channels, not a multiple of the group structure: the very first
        # 1x1 conv is ungrouped (as in the paper and RepDistiller).
        self.first_groups = 1 if in_planes == _STEM else groups
        self.conv1 = nn.Conv2d(in_planes, mid_planes, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(mid_planes, mid_planes, 3, stride=stride, padding=1, groups=mid_planes, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        # Down-sampling shortcut; pads 1, so a 1x1 map stays 1x1 (no parameters).
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)) if stride == 2 else nn.Sequential()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self.shortcut(x)
        preact = torch.cat([out, shortcut], 1) if self.stride == 2 else out + shortcut
        return F.relu(preact), preact


class ShuffleNetV1(ZooModel):
    def __init__(
        self,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
        in_channels: int = 3,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, _STEM, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM)
        self._in_planes = _STEM
        self.layer1 = self._make_stage(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_stage(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_stage(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)
        # RepDistiller leaves ShuffleNetV1 at torch's default init.

        self.num_classes = num_classes
        self.feature_dim = out_planes[2]
        self.classifier_name = "linear"
        self.stem_channels = _STEM
        self.stage_channels = list(out_planes)

    def _make_stage(self, out_planes: int, num_blocks: int, groups: int) -> nn.Sequential:
        # The first block concatenates its input, so its own branch makes the remainder.
        blocks = [Bottleneck(self._in_planes, out_planes - self._in_planes, 2, groups)]
        blocks += [Bottleneck(out_planes, out_planes, 1, groups) for _ in range(num_blocks - 1)]
        self._in_planes = out_planes
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, preact: bool = False):
        stem = F.relu(self.bn1(self.conv1(x)))
        f1, f1_pre = run_stage(self.layer1, stem)
        f2, f2_pre = run_stage(self.layer2, f1)
        f3, f3_pre = run_stage(self.layer3, f2)
        pooled = global_avg_pool(f3)  # RepDistiller: avg_pool2d(4), global on 32x32
        logits = self.linear(pooled)
        stages = [f1_pre, f2_pre, f3_pre] if preact else [f1, f2, f3]
        return logits, [stem, *stages, pooled]


@register_model("ShuffleNetV1")
def shufflenetv1(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV1:
    """ShuffleNetV1 (CIFAR, 3 groups; RepDistiller's ShuffleV1), 0.95 M parameters for 100 classes"""
    return ShuffleNetV1(num_classes=num_classes, in_channels=in_channels)
