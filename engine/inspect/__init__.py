"""Inspect a finished run: what the teacher, each granularity and the student attend to.

* :func:`load_run_models` (the one place that reads a run's checkpoints) and :func:`load_test_set`;
* :func:`class_activation_maps`: Grad-CAM (the ``torchcam`` library) of the teacher, each
  granularity head (its decoded logits on the teacher's features) and the student;
* :func:`code_projections`: each granularity's codes in 2-D (PCA; t-SNE or UMAP if installed);
* :func:`student_gain`: per-class accuracy of two runs' students and the images one gets
  right and the other wrong;
* :func:`inspect_run` does all of it, :func:`write_report` writes PNGs and one HTML page.

Long computations take ``progress(done, total)`` and ``cancelled()`` callables (see
:mod:`engine.inspect.progress`). No Qt here: the studio's Inspect view calls these.
"""

from __future__ import annotations

from engine.lazy import lazy_attributes

_LAZY = {
    "RunModels": "engine.inspect.load",
    "TestSet": "engine.inspect.load",
    "load_run_models": "engine.inspect.load",
    "load_test_set": "engine.inspect.load",
    "CamResult": "engine.inspect.cam",
    "class_activation_maps": "engine.inspect.cam",
    "first_per_class": "engine.inspect.cam",
    "RunOutputs": "engine.inspect.outputs",
    "collect_outputs": "engine.inspect.outputs",
    "Projection": "engine.inspect.codes",
    "code_projections": "engine.inspect.codes",
    "available_methods": "engine.inspect.codes",
    "Gain": "engine.inspect.gain",
    "student_gain": "engine.inspect.gain",
    "compare_predictions": "engine.inspect.gain",
    "Inspection": "engine.inspect.analysis",
    "inspect_run": "engine.inspect.analysis",
    "compare_runs": "engine.inspect.analysis",
    "write_report": "engine.inspect.report",
    "Cancelled": "engine.inspect.progress",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())  # importing the package imports no torch
