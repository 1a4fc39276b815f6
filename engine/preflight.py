"""Checks made before a run trains anything (plan time), so that a run that cannot finish
fails in seconds with the reason instead of after the teacher has trained for hours:

* the starting weights of each model are at hand: the library's pretrained weights are in
  its cache (downloaded now if missing and the machine is online; otherwise a one-line
  :class:`~engine.errors.InputError` names the file and the folder it goes into), and a
  weights file fits the model;
* the baseline can work with the teacher and student: both are built on the meta device
  (no memory, no compute), their features are probed at the data set's input size, and the
  baseline is constructed from them, so its own checks (a stage output it needs, features
  it cannot compare) refuse the pair with their reason;
* every model runs on the data set's input size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from engine.config import ExperimentConfig
from engine.errors import ConfigError, InputError


def _build_meta(arch: str, num_classes: int, in_channels: int, weights: str | None, role: str):
    from engine.models import build_model
    from engine.models.checkpoint import load_initial_weights

    with torch.device("meta"):
        model = build_model(arch, num_classes, in_channels)
    if weights:  # checks the file against the model (a meta model is checked, not loaded)
        load_initial_weights(model, Path(weights).expanduser(), arch, what=f"{role}.weights")
    return model.eval()


def _features(model, arch: str, input_shape: tuple[int, ...], preact: bool) -> list:
    """Per-sample shapes of the model's features; a model that cannot run on the input is refused."""
    try:
        with torch.no_grad():
            return [tuple(f.shape[1:]) for f in model(torch.zeros(2, *input_shape, device="meta"), preact=preact)[1]]
    except NotImplementedError as exc:  # pre-activation features of a library model
        raise ConfigError("distiller.name", str(exc)) from None
    except Exception:
        pass  # an operation without a meta kernel: try for real on the CPU
    from engine.models import build_model

    real = build_model(arch, model.num_classes, input_shape[0]).eval()
    try:
        with torch.no_grad():
            return [tuple(f.shape[1:]) for f in real(torch.zeros(2, *input_shape), preact=preact)[1]]
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{arch} cannot run on the data set's {'x'.join(map(str, input_shape))} inputs "
                         f"({reason[:200]}); choose another model or data.image_size") from None


def check_models(cfg: ExperimentConfig, num_classes: int, input_shape: tuple[int, ...], train_size: int,
                 log: Callable[[str], None] | None = None) -> None:
    """Refuse (InputError / ConfigError) a run whose models or baseline cannot work; see the module docstring."""
    from engine.distillers import distiller_class
    from engine.distillers.base import DistillerContext
    from engine.models.sources import is_external, pretrained_weights_file

    in_channels = int(input_shape[0])
    if cfg.online.enabled:
        for i, arch in enumerate(cfg.online.peers):
            _features(_build_meta(arch, num_classes, in_channels, None, f"online.peers.{i}"), arch, input_shape,
                      False)
        return
    cls = distiller_class(cfg.distiller.name)
    needs_teacher = bool(cls.uses_teacher) or cfg.granularity.mode != "off"
    roles = ([("teacher", cfg.teacher)] if needs_teacher else []) + [("student", cfg.student)]
    missing = []
    for role, section in roles:
        trains_from_library = section.pretrained and not (role == "teacher" and cfg.teacher.checkpoint)
        if trains_from_library and is_external(section.arch):
            try:
                path = pretrained_weights_file(section.arch, field=f"{role}.weights")
            except InputError as exc:
                missing.append(str(exc))
                continue
            if log is not None:
                log(f"{role}: pretrained weights of {section.arch}: {path}")
    if missing:  # every missing file in one line, so that one trip to a connected machine fetches them all
        raise InputError("; and ".join(missing))
    preact = bool(cls.needs_preact)
    student = _build_meta(cfg.student.arch, num_classes, in_channels, cfg.student.weights, "student")
    student_shapes = _features(student, cfg.student.arch, input_shape, preact)
    teacher_shapes: list = []
    if needs_teacher:
        weights = None if cfg.teacher.checkpoint else cfg.teacher.weights
        teacher = _build_meta(cfg.teacher.arch, num_classes, in_channels, weights, "teacher")
        teacher_shapes = _features(teacher, cfg.teacher.arch, input_shape, preact)
    context = DistillerContext(student_shapes=student_shapes, teacher_shapes=teacher_shapes, num_classes=num_classes,
                               train_size=train_size, student_arch=cfg.student.arch, teacher_arch=cfg.teacher.arch,
                               options=cfg.distiller.options)
    try:
        with torch.device("meta"):
            cls(context)
    except InputError:
        raise  # the baseline refuses the pair (ConfigError naming distiller.name or an option)
    except Exception:
        pass  # a baseline that computes while it is built: the student stage builds it for real
