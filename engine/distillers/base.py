"""The distiller contract shared by every baseline."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from engine.config import build_section

OPTIONS_FIELD = "distiller.options"


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
    train_labels: Any = None  # the class of every training sample (CRD draws negatives from other classes)


@dataclass
class NoOptions:
    """This baseline has no options of its own."""


class Distiller(nn.Module):
    """One baseline: owns its extra trainable modules and returns named, unweighted loss terms.

    The student stage computes ``w_ce * CE + w_div * KD(q) + w_kd * sum(terms) + MGD codes``,
    where ``terms`` is what :meth:`forward` returns. Subclasses set ``default_weights``
    (w_ce, w_div, w_kd) from METHOD.md and declare their own settings as ``Options``, a
    dataclass of :func:`engine.config.setting` fields (type, default, help, bounds), exactly
    like the config schema: validation, ``mgd-train --plan`` and the studio's form read it.
    The validated options are ``self.opts`` (typed) and ``self.options`` (a plain dict).
    """

    default_weights: ClassVar[tuple[float, float, float]] = (1.0, 1.0, 1.0)
    Options: ClassVar[type] = NoOptions
    needs_preact: ClassVar[bool] = False
    #: False for the "student alone" reference: the stage then skips the teacher entirely
    uses_teacher: ClassVar[bool] = True

    def __init__(self, context: DistillerContext):
        super().__init__()
        self.context = context
        self.opts = self.parse_options(context.options)
        self.options = dataclasses.asdict(self.opts)

    @classmethod
    def parse_options(cls, options: dict | None) -> Any:
        """The validated ``Options`` of ``options``; a ConfigError names ``distiller.options.<key>``
        and the allowed keys or values."""
        return build_section(cls.Options, dict(options or {}), OPTIONS_FIELD)

    @classmethod
    def resolve_options(cls, options: dict | None, teacher_arch: str = "", student_arch: str = "") -> dict:
        """Every option of the baseline, defaults filled in (some depend on the pair, as DKD's
        beta), as plain data (for config.yaml)."""
        return dataclasses.asdict(cls.parse_options(options))

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
        return int(getattr(self.opts, self.pretrain_epochs_option)) if self.pretrain_epochs_option else 0

    def pretrain_lr(self, lr: float) -> float:
        """Learning rate of the pre-training stage, given the student's (RepDistiller's rules differ per baseline)."""
        return lr

    def pretrain_parameters(self, student: nn.Module) -> list[nn.Parameter]:
        """What the pre-training stage optimises (some of the student's and/or the baseline's modules)."""
        return list(self.parameters())

    def pretrain_loss(self, student: ModelOutput, teacher: ModelOutput) -> dict[str, torch.Tensor]:
        """Named terms of the pre-training loss; their sum is minimised."""
        raise NotImplementedError
