"""Shared helpers of the baselines (FitNet, AT, NST, KDSVD, VID, CRD, AB, FT, FSP and the rest).

This module registers nothing (its name starts with ``_``, so the registry's source scan
skips it). It holds the conventions those baselines share for pairs whose features differ:

* **Stage lists of different lengths** (:func:`pair_stages`): the lists are aligned from the
  last stage backwards, ``min(K_s, K_t)`` pairs (3 against 4 stages: 1-2, 2-3, 3-4), the
  deepest stages being the most alike across families; equal lengths pair one to one, which
  is RepDistiller's ``zip``. :func:`stage_pairs` gives the same pairs as feature-list indices.
* **Spatial sizes** (:func:`pool_to_common`): the larger map is average-pooled (adaptive) to
  the smaller one's height and width, as RepDistiller's VID, FT and FSP do.
* **Channel counts**: 1x1 convolutions (:func:`conv1x1`), built by each baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError

FIELD = "distiller.name"


# ----------------------------------------------------------------------------- shapes


def stage_maps(shapes: list, who: str, name: str) -> list[tuple[int, int, int]]:
    """The stage outputs ``shapes[1:-1]`` as ``(C, H, W)``; refuse a model without any."""
    stages = [tuple(int(d) for d in s) for s in shapes[1:-1]]
    if not stages:
        raise ConfigError(FIELD, f"{name} needs the {who}'s stage outputs, but its feature list has none")
    for s in stages:
        if len(s) != 3:
            raise ConfigError(FIELD, f"{name} needs {who} stage outputs shaped (C, H, W), got {s}")
    return stages


def feature_map(shape, who: str, name: str, what: str) -> tuple[int, int, int]:
    s = tuple(int(d) for d in shape)
    if len(s) != 3:
        raise ConfigError(FIELD, f"{name} needs the {who}'s {what} shaped (C, H, W), got {s}")
    return s


def is_map(shape) -> bool:
    """Whether a per-sample feature shape is a spatial map ``(C, H, W)``."""
    return len(tuple(shape)) == 3


def pair_stages(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Pairs ``(student stage, teacher stage)`` (0-based into ``features[1:-1]``), shallowest
    first, of two stage lists aligned from the last stage backwards (see the module docstring)."""
    n = max(0, min(n_student, n_teacher))
    return [(n_student - n + k, n_teacher - n + k) for k in range(n)]


def stage_pairs(student_shapes: list, teacher_shapes: list) -> list[tuple[int, int]]:
    """:func:`pair_stages` as indices into the whole feature lists ``[stem, stages..., pooled]``."""
    return [(1 + s, 1 + t) for s, t in pair_stages(len(student_shapes) - 2, len(teacher_shapes) - 2)]


def common_size(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, int]:
    """The (H, W) both maps are pooled to: the smaller of each."""
    return min(a[-2], b[-2]), min(a[-1], b[-1])


def pool_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.adaptive_avg_pool2d(x, size)


def pool_to_common(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger map (per dimension) to the other's size."""
    size = common_size(tuple(a.shape), tuple(b.shape))
    return pool_to(a, size), pool_to(b, size)


def conv1x1(in_channels: int, out_channels: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=bias)


# ----------------------------------------------------------------------------- parameters


def backbone_parameters(student: nn.Module) -> list[nn.Parameter]:
    """The student's parameters except its final classifier (RepDistiller's ``get_feat_modules``)."""
    skip: set[int] = set()
    get = getattr(student, "get_classifier", None)
    if callable(get):
        skip = {id(p) for p in get().parameters()}
    return [p for p in student.parameters() if id(p) not in skip]
