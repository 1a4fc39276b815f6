"""Loading teacher (or student) weights from a checkpoint, safely and with clear errors.

Accepted files: anything ``torch.load(..., weights_only=True)`` reads (so no pickled
code runs; :data:`SAFE_CLASSES` are the only classes beyond torch's own it may rebuild, so
RepDistiller's ``<arch>_last.pth``, which holds its ``argparse.Namespace`` options, loads),
or a ``.safetensors`` file, holding a state dict, either plain or under one of the keys ``model``,
``state_dict``, ``net`` or ``model_state_dict`` (RepDistiller and the MGD authors save
``{"model": state_dict, "epoch": ..., "accuracy": ...}``). Wrapper prefixes such as
``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) are stripped, and the
``student.`` / ``teacher.`` part of a whole distiller's state dict is picked out when it
fits. The archive and the tensors are verified first (:mod:`engine.verify`: CRC-32, declared
sizes, dense finite bounded weights). Then the weights load strictly. Every failure is a one-line
:class:`engine.errors.CheckpointError`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.errors import CheckpointError
from engine.verify import check_archive, check_tensors, tensor_bytes

# Keys under which training scripts commonly nest the state dict, in order of preference.
# ("modules" holds the weights of an MGD Studio stage checkpoint, e.g. {"modules": {"model": ...}})
STATE_DICT_KEYS = ("model", "state_dict", "net", "model_state_dict", "modules")
# Prefixes that wrap every key of a whole model: DataParallel/DDP, torch.compile, ad-hoc holders.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")
# Sub-networks worth picking out of a distiller-wide state dict (student first).
PART_PREFIXES = ("student.", "model_s.", "teacher.", "model_t.")
_EXAMPLES = 2  # how many key names a message quotes per kind of problem


def load_weights(model: nn.Module, path_or_state: str | os.PathLike | Mapping, arch_name: str) -> None:
    """Load a checkpoint file (or an already loaded dict) into ``model`` strictly.

    Raises :class:`CheckpointError` when the file is missing, unreadable, holds no state
    dict, or does not fit ``model`` (the message counts and names the missing and
    unexpected keys and the shape mismatches, and guesses the architecture it fits).
    A model built on the ``meta`` device is only checked, not loaded (see
    :func:`engine.models.build.check_compatible`).
    """
    expected = model.state_dict()
    if isinstance(path_or_state, Mapping):
        source, raw = "(given state dict)", path_or_state
    else:
        source, raw = str(path_or_state), _read(Path(path_or_state), tensor_bytes(expected))
    state = _find_state_dict(raw, source)
    check_tensors(state, f"checkpoint {source}")  # dense, finite, within WEIGHT_LIMIT
    state = _unwrap(state, expected)
    problems = _describe_mismatch(state, expected)
    if problems:
        guess = _guess_architecture(state)
        hint = f"; it looks made for {guess}" if guess else ""
        raise CheckpointError(f"checkpoint {source} does not fit {arch_name}: {problems}{hint}")
    if any(t.is_meta for t in expected.values()):
        return  # a weightless model: the check above is all there is to do
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # pragma: no cover - the checks above should catch it all
        raise CheckpointError(f"checkpoint {source} does not fit {arch_name}: {_first_line(exc)}") from None


def load_initial_weights(model: nn.Module, path: str | os.PathLike, arch_name: str,
                         what: str = "weights file") -> list[str]:
    """Start ``model`` from the weights in ``path`` (a torch file or ``.safetensors``), e.g. a
    library's pretrained weights or a model trained on another data set; returns notes for the log.

    The file is read like :func:`load_weights` (safely, state dict found under the usual keys,
    wrapper prefixes stripped). A library model (``model.weights_prefix``) also takes the
    library's own key names. Two differences are adapted rather than refused, each with a note:
    a classifier for another number of classes (or none) is left out, the model keeping its
    new one; and RGB weights of a first convolution given to a one-channel model are summed
    over the colours. Every other mismatch is a :class:`CheckpointError` naming the keys.
    """
    source = str(path)
    expected = model.state_dict()
    state = _find_state_dict(_read(Path(path), tensor_bytes(expected)), source)
    check_tensors(state, f"{what} {source}")
    state = _unwrap(state, expected)
    prefix = getattr(model, "weights_prefix", "")
    if prefix and not any(k.startswith(prefix) for k in state):
        state = {prefix + k: v for k, v in state.items()}
    notes: list[str] = []
    name = Path(source).name
    head = getattr(model, "classifier_name", None)
    head_keys = [k for k in expected if head and k.startswith(head + ".")]
    if head_keys:
        given = [k for k in head_keys if k in state]
        if not given or any(state[k].shape != expected[k].shape for k in given):
            classes = next((int(state[k].shape[0]) for k in given if k.endswith("weight")), None)
            had = f"its classifier is for {classes} classes" if classes else "it holds no classifier"
            notes.append(f"{arch_name}: {what} {name}: {had}; a new classifier for "
                         f"{getattr(model, 'num_classes', '?')} classes is trained")
            state = {k: v for k, v in state.items() if k not in head_keys}
            expected = {k: v for k, v in expected.items() if k not in head_keys}
    for k, v in list(state.items()):
        want = expected.get(k)
        if want is not None and v.dim() == 4 and want.dim() == 4 and v.shape[1] == 3 and want.shape[1] == 1 \
                and v.shape[0] == want.shape[0] and v.shape[2:] == want.shape[2:]:
            state[k] = v.sum(dim=1, keepdim=True)
            notes.append(f"{arch_name}: {what} {name}: the RGB weights of {k} are summed for one input channel")
    problems = _describe_mismatch(state, expected)
    if problems:
        raise CheckpointError(f"{what} {source} does not fit {arch_name}: {problems}")
    if any(t.is_meta for t in expected.values()):
        return notes
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in head_keys and not _is_optional(k)]
    if missing or result.unexpected_keys:  # pragma: no cover - the checks above catch these
        raise CheckpointError(f"{what} {source} does not fit {arch_name}: {missing or result.unexpected_keys}")
    return notes


# -- reading ------------------------------------------------------------------------
#: classes a teacher file may hold beside its weights, rebuilt by the safe unpickler as plain
#: attribute holders (never called with arbitrary arguments, no code run): RepDistiller's
#: train_teacher.py saves ``{"opt": argparse.Namespace(...), "model": ..., "optimizer": ...}``
SAFE_CLASSES = (argparse.Namespace,)


def _allow_safe_classes():
    """A context in which ``torch.load(weights_only=True)`` also rebuilds :data:`SAFE_CLASSES`
    (torch >= 2.5; older torch refuses those files as before)."""
    allow = getattr(torch.serialization, "safe_globals", None)
    return allow(list(SAFE_CLASSES)) if allow is not None else contextlib.nullcontext()


#: how a file torch wrote begins: a zip archive (torch >= 1.6) or a pickle (older torch.save)
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _read(path: Path, needed_bytes: int | None = None) -> Any:
    """The object in a checkpoint file; ``needed_bytes`` (the weights it is read for) bounds
    what its archive may declare (:func:`engine.verify.check_archive`)."""
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({exc})") from None
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head.startswith(TORCH_MAGIC):
        what = "it is empty" if not head else f"it begins with {head!r}"
        raise CheckpointError(f"checkpoint {path} is not a torch checkpoint (torch.save writes a zip archive or a "
                              f"pickle; {what})")
    check_archive(path, needed_bytes)
    try:
        with _allow_safe_classes():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # A pickle that is not plain tensors/containers (a whole nn.Module, a custom class,
        # a reduce calling a function, ...): safe loading refuses to run its code.
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise CheckpointError(
                f"checkpoint {path} holds Python objects that safe loading refuses "
                "(save model.state_dict() instead of the model or other objects)"
            ) from None
        raise CheckpointError(f"checkpoint {path} is not a readable torch checkpoint") from None
    except Exception:  # torch raises many kinds for a non-checkpoint file
        raise CheckpointError(f"checkpoint {path} is not a readable torch checkpoint") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _find_state_dict(raw: Any, source: str) -> dict[str, torch.Tensor]:
    if _is_state_dict(raw):
        return dict(raw)
    if isinstance(raw, Mapping):
        for key in STATE_DICT_KEYS:
            inner = raw.get(key)
            if _is_state_dict(inner):
                return dict(inner)
            # one more level, e.g. {"model": {"state_dict": ...}}
            if isinstance(inner, Mapping):
                for inner_key in STATE_DICT_KEYS:
                    if _is_state_dict(inner.get(inner_key)):
                        return dict(inner[inner_key])
    wanted = ", ".join(repr(k) for k in STATE_DICT_KEYS)
    raise CheckpointError(f"checkpoint {source} holds no state dict (plain, or under {wanted})")


# -- matching -----------------------------------------------------------------------
def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _unwrap(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes shared by all keys; pick a fitting sub-network if needed."""
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state) and prefix.rstrip(".") not in _top_names(expected):
                state = _strip_prefix(state, prefix)
                changed = True
    if set(state) == set(expected):
        return state
    for prefix in PART_PREFIXES:
        part = _strip_prefix(state, prefix)
        if part and not _describe_mismatch(part, expected):
            return part
    return state


