"""Granularity heads: the multi-granularity self-analysing module of MGD.

Each granularity g compresses the penultimate feature ``f`` (width F) into a code of
width ``d_g`` and decodes it back to class logits (METHOD.md, "Granularity heads")::

    encoder_g: Linear(F, F) -> ReLU -> Linear(F, d_g)        code   e_g
    decoder_g: Linear(d_g, F) -> ReLU -> Linear(F, C)        logits r_g
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn


def _as_pair(g) -> tuple[int, float]:
    if isinstance(g, (tuple, list)):
        dim, temperature = g
    else:  # a config HeadConfig or anything with .dim and .temperature
        dim, temperature = g.dim, g.temperature
    return int(dim), float(temperature)


class GranularityHead(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int, dim: int, temperature: float):
        super().__init__()
        self.dim = dim
        self.temperature = temperature
        self.encoder = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True), nn.Linear(feature_dim, dim))
        self.decoder = nn.Sequential(nn.Linear(dim, feature_dim), nn.ReLU(inplace=True), nn.Linear(feature_dim, num_classes))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(features)
        return code, self.decoder(code)


class GranularityHeads(nn.Module):
    """Any number of granularity heads on one feature vector.

    ``granularities`` is a sequence of ``(dim, temperature)`` pairs (or objects with
    ``.dim`` and ``.temperature``); the paper's default is ``[(64, 2), (256, 8)]``.
    ``forward(f)`` returns ``(codes, decoded_logits)``, two lists with one tensor per head.
    """

    def __init__(self, feature_dim: int, num_classes: int, granularities: Iterable = ((64, 2.0), (256, 8.0))):
        super().__init__()
        pairs = [_as_pair(g) for g in granularities]
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.heads = nn.ModuleList(GranularityHead(feature_dim, num_classes, d, t) for d, t in pairs)

    @property
    def temperatures(self) -> list[float]:
        return [h.temperature for h in self.heads]

    @property
    def dims(self) -> list[int]:
        return [h.dim for h in self.heads]

    def __len__(self) -> int:
        return len(self.heads)

    def forward(self, features: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        codes, logits = [], []
        for head in self.heads:
            code, decoded = head(features)
            codes.append(code)
            logits.append(decoded)
        return codes, logits

    def encode(self, features: torch.Tensor) -> list[torch.Tensor]:
        """The codes only (the student stage needs no decoder)."""
        return [head.encoder(features) for head in self.heads]

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for head in self.heads for p in head.encoder.parameters()]

    def names(self) -> list[str]:
        """Loss and metric names of the heads, e.g. ``code1_d64``."""
        return [f"code{i + 1}_d{h.dim}" for i, h in enumerate(self.heads)]


def head_names(granularities: Sequence) -> list[str]:
    return [f"code{i + 1}_d{_as_pair(g)[0]}" for i, g in enumerate(granularities)]
