"""CIFAR ResNets (He et al. 2016, the 6n+2 family), as defined in RepDistiller's models/resnet.py.

Three stages of basic blocks at strides 1, 2, 2; ``resnetNxM`` variants have 4x wider
stages. State-dict names: ``conv1``, ``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``,
``layer{k}.0.downsample.{0,1}`` where the shape changes, ``fc``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.zoo import register_model
from engine.models._base import ZooModel, global_avg_pool, init_conv_bn, run_stage


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 conv) shortcut; returns ``(out, preact)``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        preact = out + shortcut
        return F.relu(preact), preact  # not in place: preact is handed out (AB distiller)


class CifarResNet(ZooModel):
    def __init__(self, depth: int, widths: list[int], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a basic-block CIFAR ResNet has depth 6n+2, not {depth}")
        blocks_per_stage = (depth - 2) // 6
        stem, *stage_widths = widths
        self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_stage(stem, stage_widths[0], blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(stage_widths[0], stage_widths[1], blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(stage_widths[1], stage_widths[2], blocks_per_stage, stride=2)
        self.fc = nn.Linear(stage_widths[2], num_classes)
        init_conv_bn(self)

        self.num_classes = num_classes
        self.feature_dim = stage_widths[2]
        self.classifier_name = "fc"
        self.stem_channels = stem
        self.stage_channels = list(stage_widths)

    @staticmethod
    def _make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, preact: bool = False):
        stem = self.relu(self.bn1(self.conv1(x)))
        f1, f1_pre = run_stage(self.layer1, stem)
        f2, f2_pre = run_stage(self.layer2, f1)
        f3, f3_pre = run_stage(self.layer3, f2)
        pooled = global_avg_pool(f3)
        logits = self.fc(pooled)
        stages = [f1_pre, f2_pre, f3_pre] if preact else [f1, f2, f3]
        return logits, [stem, *stages, pooled]


_NARROW = [16, 16, 32, 64]
_WIDE = [32, 64, 128, 256]  # the "x4" variants


@register_model("resnet8")
def resnet8(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-8 (CIFAR), 0.08 M parameters for 100 classes"""
    return CifarResNet(8, _NARROW, num_classes, in_channels)


@register_model("resnet14")
def resnet14(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-14 (CIFAR), 0.18 M parameters for 100 classes"""
    return CifarResNet(14, _NARROW, num_classes, in_channels)


@register_model("resnet20")
def resnet20(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 (CIFAR), 0.28 M parameters for 100 classes"""
    return CifarResNet(20, _NARROW, num_classes, in_channels)


@register_model("resnet32")
def resnet32(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 (CIFAR), 0.47 M parameters for 100 classes"""
    return CifarResNet(32, _NARROW, num_classes, in_channels)


@register_model("resnet44")
def resnet44(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-44 (CIFAR), 0.67 M parameters for 100 classes"""
    return CifarResNet(44, _NARROW, num_classes, in_channels)


@register_model("resnet56")
def resnet56(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-56 (CIFAR), 0.86 M parameters for 100 classes"""
    return CifarResNet(56, _NARROW, num_classes, in_channels)


@register_model("resnet110")
def resnet110(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-110 (CIFAR), 1.74 M parameters for 100 classes"""
    return CifarResNet(110, _NARROW, num_classes, in_channels)


@register_model("resnet8x4")
def resnet8x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-8x4 (CIFAR, 4x wider stages), 1.23 M parameters for 100 classes"""
    return CifarResNet(8, _WIDE, num_classes, in_channels)


@register_model("resnet32x4")
def resnet32x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-32x4 (CIFAR, 4x wider stages), 7.43 M parameters for 100 classes"""
    return CifarResNet(32, _WIDE, num_classes, in_channels)
