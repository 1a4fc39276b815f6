"""VGG with batch norm for CIFAR, as defined in RepDistiller's models/vgg.py (``vggN_bn``).

Five conv blocks, no hidden fully-connected layers, one linear classifier on the
globally pooled 512 channels. Registered as ``vgg8`` ... ``vgg19`` (RepDistiller's
``model_dict`` does the same). State-dict names: ``block{0..4}.{i}`` where each conv
(with bias) is followed by its batch norm, so a block's modules are
``conv, bn, relu, conv, bn, relu, ..., conv, bn`` (the last relu is applied outside the
block, so the pre-activation is available), and ``classifier``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.zoo import register_model
from engine.models._base import SizeSafeMaxPool2d, ZooModel, init_conv_bn

# Output channels of each conv, per block (RepDistiller's cfg "S", "A", "B", "D", "E").
_CONFIGS = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def make_block(widths: list[int], in_channels: int) -> nn.Sequential:
    """conv-bn-relu repeated, without the final relu (the network applies it)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(ZooModel):
    def __init__(self, config: list[list[int]], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        block_out = [widths[-1] for widths in config]
        self.block0 = make_block(config[0], in_channels)
        self.block1 = make_block(config[1], block_out[0])
        self.block2 = make_block(config[2], block_out[1])
        self.block3 = make_block(config[3], block_out[2])
        self.block4 = make_block(config[4], block_out[3])
        # Size-safe pools: an 8x8 input is 1x1 after three of them (no parameters).
        self.pool0 = SizeSafeMaxPool2d(kernel_size=2, stride=2)
        self.pool1 = SizeSafeMaxPool2d(kernel_size=2, stride=2)
        self.pool2 = SizeSafeMaxPool2d(kernel_size=2, stride=2)
        self.pool3 = SizeSafeMaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(block_out[4], num_classes)
        init_conv_bn(self)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

        self.num_classes = num_classes
        self.feature_dim = block_out[4]
        self.classifier_name = "classifier"
        self.stem_channels = block_out[0]
        self.stage_channels = block_out[1:]

    def forward(self, x: torch.Tensor, preact: bool = False):
        # RepDistiller pools before block4 only for 64x64 inputs (TinyImageNet); kept.
        pool_before_last = x.shape[2] == 64
        stem = F.relu(self.block0(x))
        f1_pre = self.block1(self.pool0(stem))
        f1 = F.relu(f1_pre)
        f2_pre = self.block2(self.pool1(f1))
        f2 = F.relu(f2_pre)
        f3_pre = self.block3(self.pool2(f2))
        f3 = F.relu(f3_pre)
        f4_pre = self.block4(self.pool3(f3) if pool_before_last else f3)
        f4 = F.relu(f4_pre)
        pooled = self.pool4(f4).flatten(1)
        logits = self.classifier(pooled)
        stages = [f1_pre, f2_pre, f3_pre, f4_pre] if preact else [f1, f2, f3, f4]
        return logits, [stem, *stages, pooled]


@register_model("vgg8")
def vgg8(num_classes: int = 100, in_channels: int = 3) -> VGG:
    """VGG-8 with batch norm (CIFAR), 3.97 M parameters for 100 classes"""
    return VGG(_CONFIGS[8], num_classes, in_channels)


@register_model("vgg11")
def vgg11(num_classes: int = 100, in_channels: int = 3) -> VGG:
    """VGG-11 with batch norm (CIFAR), 9.28 M parameters for 100 classes"""
    return VGG(_CONFIGS[11], num_classes, in_channels)


@register_model("vgg13")
def vgg13(num_classes: int = 100, in_channels: int = 3) -> VGG:
    """VGG-13 with batch norm (CIFAR), 9.46 M parameters for 100 classes"""
    return VGG(_CONFIGS[13], num_classes, in_channels)


@register_model("vgg16")
def vgg16(num_classes: int = 100, in_channels: int = 3) -> VGG:
    """VGG-16 with batch norm (CIFAR), 14.77 M parameters for 100 classes"""
    return VGG(_CONFIGS[16], num_classes, in_channels)


@register_model("vgg19")
def vgg19(num_classes: int = 100, in_channels: int = 3) -> VGG:
    """VGG-19 with batch norm (CIFAR), 20.09 M parameters for 100 classes"""
    return VGG(_CONFIGS[19], num_classes, in_channels)
