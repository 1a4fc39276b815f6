"""Building models: a zoo architecture or a library model, its starting weights, its size and the
memory it needs to train, and whether a checkpoint fits it (before a run starts)."""

from __future__ import annotations

import functools
import os

from engine.models.zoo import MODELS, build_zoo_model

#: bytes per parameter while training: the weights, their gradients, SGD's momentum and the
#: best-weights copy the stages keep (4 float32 tensors of the model's size)
TRAIN_BYTES_PER_PARAMETER = 16
#: bytes per activation value kept for the backward pass (float32)
BYTES_PER_ACTIVATION = 4


def build_model(name: str, num_classes: int, in_channels: int = 3, *, pretrained: bool = False,
                weights: str | None = None):
    """Build a zoo architecture or a library model (``torchvision:NAME``, ``timm:NAME``) for
    ``num_classes`` classes and ``in_channels`` input channels.

    ``pretrained``: start a library model from the library's pretrained weights (from its
    cache, downloaded when missing and online; an :class:`~engine.errors.InputError` naming
    the file and folder otherwise). ``weights``: start from a weights file instead (see
    :func:`engine.models.checkpoint.load_initial_weights`). A classifier for another number
    of classes is replaced; what was adapted is in the model's ``init_notes``.
    """
    from engine.errors import InputError
    from engine.models.sources import is_external

    if pretrained and weights:
        raise InputError(f"{name}: give either pretrained weights or a weights file, not both")
    if is_external(name):
        from engine.models.external import build_external

        model = build_external(name, num_classes, in_channels, pretrained=pretrained)
    else:
        if pretrained:
            raise InputError(f"{name}: the CIFAR zoo has no pretrained weights (pretrained: true is for "
                             "torchvision:NAME and timm:NAME); train it, or give a weights file or a checkpoint")
        model = build_zoo_model(name, num_classes, in_channels)  # KeyError if unknown
    if weights:
        from pathlib import Path

        from engine.models.checkpoint import load_initial_weights

        model.init_notes = list(getattr(model, "init_notes", [])) + load_initial_weights(
            model, Path(weights).expanduser(), name)
    return model


def is_known_model(name: str) -> bool:
    """Whether ``name`` is a zoo name or a library model name that passes the name check."""
    from engine.models.sources import name_problem

    return name_problem(name) is None


@functools.lru_cache(maxsize=512)
def parameter_count(name: str, num_classes: int, in_channels: int = 3) -> int:
    """Parameters of a model for a data set, counted on the meta device (no memory, no init);
    cached, so a picker asking again costs nothing."""
    import torch

    with torch.device("meta"):
        model = build_model(name, num_classes, in_channels)
    return sum(p.numel() for p in model.parameters())


@functools.lru_cache(maxsize=256)
def activation_count(name: str, num_classes: int, in_channels: int, image_size: int) -> int:
    """Values output by the model's layers (leaf modules) for one image of ``image_size``
    pixels, counted on the meta device: the activations training keeps for the backward pass."""
    import torch

    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        outs = output if isinstance(output, (tuple, list)) else [output]
        total += sum(o[0].numel() for o in outs if isinstance(o, torch.Tensor) and o.dim() > 0)

    with torch.device("meta"):
        model = build_model(name, num_classes, in_channels).eval()  # same output sizes; batch norm takes one image
        hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    for h in hooks:
        h.remove()
    return total


def training_memory(name: str, num_classes: int, in_channels: int, image_size: int, batch_size: int) -> int:
    """Estimated bytes to train the model: ``TRAIN_BYTES_PER_PARAMETER`` x parameters (weights,
    gradients, momentum, best copy) + ``BYTES_PER_ACTIVATION`` x batch x the per-image layer
    outputs (:func:`activation_count`). An estimate: frameworks free and share some buffers,
    and cuDNN adds workspace."""
    params = parameter_count(name, num_classes, in_channels)
    activations = activation_count(name, num_classes, in_channels, image_size)
    return TRAIN_BYTES_PER_PARAMETER * params + BYTES_PER_ACTIVATION * int(batch_size) * activations


def check_compatible(path: str | os.PathLike, arch_name: str, num_classes: int, in_channels: int = 3) -> None:
    """Refuse (with :class:`CheckpointError`) a checkpoint that does not fit the model.

    Builds the model on the ``meta`` device (no memory, no init) and runs every check of
    :func:`load_weights`, so the GUI can call it cheaply before a run starts.
    """
    import torch

    from engine.errors import CheckpointError
    from engine.models.checkpoint import load_weights
    from engine.models.sources import is_external, name_problem

    problem = name_problem(arch_name) if is_external(arch_name) else \
        (None if arch_name in MODELS else MODELS.unknown_message(arch_name))
    if problem:
        raise CheckpointError(f"cannot check checkpoint {path}: {problem}")
    with torch.device("meta"):
        model = build_model(arch_name, num_classes=num_classes, in_channels=in_channels)
    load_weights(model, path, arch_name)
