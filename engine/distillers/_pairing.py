"""Shared plumbing of the feature-based baselines: pairing stages, matching sizes, options.

This module registers nothing (its name starts with ``_``, so the registry's source
scan skips it).

Conventions used by every baseline that compares intermediate features
(FitNet, AT, NST, KDSVD):

* **Stage pairing.** The stage outputs are ``features[1:-1]``. Families have different
  numbers of stages (resnet/wrn/ShuffleNet: 3, vgg/MobileNetV2/ResNet50: 4), so the two
  lists are aligned *from the last stage backwards*: the last student stage is paired
  with the last teacher stage, the one before with the one before, and so on, for
  ``min(K_s, K_t)`` pairs. The deepest stages are the most alike across families (they
  feed the classifier), and when both models have the same number of stages this is
  exactly RepDistiller's ``zip(feat_s[1:-1], feat_t[1:-1])``.
* **Spatial sizes.** Where two paired maps differ in height or width, the larger is
  average-pooled (``adaptive_avg_pool2d``) to the smaller, per dimension, before the
  comparison; RepDistiller's AT and NST do the same for square maps. No parameters.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from engine.errors import ConfigError


def stage_pairs(student_shapes: list, teacher_shapes: list) -> list[tuple[int, int]]:
    """``(student index, teacher index)`` into the feature lists, one per paired stage,
    shallowest pair first; stages aligned from the last one backwards."""
    ks, kt = len(student_shapes) - 2, len(teacher_shapes) - 2
    n = min(ks, kt)
    return [(1 + ks - n + i, 1 + kt - n + i) for i in range(n)]


def match_spatial(fs: torch.Tensor, ft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two ``(N, C, H, W)`` maps to the smaller size, per dimension."""
    size = (min(fs.shape[-2], ft.shape[-2]), min(fs.shape[-1], ft.shape[-1]))
    if tuple(fs.shape[-2:]) != size:
        fs = F.adaptive_avg_pool2d(fs, size)
    if tuple(ft.shape[-2:]) != size:
        ft = F.adaptive_avg_pool2d(ft, size)
    return fs, ft


def is_map(shape) -> bool:
    """Whether a per-sample feature shape is a spatial map ``(C, H, W)``."""
    return len(tuple(shape)) == 3


def number(options: dict, key: str, *, integer: bool = False, minimum: float | None = None,
           above: float | None = None) -> Any:
    """Read a numeric option, refusing other types and out-of-range values with a
    :class:`ConfigError` naming ``distiller.options.<key>``."""
    field = f"distiller.options.{key}"
    value = options[key]
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(field, f"expected a number, got {options[key]!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(field, f"expected a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ConfigError(field, f"expected a whole number, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if minimum is not None and value < minimum:
        raise ConfigError(field, f"must be at least {minimum:g}, got {value!r}")
    if above is not None and value <= above:
        raise ConfigError(field, f"must be greater than {above:g}, got {value!r}")
    return value
