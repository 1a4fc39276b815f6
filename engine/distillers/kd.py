"""Knowledge distillation (Hinton et al. 2015)."""

from __future__ import annotations

from engine.distillers import register_distiller
from engine.distillers.base import Distiller


@register_distiller("kd")
class KD(Distiller):
    """Hinton KD: the student matches the teacher's softened logits (no extra term)."""

    # METHOD.md: the authors' weights for KD are (w_ce, w_div, w_kd) = (0.2, 0.8, 0).
    default_weights = (0.2, 0.8, 0.0)

    def forward(self, student, teacher, labels, indices):
        # The logit term T^2 KL(q/T || z_S/T) is added by the student stage for every
        # baseline, with q the MGD soft target; plain KD has nothing of its own to add.
        return {}
