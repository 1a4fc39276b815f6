"""The model zoo: CIFAR-style networks of RepDistiller's definitions, in a lazy registry.

Every model is an ``nn.Module`` whose ``forward(x, preact=False)`` returns
``(logits, features)`` where ``features`` is ``[stem, stage1, ..., stageK, pooled]``
(``pooled`` is the flattened input of the final linear classifier). Each model also has
``feature_dim`` (width of ``pooled``), ``num_classes`` and ``classifier_name`` (the
attribute holding the final ``nn.Linear``).
"""

from __future__ import annotations

from engine.registry import Registry

MODELS = Registry("model", "engine.models", "register_model")
register_model = MODELS.register


def model_names() -> list[str]:
    """Every registered architecture name, without importing torch."""
    return MODELS.names()


def build_model(name: str, num_classes: int, in_channels: int = 3):
    """Build a registered architecture for ``num_classes`` classes and ``in_channels`` input channels."""
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels)


def freeze(module):
    """Put ``module`` in eval mode with no gradients (a frozen teacher, heads, a loaded model); returns it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
