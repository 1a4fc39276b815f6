"""ResNet-50 (ImageNet layout, 3/4/6/3 bottlenecks) adapted to CIFAR: RepDistiller's
``ResNet50`` from models/resnetv2.py.

The CIFAR adaptation (RepDistiller's): a 3x3 stride-1 stem conv and no max-pool, so a
32x32 input reaches 4x4 after the last stage. State-dict names: ``conv1``, ``bn1``,
``layer{1..4}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3}``, ``layer{k}.{i}.shortcut.{0,1}``
where the shape changes, ``linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.zoo import register_model
from engine.models._base import ZooModel, global_avg_pool, init_conv_bn, run_stage

_EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), plus shortcut; returns ``(out, preact)``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = _EXPANSION * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        # An empty Sequential is the identity; it keeps RepDistiller's "shortcut.{0,1}" names.
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        preact = self.bn3(self.conv3(out)) + self.shortcut(x)
        return F.relu(preact), preact


class ResNetV2(ZooModel):
    def __init__(self, num_blocks: list[int], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self._in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_stage(64, num_blocks[0], stride=1)
        self.layer2 = self._make_stage(128, num_blocks[1], stride=2)
        self.layer3 = self._make_stage(256, num_blocks[2], stride=2)
        self.layer4 = self._make_stage(512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * _EXPANSION, num_classes)
        init_conv_bn(self)

        self.num_classes = num_classes
        self.feature_dim = 512 * _EXPANSION
        self.classifier_name = "linear"
        self.stem_channels = 64
        self.stage_channels = [p * _EXPANSION for p in (64, 128, 256, 512)]

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for block_stride in [stride] + [1] * (blocks - 1):
            layers.append(Bottleneck(self._in_planes, planes, block_stride))
            self._in_planes = planes * _EXPANSION
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, preact: bool = False):
        stem = F.relu(self.bn1(self.conv1(x)))
        f1, f1_pre = run_stage(self.layer1, stem)
        f2, f2_pre = run_stage(self.layer2, f1)
        f3, f3_pre = run_stage(self.layer3, f2)
        f4, f4_pre = run_stage(self.layer4, f3)
        pooled = global_avg_pool(f4)
        logits = self.linear(pooled)
        stages = [f1_pre, f2_pre, f3_pre, f4_pre] if preact else [f1, f2, f3, f4]
        return logits, [stem, *stages, pooled]


@register_model("ResNet50")
def resnet50(num_classes: int = 100, in_channels: int = 3) -> ResNetV2:
    """ResNet-50 (ImageNet layout on a CIFAR stem), 23.71 M parameters for 100 classes"""
    return ResNetV2([3, 4, 6, 3], num_classes, in_channels)
