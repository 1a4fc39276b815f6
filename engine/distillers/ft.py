"""Factor transfer (Kim et al., NeurIPS 2018), as in RepDistiller.

Features: the last stage output ``feats[-2]`` of both networks. A *paraphraser* on the
teacher's map (three 3x3 convs with LeakyReLU(0.1), channels ``C_t -> C_t -> rate*C_t ->
rate*C_t``, no batch norm, and a mirrored decoder of three 3x3 transposed convs) is first
pre-trained for ``init_epochs`` (30) epochs to reconstruct the teacher's map (mean squared
error; only the paraphraser is optimised). In the main stage its encoder gives the teacher
factor ``F_t`` (frozen: computed without gradient) and a *translator* on the student's map
(the same encoder, with batch norm, ``C_s -> C_s -> rate*C_t -> rate*C_t``) gives ``F_s``. As in
RepDistiller, each factor is reduced to a spatial map ``a(F) = normalise(mean_c F^2)``
(flattened, L2-normalised per sample) and

    L = mean_{n,hw} |a(F_s) - a(F_t)|^p,   p = 1

(the FT paper's ``|| F_s/||F_s|| - F_t/||F_t|| ||_1`` on the whole factor; RepDistiller's
``FactorTransfer(p1=2, p2=1)`` takes the channel mean of squares first, which is what the
authors' weight ``w_kd = 200`` was tuned for). Maps of different sizes: the larger factor is
average-pooled to the smaller one's size; channel counts differ freely (the translator maps
the student's to the factor width).

Pre-training rate: RepDistiller pre-trains the paraphraser at 0.01 when the student is a
CIFAR ResNet or WRN and at the student's rate otherwise; :meth:`FT.pretrain_lr` states that
rule (the MSE gradient scales with the teacher's feature magnitude, and 0.05 can diverge).
It takes effect where the engine's pretrain stage asks the baseline for its rate
(``distiller.pretrain_lr(schedule.lr)``); otherwise the student schedule's rate is used.
Not reproduced: RepDistiller keeps the student in eval mode during the pre-training (the
engine's pretrain stage puts it in train mode; the student is not optimised there, only its
batch-norm statistics move).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import setting
from engine.distillers import register_distiller
from engine.distillers._feature_adapt import (
    FIELD, feature_map, pool_to_common,
)
from engine.distillers.base import Distiller
from engine.errors import ConfigError

# RepDistiller's helper/pretrain.py: these students pre-train FT's paraphraser at lr 0.01
_LR_001_STUDENTS = frozenset({
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4", "resnet32x4",
    "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
})


def _encoder(c_in: int, c_out: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in ((c_in, c_in), (c_in, c_out), (c_out, c_out)):
        layers.append(nn.Conv2d(a, b, 3, 1, 1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Teacher-side auto-encoder whose code is the teacher factor."""

    def __init__(self, channels: int, factor_channels: int):
        super().__init__()
        self.encoder = _encoder(channels, factor_channels, batch_norm=False)
        layers: list[nn.Module] = []
        for a, b in ((factor_channels, factor_channels), (factor_channels, channels), (channels, channels)):
            layers += [nn.ConvTranspose2d(a, b, 3, 1, 1), nn.LeakyReLU(0.1)]
        self.decoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        factor = self.encoder(x)
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """Student-side encoder to the factor width (with batch norm, as in RepDistiller)."""

    def __init__(self, channels: int, factor_channels: int):
        super().__init__()
        self.encoder = _encoder(channels, factor_channels, batch_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def factor_map(f: torch.Tensor) -> torch.Tensor:
    """``normalise(mean_c f^2)`` flattened per sample."""
    return F.normalize(f.pow(2).mean(1).flatten(1), dim=1)


def ft_loss(factor_s: torch.Tensor, factor_t: torch.Tensor, p: float) -> torch.Tensor:
    factor_s, factor_t = pool_to_common(factor_s, factor_t)
    diff = factor_map(factor_s) - factor_map(factor_t)
    return diff.abs().mean() if p == 1 else diff.abs().pow(p).mean()


@dataclass
class FTOptions:
    init_epochs: int = setting(30, help="Epochs of the paraphraser's pre-training (0: none).", minimum=0,
                               maximum=100000)
    rate: float = setting(0.5, help="Width of the factors as a share of the teacher's channels.", above=0.0,
                          maximum=1.0)
    p: float = setting(1.0, help="Norm of the factor distance (1: L1, as RepDistiller).", above=0.0, maximum=100.0)


@register_distiller("ft")
class FT(Distiller):
    """FT (Kim et al. 2018): a translator on the student's last stage output matches the factors of a pre-trained teacher paraphraser."""

    # METHOD.md: FT 200 with its paraphraser pre-training
    default_weights = (1.0, 1.0, 200.0)
    Options = FTOptions
    pretrain_epochs_option = "init_epochs"

    def __init__(self, context):
        super().__init__(context)
        rate, self.p = self.opts.rate, self.opts.p
        s_c = feature_map(context.student_shapes[-2], "student", "FT", "last stage output")[0]
        t_c = feature_map(context.teacher_shapes[-2], "teacher", "FT", "last stage output")[0]
        factor_c = int(t_c * rate)
        if factor_c < 1:
            raise ConfigError(FIELD, f"FT's factor width int({t_c} * rate {rate}) is 0; raise distiller.options.rate")
        self.paraphraser = Paraphraser(t_c, factor_c)
        self.translator = Translator(s_c, factor_c)

    def pretrain_parameters(self, student):
        return list(self.paraphraser.parameters())

    def pretrain_lr(self, lr: float) -> float:
        """The paraphraser's pre-training rate given the student schedule's (RepDistiller's rule)."""
        return 0.01 if self.context.student_arch in _LR_001_STUDENTS else lr

    def pretrain_loss(self, student, teacher):
        target = teacher.features[-2].detach()
        _, reconstruction = self.paraphraser(target)
        return {"ft_rec": F.mse_loss(reconstruction, target)}

    def forward(self, student, teacher, labels, indices):
        with torch.no_grad():  # the paraphraser is frozen after its pre-training (RepDistiller)
            factor_t = self.paraphraser.encoder(teacher.features[-2])
        factor_s = self.translator(student.features[-2])
        return {"ft": ft_loss(factor_s, factor_t, self.p)}
