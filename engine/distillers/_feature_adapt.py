"""Shared helpers of the feature-based baselines VID, CRD, AB, FT and FSP.

This module registers nothing (its name starts with ``_``, so the registry's source scan
skips it). It holds the conventions those baselines share for pairs whose features differ:

* **Option checks**: :func:`check_int`, :func:`check_float`, :func:`check_bool` raise
  :class:`~engine.errors.ConfigError` naming ``distiller.options.<key>``.
* **Stage lists of different lengths** (:func:`pair_stages`): the lists are aligned from the
  last stage backwards, ``min(K_s, K_t)`` pairs (3 against 4 stages: 1-2, 2-3, 3-4), the
  convention of ``_pairing.stage_pairs`` used by FitNet, AT, NST and KDSVD; equal lengths
  pair one to one, which is RepDistiller's ``zip``.
* **Spatial sizes** (:func:`pool_to_common`): the larger map is average-pooled (adaptive) to
  the smaller one's height and width, as RepDistiller's VID, FT and FSP do.
* **Channel counts**: 1x1 convolutions (:func:`conv1x1`), built by each baseline.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError

FIELD = "distiller.name"


# ----------------------------------------------------------------------------- options


def _field(key: str) -> str:
    return f"distiller.options.{key}"


def _numeric(value: Any) -> Any:
    """A number written as text (a form field, a ``--set`` value) is read as that number."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value
    return value


def check_int(options: dict, key: str, minimum: int | None = None) -> int:
    value: Any = _numeric(options[key])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise ConfigError(_field(key), f"must be a whole number, not {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(_field(key), f"must be at least {minimum}, not {value}")
    return value


def check_float(options: dict, key: str, minimum: float | None = None, maximum: float | None = None,
                exclusive_minimum: bool = False) -> float:
    value: Any = _numeric(options[key])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ConfigError(_field(key), f"must be a finite number, not {value!r}")
    value = float(value)
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        raise ConfigError(_field(key), f"must be {'above' if exclusive_minimum else 'at least'} {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(_field(key), f"must be at most {maximum}, not {value}")
    return value


def check_bool(options: dict, key: str) -> bool:
    value: Any = options[key]
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ConfigError(_field(key), f"must be true or false, not {value!r}")
    return value


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


def pair_stages(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Pairs ``(student stage, teacher stage)`` (0-based into ``features[1:-1]``), shallowest
    first, of two stage lists aligned from the last stage backwards (see the module docstring)."""
    n = max(0, min(n_student, n_teacher))
    return [(n_student - n + k, n_teacher - n + k) for k in range(n)]


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
