"""Decoupled knowledge distillation (Zhao et al. 2022, CVPR)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.config import setting
from engine.distillers import register_distiller
from engine.distillers.base import Distiller
from engine.errors import ConfigError


def binary_log_probs(logits: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """``log [p_target, 1 - p_target]`` of ``softmax(logits)``, computed stably, ``(N, 2)``."""
    log_all = torch.logsumexp(logits, dim=1)
    log_target = logits[target_mask] - log_all
    log_rest = torch.logsumexp(logits.masked_fill(target_mask, float("-inf")), dim=1) - log_all
    return torch.stack([log_target, log_rest], dim=1)


def non_target_logits(logits: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """The logits without the target class, ``(N, C - 1)`` (one target per row)."""
    return logits[~target_mask].view(logits.shape[0], logits.shape[1] - 1)


def dkd_terms(s_logits: torch.Tensor, t_logits: torch.Tensor, labels: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(TCKD, NCKD)``, each ``T^2 * KL(teacher || student)`` averaged over the batch:
    TCKD on the binary (target, all others) probabilities, NCKD on the distribution among
    the non-target classes."""
    T = temperature
    mask = F.one_hot(labels, s_logits.shape[1]).bool()
    b_s = binary_log_probs(s_logits / T, mask)
    b_t = binary_log_probs(t_logits / T, mask)
    tckd = F.kl_div(b_s, b_t, reduction="batchmean", log_target=True) * T * T
    n_s = F.log_softmax(non_target_logits(s_logits, mask) / T, dim=1)
    n_t = F.log_softmax(non_target_logits(t_logits, mask) / T, dim=1)
    nckd = F.kl_div(n_s, n_t, reduction="batchmean", log_target=True) * T * T
    return tckd, nckd


@dataclass
class DKDOptions:
    alpha: float = setting(1.0, help="Weight of the target-class term (TCKD).", minimum=0.0)
    beta: float | None = setting(
        None, help="Weight of the non-target-class term (NCKD). Empty: mdistiller's value for the teacher/student "
                   "pair (2 for resnet56/110 -> resnet20/32, 6 for wrn_40_2 and vgg13 pairs), 8 for other pairs.",
        minimum=0.0)
    temperature: float = setting(4.0, help="Temperature of both terms.", above=0.0, maximum=1000.0)
    warmup_epochs: int = setting(20, help="Epochs over which the DKD terms ramp in linearly.", minimum=0,
                                 maximum=100000)


#: beta tuned per CIFAR-100 pair by mdistiller (configs/cifar100/dkd/<pair>.yaml, DKD.BETA; its
#: default CFG.DKD.BETA = 8.0 serves the pairs without an entry, e.g. res32x4_res8x4)
PAIR_BETA = {
    ("resnet56", "resnet20"): 2.0, ("resnet110", "resnet32"): 2.0,
    ("wrn_40_2", "wrn_16_2"): 6.0, ("wrn_40_2", "wrn_40_1"): 6.0,
    ("vgg13", "vgg8"): 6.0, ("vgg13", "MobileNetV2"): 6.0,
}
DEFAULT_BETA = 8.0


@register_distiller("dkd")
class DKD(Distiller):
    """DKD (Zhao et al. 2022): logit KD decoupled into a target-class term (weight alpha) and a non-target-class term (weight beta), warmed up."""

    # DKD replaces the plain logit KD term: (w_ce, w_div, w_kd) = (1, 0, 1). CIFAR-100
    # defaults of the paper / mdistiller: alpha 1, beta 8, T 4, 20 warm-up epochs.
    default_weights = (1.0, 0.0, 1.0)
    Options = DKDOptions

    @classmethod
    def resolve_options(cls, options: dict | None, teacher_arch: str = "", student_arch: str = "") -> dict:
        resolved = super().resolve_options(options)
        if resolved["beta"] is None:
            resolved["beta"] = PAIR_BETA.get((teacher_arch, student_arch), DEFAULT_BETA)
        return resolved

    def __init__(self, context):
        super().__init__(context)
        self.alpha, self.beta = self.opts.alpha, self.opts.beta
        if self.beta is None:
            self.beta = PAIR_BETA.get((context.teacher_arch, context.student_arch), DEFAULT_BETA)
            self.options["beta"] = self.beta
        self.temperature, self.warmup_epochs = self.opts.temperature, self.opts.warmup_epochs
        if context.num_classes < 2:
            raise ConfigError("distiller.name", "dkd needs at least two classes (a target and a non-target class)")
        self.epoch, self.epochs = 0, 1

    def warmup(self) -> float:
        """Linear ramp: ``min((epoch + 1) / warmup_epochs, 1)`` with a 0-based epoch, i.e.
        mdistiller's ``min(epoch / warmup, 1)`` with its 1-based epoch; 1 without warm-up."""
        if self.warmup_epochs <= 0:
            return 1.0
        return min((self.epoch + 1) / self.warmup_epochs, 1.0)

    def forward(self, student, teacher, labels, indices):
        tckd, nckd = dkd_terms(student.logits, teacher.logits.detach(), labels, self.temperature)
        ramp = self.warmup()
        return {"dkd_tckd": ramp * self.alpha * tckd, "dkd_nckd": ramp * self.beta * nckd}
