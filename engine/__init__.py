"""MGD Studio's training engine (no Qt): multi-granularity knowledge distillation.

The public interface, kept small (config in, events out, control):

* :func:`engine.run.run_experiment` runs an experiment and returns its summary;
* :class:`engine.config.ExperimentConfig` and :func:`engine.config.load_config`;
* :class:`engine.control.RunControl` pauses, resumes and stops a run from any thread;
* :mod:`engine.events` holds the event types a run emits;
* :mod:`engine.mgd` holds the method itself for use in your own training loop.

Attributes load lazily, so ``import engine`` does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "run_experiment": "engine.run",
    "ExperimentConfig": "engine.config",
    "load_config": "engine.config",
    "save_config": "engine.config",
    "RunControl": "engine.control",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = list(_LAZY) + ["__version__"]
