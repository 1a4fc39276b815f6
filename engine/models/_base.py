"""What every zoo model shares: the common attributes, weight init and size-safe pooling.

This module registers nothing (its name starts with ``_`` so the registry's source scan
skips it). Nothing here owns parameters, so state-dict names stay those of RepDistiller.

Feature contract (see ``engine/models/__init__.py``): ``forward(x, preact=False)``
returns ``(logits, features)`` with ``features = [stem, stage1, ..., stageK, pooled]``.
The channel counts are known without a forward pass:

* ``stem_channels``: channels of ``features[0]``;
* ``stage_channels``: channels of ``features[1:-1]`` (one per stage output);
* ``feature_dim``: width of ``features[-1]`` (the classifier's input);
* ``feature_channels``: all of them in the order of ``features``.

``classifier_name`` is the *module path* of the final ``nn.Linear``: a plain attribute
name ("fc", "linear", "classifier") for every family except MobileNetV2, whose classifier
sits inside an ``nn.Sequential`` in RepDistiller ("classifier.0"). Use
:meth:`ZooModel.get_classifier` / :meth:`ZooModel.replace_classifier` (or
``model.get_submodule(model.classifier_name)``) rather than ``getattr``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ZooModel(nn.Module):
    """Base class of the zoo's networks: the attributes distillers read, no parameters."""

    num_classes: int
    feature_dim: int
    classifier_name: str
    stem_channels: int
    stage_channels: list[int]
    #: whether ``forward(x, preact=True)`` gives pre-activation stage outputs (AB needs them)
    supports_preact: bool = True

    @property
    def feature_channels(self) -> list[int]:
        """Channel count (width, for ``pooled``) of each entry of the feature list."""
        return [self.stem_channels, *self.stage_channels, self.feature_dim]

    def get_classifier(self) -> nn.Linear:
        """The final linear layer."""
        return self.get_submodule(self.classifier_name)

    def replace_classifier(self, layer: nn.Module) -> None:
        """Swap the final linear layer (fine-tuning on another data set)."""
        self.set_submodule(self.classifier_name, layer)
        if isinstance(layer, nn.Linear):
            self.num_classes = layer.out_features

    def parameter_groups(self, backbone_lr_scale: float = 1.0) -> list[dict]:
        """The parameters as two optimiser groups: the backbone (everything but the classifier),
        whose learning rate is scaled by ``backbone_lr_scale`` (the trainer multiplies each
        group's rate by its ``lr_scale``), and the classifier at the full rate. Fine-tuning a
        pretrained backbone wants the smaller rate; a new classifier the full one."""
        head = {id(p) for p in self.get_classifier().parameters()}
        backbone = [p for p in self.parameters() if id(p) not in head]
        return [{"params": backbone, "lr_scale": float(backbone_lr_scale)},
                {"params": [p for p in self.parameters() if id(p) in head], "lr_scale": 1.0}]


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Average over all spatial positions and flatten to ``(N, C)``.

    RepDistiller hard-codes ``AvgPool2d(8)`` / ``avg_pool2d(x, 4)`` for 32x32 inputs;
    on a 32x32 input that is exactly a global average, so this gives the same numbers
    there and also works for any other input size (e.g. 8x8 digits).
    """
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def run_stage(stage: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a stage of blocks that each return ``(out, preact)``; give the last block's pair.

    RepDistiller's blocks return the pair only when flagged ``is_last``; returning it
    always and picking the last one here gives the same tensors with simpler blocks.
    """
    preact = x
    for block in stage:
        x, preact = block(x)
    return x, preact


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups (ShuffleNet's shuffle)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SizeSafeMaxPool2d(nn.MaxPool2d):
    """``MaxPool2d`` that passes a map through unchanged when it is smaller than the kernel.

    A 2x2 max-pool would shrink a 1x1 map to 0x0 (an error); tiny inputs such as 8x8
    digits reach 1x1 before VGG's last pool. On maps at least as large as the kernel it
    is a plain max-pool, so 32x32 CIFAR results are unchanged. No parameters.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size if isinstance(self.kernel_size, tuple) else (self.kernel_size,) * 2
        if x.shape[-2] < k[0] or x.shape[-1] < k[1]:
            return x
        return super().forward(x)


def init_conv_bn(model: nn.Module) -> None:
    """RepDistiller's init of convs and batch norms, shared by most families.

    Convs: He normal with fan-out (std = sqrt(2 / (k*k*out_channels))), which is what
    both ``kaiming_normal_(mode='fan_out')`` and the older ``normal_(0, sqrt(2/n))`` of
    wrn/vgg/mobilenetv2 compute; conv biases (VGG) zero. Batch norms: weight 1, bias 0.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
