"""The distiller contract shared by every baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from engine.errors import ConfigError


@dataclass
class ModelOutput:
    """A forward pass as distillers see it."""

    logits: torch.Tensor
    features: list  # [stem, stage1, ..., stageK, pooled]


@dataclass
class DistillerContext:
    """What a baseline may need to build its own modules, known before training."""

    student_shapes: list  # shape of each student feature for one sample, e.g. [(16, 32, 32), ..., (64,)]
    teacher_shapes: list
    num_classes: int
    train_size: int  # number of training samples (memory banks index them)
    student_arch: str = ""
    teacher_arch: str = ""
    options: dict = field(default_factory=dict)


class Distiller(nn.Module):
    """One baseline: owns its extra trainable modules and returns named, unweighted loss terms.

    The student stage computes ``w_ce * CE + w_div * KD(q) + w_kd * sum(terms) + MGD codes``,
    where ``terms`` is what :meth:`forward` returns. Subclasses set ``default_weights``
    (w_ce, w_div, w_kd) from METHOD.md and ``option_defaults`` for their own settings.
    """

    default_weights: ClassVar[tuple[float, float, float]] = (1.0, 1.0, 1.0)
    option_defaults: ClassVar[dict[str, Any]] = {}
    needs_preact: ClassVar[bool] = False
    #: False for the "student alone" reference: the stage then skips the teacher entirely
    uses_teacher: ClassVar[bool] = True

    def __init__(self, context: DistillerContext):
        super().__init__()
        self.context = context
        self.options = self.resolve_options(context.options)

    @classmethod
    def resolve_options(cls, options: dict | None) -> dict:
        options = dict(options or {})
        unknown = [k for k in options if k not in cls.option_defaults]
        if unknown:
            allowed = ", ".join(cls.option_defaults) or "none"
            raise ConfigError(f"distiller.options.{unknown[0]}", f"unknown option of this baseline; allowed: {allowed}")
        return {**cls.option_defaults, **options}

    # -- the student stage ----------------------------------------------------------
    def forward(self, student: ModelOutput, teacher: ModelOutput, labels: torch.Tensor,
                indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named, unweighted loss terms of the baseline (the stage multiplies them by w_kd)."""
        raise NotImplementedError

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """Called before each student epoch (0-based), e.g. for loss warm-up schedules."""
        self.epoch, self.epochs = epoch, epochs

    # -- an optional pre-training stage (AB, FT, FSP) --------------------------------
    #: option holding the number of pre-training epochs; None: the baseline has no such stage
    pretrain_epochs_option: ClassVar[str | None] = None

    def pretrain_epochs(self) -> int:
        return int(self.options.get(self.pretrain_epochs_option, 0)) if self.pretrain_epochs_option else 0

    def pretrain_lr(self, lr: float) -> float:
        """Learning rate of the pre-training stage, given the student's (RepDistiller's rules differ per baseline)."""
        return lr

    def pretrain_parameters(self, student: nn.Module) -> list[nn.Parameter]:
        """What the pre-training stage optimises (some of the student's and/or the baseline's modules)."""
        return list(self.parameters())

    def pretrain_loss(self, student: ModelOutput, teacher: ModelOutput) -> dict[str, torch.Tensor]:
        """Named terms of the pre-training loss; their sum is minimised."""
        raise NotImplementedError