def _top_names(state: Mapping[str, Any]) -> set[str]:
    return {k.split(".", 1)[0] for k in state}


def _is_optional(key: str) -> bool:
    # BatchNorm fills in a missing counter itself (checkpoints from torch < 0.4.1).
    return key.endswith("num_batches_tracked")


def _describe_mismatch(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str:
    """'' when ``state`` fits ``expected``; otherwise a short count-and-examples summary."""
    missing = [k for k in expected if k not in state and not _is_optional(k)]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    parts = []
    for items, what in ((missing, "missing keys"), (unexpected, "unexpected keys"), (shapes, "shape mismatches")):
        if items:
            more = ", ..." if len(items) > _EXAMPLES else ""
            parts.append(f"{len(items)} {what} (e.g. {', '.join(items[:_EXAMPLES])}{more})")
    return ", ".join(parts)


def _guess_architecture(state: Mapping[str, torch.Tensor]) -> str:
    """'<arch> with <N> classes' for the registered models the state dict fits exactly.

    Also tries the ``student.``/``teacher.`` parts of a distiller-wide state dict.
    """
    try:
        guess = _fitting_models(state)
        if guess:
            return guess
        for prefix in PART_PREFIXES:
            part = _strip_prefix(state, prefix)
            guess = _fitting_models(part) if part else ""
            if guess:
                return f"{guess} (its {prefix!r} part)"
    except Exception:  # a guess must never hide the real message
        pass
    return ""


def _fitting_models(state: Mapping[str, torch.Tensor]) -> str:
    # The class count is the row count of the last 2-D weight (every zoo model registers
    # its classifier last); the input channels come from the first 4-D weight.
    from engine.models.zoo import model_names

    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    kernels = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 4]
    if not matrices or not kernels:
        return ""
    num_classes, in_channels = int(matrices[-1].shape[0]), int(kernels[0].shape[1])
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    fits = [
        name
        for name in model_names()
        if _fits(shapes, _model_shapes(name, num_classes, in_channels))
    ]
    if not fits:
        return ""
    channels = "" if in_channels == 3 else f", {in_channels} input channel{'s' if in_channels > 1 else ''}"
    return f"{' or '.join(fits)} with {num_classes} classes{channels}"


def _fits(shapes: Mapping[str, tuple], expected: Mapping[str, tuple]) -> bool:
    return all(shapes.get(k) == s for k, s in expected.items() if not _is_optional(k)) and all(
        k in expected for k in shapes
    )


@functools.lru_cache(maxsize=256)
def _model_shapes(name: str, num_classes: int, in_channels: int) -> dict[str, tuple]:
    """Key -> shape of a registered model, built on the meta device (no memory, no init)."""
    from engine.models.zoo import build_zoo_model

    with torch.device("meta"):
        model = build_zoo_model(name, num_classes, in_channels)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
