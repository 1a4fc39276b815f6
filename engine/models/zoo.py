"""The CIFAR zoo's registry: every architecture registers itself here by name (``@register_model``).

Listing the names reads the sources (:mod:`engine.registry`) and imports no torch; building an
entry imports its module. This module imports nothing of the zoo, so the zoo's modules, the
checkpoint reader and the name checks can all use it.
"""

from __future__ import annotations

from engine.registry import Registry

MODELS = Registry("model", "engine.models", "register_model")
register_model = MODELS.register


def model_names() -> list[str]:
    """Every registered (zoo) architecture name, without importing torch."""
    return MODELS.names()


def build_zoo_model(name: str, num_classes: int, in_channels: int = 3):
    """A zoo architecture (KeyError if unknown)."""
    model = MODELS.get(name)(num_classes=num_classes, in_channels=in_channels)
    model.init_notes = []
    return model
