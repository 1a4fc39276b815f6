"""ShuffleNetV2 (1x) for CIFAR, RepDistiller's ``ShuffleV2`` (models/ShuffleNetv2.py).

A 1x1 stem to 24 channels, three stages (116/232/464 channels, 3/7/3 basic blocks after
a down-sampling block), a 1x1 conv to 1024 channels, one linear classifier.
State-dict names: ``conv1``, ``bn1``, ``layer{k}.0.{conv1..conv5,bn1..bn5}`` (the
down-sampling block), ``layer{k}.{i>0}.{conv1,bn1,conv2,bn2,conv3,bn3}``, ``conv2``,
``bn2``, ``linear``.

The ``preact`` feature of a stage is RepDistiller's: the last block's concatenation of
its untouched half and its branch before the final relu, *before* the channel shuffle
(the plain feature is after it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.zoo import register_model
from engine.models._base import ZooModel, channel_shuffle, global_avg_pool, run_stage

_STEM = 24


class BasicBlock(nn.Module):
    """Split channels in half; one half passes, the other goes 1x1, 3x3 dw, 1x1; shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, stride=1, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = x.shape[1] // 2
        kept, branch = x[:, :half], x[:, half:]
        branch = F.relu(self.bn1(self.conv1(branch)))
        branch = self.bn2(self.conv2(branch))
        branch_pre = self.bn3(self.conv3(branch))
        out = torch.cat([kept, F.relu(branch_pre)], 1)
        preact = torch.cat([kept, branch_pre], 1)
        return channel_shuffle(out, 2), preact


class DownBlock(nn.Module):
    """Two stride-2 branches over the whole input, concatenated and shuffled."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        # left branch: 3x3 dw (stride 2), 1x1
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch: 1x1, 3x3 dw (stride 2), 1x1
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        out = channel_shuffle(torch.cat([left, right], 1), 2)
        # Never the last block of a stage, so its pre-activation is never used.
        return out, out


class ShuffleNetV2(ZooModel):
    def __init__(
        self,
        out_channels: tuple[int, int, int, int] = (116, 232, 464, 1024),
        num_blocks: tuple[int, int, int] = (3, 7, 3),
        num_classes: int = 100,
        in_channels: int = 3,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, _STEM, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM)
        self.layer1 = self._make_stage(_STEM, out_channels[0], num_blocks[0])
        self.layer2 = self._make_stage(out_channels[0], out_channels[1], num_blocks[1])
        self.layer3 = self._make_stage(out_channels[1], out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], 1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)
        # RepDistiller leaves ShuffleNetV2 at torch's default init.

        self.num_classes = num_classes
        self.feature_dim = out_channels[3]
        self.classifier_name = "linear"
        self.stem_channels = _STEM
        self.stage_channels = list(out_channels[:3])

    @staticmethod
    def _make_stage(in_channels: int, out_channels: int, num_blocks: int) -> nn.Sequential:
        blocks = [DownBlock(in_channels, out_channels)]
        blocks += [BasicBlock(out_channels) for _ in range(num_blocks)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, preact: bool = False):
        stem = F.relu(self.bn1(self.conv1(x)))
        f1, f1_pre = run_stage(self.layer1, stem)
        f2, f2_pre = run_stage(self.layer2, f1)
        f3, f3_pre = run_stage(self.layer3, f2)
        out = F.relu(self.bn2(self.conv2(f3)))
        pooled = global_avg_pool(out)  # RepDistiller: avg_pool2d(4), global on 32x32
        logits = self.linear(pooled)
        stages = [f1_pre, f2_pre, f3_pre] if preact else [f1, f2, f3]
        return logits, [stem, *stages, pooled]


@register_model("ShuffleNetV2")
def shufflenetv2(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV2:
    """ShuffleNetV2 1x (CIFAR; RepDistiller's ShuffleV2), 1.36 M parameters for 100 classes"""
    return ShuffleNetV2(num_classes=num_classes, in_channels=in_channels)
