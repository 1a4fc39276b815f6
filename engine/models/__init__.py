"""The model zoo (CIFAR-style networks of RepDistiller's definitions, in a lazy registry) and
the library models of torchvision and timm (``torchvision:NAME``, ``timm:NAME``).

Every model is an ``nn.Module`` whose ``forward(x, preact=False)`` returns
``(logits, features)`` where ``features`` is ``[stem, stage1, ..., stageK, pooled]``
(``pooled`` is the flattened input of the final linear classifier). Each model also has
``feature_dim`` (width of ``pooled``), ``num_classes`` and ``classifier_name`` (the
attribute holding the final ``nn.Linear``). Library models are wrapped by
:mod:`engine.models.external`; :mod:`engine.models.sources` checks their names and finds
their pretrained weights.
"""

from __future__ import annotations

from engine.models.build import (BYTES_PER_ACTIVATION, TRAIN_BYTES_PER_PARAMETER, activation_count, build_model,
                                 check_compatible, is_known_model, parameter_count, training_memory)
from engine.models.zoo import MODELS, model_names, register_model

__all__ = ["MODELS", "register_model", "model_names", "build_model", "is_known_model", "parameter_count",
           "activation_count", "training_memory", "check_compatible", "freeze", "TRAIN_BYTES_PER_PARAMETER",
           "BYTES_PER_ACTIVATION"]


def freeze(module):
    """Put ``module`` in eval mode with no gradients (a frozen teacher, heads, a loaded model); returns it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
