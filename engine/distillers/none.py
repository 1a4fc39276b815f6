"""The student trained alone, the reference every distiller must beat."""

from __future__ import annotations

from engine.distillers import register_distiller
from engine.distillers.base import Distiller


@register_distiller("none")
class StudentAlone(Distiller):
    """No distillation: the student trained alone with cross-entropy, at the same budget (the reference)."""

    default_weights = (1.0, 0.0, 0.0)
    uses_teacher = False

    def forward(self, student, teacher, labels, indices):
        return {}
