"""The starting weights of a run's models, checked before anything is built or trained.

A library model with ``pretrained: true`` needs the library's weights file in its cache
(downloaded now if missing and the machine is online). Every missing file is named in one
:class:`~engine.errors.InputError` line, with the folder it goes into, so that one trip to a
connected machine fetches them all. (The rest of what a run needs, that each model runs on
the data's input size and that the baseline works with the pair, is checked when the run's
plan builds them: :meth:`engine.run.ExperimentRun.prepare`.)
"""

from __future__ import annotations

from typing import Callable

from engine.config import ExperimentConfig
from engine.errors import InputError


def check_starting_weights(cfg: ExperimentConfig, uses_teacher: bool, log: Callable[[str], None] | None = None) -> None:
    """Refuse (one InputError line) a run whose pretrained library weights are not at hand."""
    from engine.models.sources import is_external, pretrained_weights_file

    if cfg.online.enabled:
        return
    roles = ([("teacher", cfg.teacher)] if uses_teacher else []) + [("student", cfg.student)]
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
    if missing:
        raise InputError("; and ".join(missing))
