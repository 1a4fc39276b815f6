"""Wide ResNets (Zagoruyko & Komodakis 2016), as defined in RepDistiller's models/wrn.py.

``wrn_D_W``: depth D = 6n+4 (n pre-activation blocks per stage), widen factor W.
State-dict names: ``conv1``, ``block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2}``,
``block{k}.layer.0.convShortcut`` where the width changes, ``bn1``, ``fc``.

Because the blocks are pre-activation, two things differ from the other families, as in
RepDistiller: the stem feature is the raw output of ``conv1`` (no bn/relu follows it
there), and the pre-activation of a stage output is the *next* batch norm applied to it
(the first block of the next stage, or the final ``bn1`` for the last stage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.zoo import register_model
from engine.models._base import ZooModel, global_avg_pool, init_conv_bn


class BasicBlock(nn.Module):
    """Pre-activation block: bn-relu-conv-bn-relu-conv plus shortcut.

    Returns ``(out, bn1(x))``: the second item is the pre-activation of the block's
    input, which the network needs for the previous stage's ``preact`` feature.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        # camelCase name kept: it is the state-dict key of RepDistiller's checkpoints
        self.convShortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        input_preact = self.bn1(x)
        activated = F.relu(input_preact)  # not in place: input_preact is handed out
        # With a width change the shortcut sees the activated input, otherwise the raw one.
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        out = F.relu(self.bn2(self.conv1(activated)), inplace=True)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return shortcut + self.conv2(out), input_preact


class NetworkBlock(nn.Module):
    """One stage; returns ``(out, preact of the stage input)``."""

    def __init__(self, n_blocks: int, in_planes: int, out_planes: int, stride: int, drop_rate: float):
        super().__init__()
        blocks = [BasicBlock(in_planes, out_planes, stride, drop_rate)]
        blocks += [BasicBlock(out_planes, out_planes, 1, drop_rate) for _ in range(n_blocks - 1)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, input_preact = self.layer[0](x)
        for block in self.layer[1:]:
            x, _ = block(x)
        return x, input_preact


class WideResNet(ZooModel):
    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 100,
        in_channels: int = 3,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"a wide ResNet has depth 6n+4, not {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        init_conv_bn(self)
        nn.init.zeros_(self.fc.bias)  # RepDistiller zeroes the bias, keeps torch's weight init

        self.num_classes = num_classes
        self.feature_dim = widths[3]
        self.classifier_name = "fc"
        self.stem_channels = widths[0]
        self.stage_channels = widths[1:]

    def forward(self, x: torch.Tensor, preact: bool = False):
        stem = self.conv1(x)
        f1, _ = self.block1(stem)
        # Each stage output's pre-activation comes out of the next stage's first bn, in
        # the same pass (RepDistiller calls those bns a second time; same values).
        f2, f1_pre = self.block2(f1)
        f3, f2_pre = self.block3(f2)
        f3_pre = self.bn1(f3)
        pooled = global_avg_pool(F.relu(f3_pre))
        logits = self.fc(pooled)
        stages = [f1_pre, f2_pre, f3_pre] if preact else [f1, f2, f3]
        return logits, [stem, *stages, pooled]


@register_model("wrn_16_1")
def wrn_16_1(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """WRN-16-1 (CIFAR), 0.18 M parameters for 100 classes"""
    return WideResNet(16, 1, num_classes, in_channels)


@register_model("wrn_16_2")
def wrn_16_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """WRN-16-2 (CIFAR), 0.70 M parameters for 100 classes"""
    return WideResNet(16, 2, num_classes, in_channels)


@register_model("wrn_40_1")
def wrn_40_1(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """WRN-40-1 (CIFAR), 0.57 M parameters for 100 classes"""
    return WideResNet(40, 1, num_classes, in_channels)


@register_model("wrn_40_2")
def wrn_40_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """WRN-40-2 (CIFAR), 2.26 M parameters for 100 classes"""
    return WideResNet(40, 2, num_classes, in_channels)
