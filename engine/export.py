"""Export a trained student for use outside MGD Studio (no Qt).

:func:`export_model` writes, into one folder,

* ``student.safetensors``      the state dict (parameters and buffers) -- reload with
  ``build_model(arch, num_classes, in_channels)`` and :func:`load_exported_weights`;
* ``student.torchscript.pt``   a ``torch.jit.trace`` of :class:`LogitsOnly` (``x -> logits``);
* ``student.onnx``             ONNX, input ``"input"`` (N, C, H, W) float32, output
  ``"logits"`` (N, num_classes), dynamic batch dimension;
* ``model_card.yaml``          what the files are and how to feed them.

Every artifact is built and checked in memory first, then each file is written to a
temporary name in the output folder and moved into place with :func:`os.replace`, so a
failed export never leaves a half-written file under a final name.

The caller's model is never touched: the export works on an eval-mode CPU copy.

ONNX: the default exporter of torch >= 2.9 (``dynamo=True``, ``torch.export`` +
onnxscript) is tried first, with the batch dimension declared dynamic. Its result is
checked with ``onnx.checker`` and, when onnxruntime is importable, run at batch sizes
1 and 3 against the PyTorch logits. If that exporter fails or its graph does not
reproduce the logits, the legacy TorchScript-based exporter (``dynamo=False``) is used
instead and checked the same way. The card records which exporter produced the file.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import io
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.errors import CheckpointError, InputError, MGDError

FORMATS = ("weights", "torchscript", "onnx")

#: file name suffix of each format, after ``basename``
FILE_SUFFIXES = {
    "weights": ".safetensors",
    "torchscript": ".torchscript.pt",
    "onnx": ".onnx",
}
CARD_NAME = "model_card.yaml"
CARD_VERSION = 1

ONNX_OPSET = 18
ONNX_INPUT = "input"
ONNX_OUTPUT = "logits"
ONNX_BATCH_AXIS = "batch"

VALUE_RANGE = "RGB/grayscale in [0, 1] then (x - mean) / std"

# batch sizes used to build and check the exported graphs: the example batch is 2
# (no size-1 specialisation), the checks run other sizes so a baked-in batch shows up
_EXAMPLE_BATCH = 2
_CHECK_BATCHES = (1, 3)

# tolerances of the in-export self-checks: max |difference| <= _ATOL + _RTOL * max |logit|
# (looser than the tests' on purpose: logits can be large, ONNX Runtime sums in another order)
_RTOL = 1e-3
_ATOL = 1e-4

# torch >= 2.10 marks torch.jit as deprecated; the TorchScript artifact is still asked for
_JIT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"


class ExportError(MGDError):
    """The model could not be exported (trace or ONNX conversion failed, a file could not be written)."""


class LogitsOnly(nn.Module):
    """Wrap a zoo model so that ``forward(x)`` returns only the logits.

    Zoo models return ``(logits, features)``; tracing and ONNX want one tensor out.
    A model that already returns a bare tensor is passed through.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out


# ---------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------
def export_model(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    arch: str,
    input_shape: tuple[int, int, int],
    classes: list[str],
    mean,
    std,
    formats: Iterable[str] | str = FORMATS,
    card_extra: Mapping[str, Any] | None = None,
    basename: str = "student",
    progress: Callable[[int, int], None] | None = None,
    failures: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Export ``model`` to ``out_dir`` in ``formats`` and write ``model_card.yaml``.

    ``input_shape`` is (C, H, W); ``mean`` / ``std`` are the per-channel normalisation
    (a number or C numbers) applied to inputs in [0, 1]. ``card_extra`` (accuracies,
    noise curve, experiment config, ...) is merged into the card; the card's own
    fields (architecture, files, ...) take precedence on a clash.

    ``progress(done, total)`` is called as each format is built and once the files are written.

    Returns ``{format: path}`` for every format written plus ``"card"``.
    Raises :class:`InputError` for bad arguments (unknown format, ...) and
    :class:`ExportError` when tracing / converting / writing fails.

    With a ``failures`` dict, a format whose conversion fails (a library model TorchScript
    cannot trace, say) is left out instead: its reason goes into ``failures[format]`` and
    into the card (``failed_formats``), and the other formats are written. Only when every
    format fails is :class:`ExportError` raised.
    """
    fmts = _check_formats(formats)
    shape = _check_input_shape(input_shape)
    mean_l = _check_stats("mean", mean, shape[0])
    std_l = _check_stats("std", std, shape[0])
    if any(s <= 0 for s in std_l):
        raise InputError(f"std: every value must be > 0, got {std_l}")
    classes_l = [str(c) for c in classes]
    model = _unwrap(model)
    num_classes = _num_classes(model, classes_l)
    basename = _check_basename(basename)
    out = Path(out_dir)

    cpu_model = _eval_cpu_copy(model)
    wrapper = LogitsOnly(cpu_model).eval()

    gen = torch.Generator().manual_seed(0)
    example = torch.rand((_EXAMPLE_BATCH, *shape), generator=gen)
    example = (example - torch.tensor(mean_l).view(-1, 1, 1)) / torch.tensor(std_l).view(-1, 1, 1)
    checks = [torch.randn((b, *shape), generator=gen) for b in _CHECK_BATCHES]
    _check_forward(wrapper, example, num_classes, arch, shape)

    # build every artifact (and the card) in memory first: a failure leaves no new files behind
    blobs: dict[str, bytes] = {}
    info: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for done, fmt in enumerate(fmts):
        if progress is not None:
            progress(done, len(fmts) + 1)
        try:
            if fmt == "weights":
                blobs[fmt] = _weights_bytes(cpu_model, arch, num_classes, shape)
            elif fmt == "torchscript":
                blobs[fmt] = _torchscript_bytes(wrapper, example, checks, arch)
            elif fmt == "onnx":
                blobs[fmt], info[fmt] = _onnx_bytes(wrapper, example, checks, arch)
        except ExportError as exc:
            if failures is None or len(failed) + 1 == len(fmts):
                raise
            failed[fmt] = str(exc)
    if failures is not None:
        failures.update(failed)
    total = len(fmts) + 1
    fmts = tuple(f for f in fmts if f not in failed)

    paths = {fmt: out / f"{basename}{FILE_SUFFIXES[fmt]}" for fmt in fmts}
    files: dict[str, dict[str, Any]] = {}
    for fmt in fmts:
        data = blobs[fmt]
        entry = {"format": fmt, "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        entry.update(info.get(fmt, {}))
        files[paths[fmt].name] = entry
    card = _build_card(
        cpu_model,
        arch=arch,
        num_classes=num_classes,
        classes=classes_l,
        shape=shape,
        mean=mean_l,
        std=std_l,
        files=files,
        extra={**(card_extra or {}), **({"failed_formats": failed} if failed else {})},
    )
    card_bytes = _dump_yaml(card).encode("utf-8")

    # only now touch the disk, each file atomically; the card goes last
    _make_dir(out)
    written: dict[str, Path] = {}
    for fmt in fmts:
        _atomic_write(paths[fmt], blobs[fmt])
        written[fmt] = paths[fmt]
    card_path = out / CARD_NAME
    _atomic_write(card_path, card_bytes)
    written["card"] = card_path
    if progress is not None:
        progress(total, total)
    return written


def load_exported_weights(path: str | os.PathLike, model: nn.Module, *, strict: bool = True) -> nn.Module:
    """Load a ``.safetensors`` file written by :func:`export_model` into ``model`` (in place).

    The tensors are copied into the model's own parameters and buffers, so the model
    keeps its device. Returns ``model``. Raises :class:`CheckpointError` when the file
    is missing, unreadable or does not fit the model.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights file not found: {p}")
    try:
        state = load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read weights file {p}: {e}") from e
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"weights file {p} does not fit this model: {_first_lines(str(e))}") from e
    return model


# ---------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------
def _check_formats(formats: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = (formats,)
    out: list[str] = []
    for f in formats:
        if f not in FORMATS:
            raise InputError(f"unknown export format {f!r}; allowed formats: {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    if not out:
        raise InputError(f"no export format given; allowed formats: {', '.join(FORMATS)}")
    return tuple(out)


def _check_input_shape(input_shape) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise InputError(f"input_shape must be (C, H, W), got {input_shape!r}") from None
    if len(shape) != 3 or any(v <= 0 for v in shape):
        raise InputError(f"input_shape must be three positive integers (C, H, W), got {input_shape!r}")
    return shape  # type: ignore[return-value]


def _check_stats(name: str, value, channels: int) -> list[float]:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().flatten().tolist()
    if isinstance(value, (int, float)):
        values = [float(value)]
    else:
        try:
            values = [float(v) for v in value]
        except (TypeError, ValueError):
            raise InputError(f"{name} must be a number or {channels} numbers, got {value!r}") from None
    if len(values) == 1 and channels > 1:
        values = values * channels
    if len(values) != channels:
        raise InputError(f"{name} must have {channels} values (one per input channel), got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{name} must be finite numbers, got {values}")
    return values


def _num_classes(model: nn.Module, classes: list[str]) -> int:
    n = getattr(model, "num_classes", None)
    if n is None:
        if not classes:
            raise InputError("classes is empty and the model has no num_classes attribute")
        return len(classes)
    n = int(n)
    if classes and len(classes) != n:
        raise InputError(f"classes lists {len(classes)} names but the model has {n} outputs")
    return n


def _check_basename(basename: str) -> str:
    basename = str(basename)
    if not basename or basename in (".", "..") or re.search(r"[\\/]", basename):
        raise InputError(f"basename must be a plain file name stem, got {basename!r}")
    return basename


# ---------------------------------------------------------------------------------
# model preparation and artifacts
# ---------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a ``torch.compile`` / DataParallel wrapper (so the keys match ``build_model``)."""
    for _ in range(4):
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            break
    return model


def _eval_cpu_copy(model: nn.Module) -> nn.Module:
    """A detached eval-mode float copy on the CPU; ``model`` itself is left as it is."""
    try:
        m = copy.deepcopy(model)
    except Exception as e:  # a module holding something that cannot be copied
        raise ExportError(f"cannot copy the model for export: {e}") from e
    m = m.cpu().eval()
    m.requires_grad_(False)
    return m


def _check_forward(wrapper: nn.Module, example: torch.Tensor, num_classes: int, arch: str, shape) -> None:
    """Run the model once on a small batch: it must give (N, num_classes) logits."""
    try:
        with torch.no_grad():
            out = wrapper(example)
    except Exception as e:
        raise ExportError(
            f"the {arch} model fails on an input of shape {tuple(example.shape)} "
            f"(C, H, W = {tuple(shape)}): {_first_lines(str(e))}"
        ) from e
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (example.shape[0], num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ExportError(
            f"the {arch} model should return logits of shape ({example.shape[0]}, {num_classes}), got {got}"
        )


def _weights_bytes(model: nn.Module, arch: str, num_classes: int, shape) -> bytes:
    from safetensors.torch import save

    # clone: contiguous, owning, CPU tensors (safetensors refuses shared storage, e.g. tied weights)
    state = {
        k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }
    metadata = {
        "format": "pt",
        "architecture": str(arch),
        "num_classes": str(num_classes),
        "input_shape": ",".join(str(v) for v in shape),
    }
    try:
        return save(state, metadata=metadata)
    except Exception as e:
        raise ExportError(f"cannot serialise the {arch} weights to safetensors: {e}") from e


def _torchscript_bytes(wrapper: nn.Module, example: torch.Tensor, checks: list[torch.Tensor], arch: str) -> bytes:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATION, category=FutureWarning)
        try:
            with torch.no_grad():
                traced = torch.jit.trace(wrapper, (example,), check_trace=True)
        except Exception as e:
            raise ExportError(
                f"TorchScript trace of the {arch} model failed: {_first_lines(str(e))}. "
                "Export the 'weights' or 'onnx' format instead."
            ) from e
        # the traced graph must hold for other batch sizes too (no baked-in batch)
        for x in checks:
            with torch.no_grad():
                ref = wrapper(x)
                try:
                    got = traced(x)
                except Exception as e:
                    raise ExportError(
                        f"the TorchScript trace of {arch} fails at batch size {x.shape[0]}: {_first_lines(str(e))}"
                    ) from e
            if not _close(got, ref):
                raise ExportError(
                    f"the TorchScript trace of {arch} does not reproduce the model at batch size "
                    f"{x.shape[0]} (max difference {_max_diff(got, ref):.3g})"
                )
        buf = io.BytesIO()
        try:
            torch.jit.save(traced, buf)
        except Exception as e:
            raise ExportError(f"cannot serialise the TorchScript trace of {arch}: {e}") from e
    return buf.getvalue()


def _onnx_bytes(
    wrapper: nn.Module, example: torch.Tensor, checks: list[torch.Tensor], arch: str
) -> tuple[bytes, dict[str, Any]]:
    """ONNX model bytes and what the card says about them; dynamo exporter, legacy as a fallback."""
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise ExportError(f"the 'onnx' format needs the onnx package: {e}") from e

    failures: list[str] = []
    for name, exporter in (("dynamo", _onnx_dynamo), ("torchscript", _onnx_legacy)):
        try:
            data = exporter(wrapper, example)
            runtime = _verify_onnx(data, wrapper, checks)
        except Exception as e:
            failures.append(f"{name} exporter: {_first_lines(str(e))}")
            continue
        return data, {
            "opset": ONNX_OPSET,
            "exporter": name,
            "input_name": ONNX_INPUT,
            "output_name": ONNX_OUTPUT,
            "dynamic_axes": {ONNX_INPUT: {0: ONNX_BATCH_AXIS}, ONNX_OUTPUT: {0: ONNX_BATCH_AXIS}},
            "verified_with": runtime,
        }
    raise ExportError(f"ONNX export of the {arch} model failed: " + "; ".join(failures))


def _onnx_dynamo(wrapper: nn.Module, example: torch.Tensor) -> bytes:
    """torch.export-based exporter (torch's default since 2.9): batch axis declared dynamic."""
    batch = torch.export.Dim(ONNX_BATCH_AXIS, min=1)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            None,  # keep it in memory: written atomically later
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes=({0: batch},),
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto.SerializeToString()


def _onnx_legacy(wrapper: nn.Module, example: torch.Tensor) -> bytes:
    """Legacy TorchScript-based exporter (deprecated in torch, kept as the fallback)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATION, category=FutureWarning)
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                (example,),
                buf,
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamic_axes={ONNX_INPUT: {0: ONNX_BATCH_AXIS}, ONNX_OUTPUT: {0: ONNX_BATCH_AXIS}},
                opset_version=ONNX_OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
    return buf.getvalue()


def _verify_onnx(data: bytes, wrapper: nn.Module, checks: list[torch.Tensor]) -> str:
    """onnx.checker on the bytes, then (with onnxruntime) the logits at several batch sizes."""
    import onnx

    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    names_in = [i.name for i in proto.graph.input]
    names_out = [o.name for o in proto.graph.output]
    if names_in != [ONNX_INPUT] or names_out != [ONNX_OUTPUT]:
        raise RuntimeError(f"graph has inputs {names_in} and outputs {names_out}")
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if batch_dim.HasField("dim_value"):
        raise RuntimeError(f"batch dimension is fixed to {batch_dim.dim_value}")
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnx.checker"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    for x in checks:
        (got,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: x.numpy()})
        with torch.no_grad():
            ref = wrapper(x)
        got_t = torch.from_numpy(got)
        if not _close(got_t, ref):
            raise RuntimeError(
                f"onnxruntime logits differ from PyTorch at batch size {x.shape[0]} "
                f"(max difference {_max_diff(got_t, ref):.3g})"
            )
    return f"onnx.checker, onnxruntime {ort.__version__} (batch sizes {', '.join(str(b) for b in _CHECK_BATCHES)})"


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float noise, measured against the scale of the whole logit tensor.

    Element-wise ``allclose`` is too strict for logits near zero next to large ones (an
    untrained deep ResNet gives logits ~1e4; the summation order alone moves them by ~1e-3).
    """
    if a.shape != b.shape:
        return False
    a, b = a.double(), b.double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return bool(torch.equal(a.nan_to_num(), b.nan_to_num()))
    scale = float(b.abs().max()) if b.numel() else 0.0
    return float((a - b).abs().max()) <= _ATOL + _RTOL * scale if b.numel() else True


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.float() - b.float()).abs().max())


# ---------------------------------------------------------------------------------
# model card
# ---------------------------------------------------------------------------------
def _build_card(
    model: nn.Module,
    *,
    arch: str,
    num_classes: int,
    classes: list[str],
    shape,
    mean: list[float],
    std: list[float],
    files: dict[str, dict[str, Any]],
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "architecture": str(arch),
        "num_classes": int(num_classes),
        "classes": list(classes),
        "input_shape": list(shape),  # (C, H, W)
        "input": {
            "layout": "NCHW",
            "dtype": "float32",
            "channels": "RGB" if shape[0] == 3 else ("grayscale" if shape[0] == 1 else f"{shape[0]} channels"),
        },
        "normalization": {
            "mean": list(mean),
            "std": list(std),
            "value_range": VALUE_RANGE,
        },
        "output": {
            "name": ONNX_OUTPUT,
            "shape": ["N", int(num_classes)],
            "meaning": "raw logits (apply softmax for probabilities); index i is classes[i]",
        },
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "files": files,
        "torch_version": str(torch.__version__),
        "export_date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        for key, value in _plain(dict(extra)).items():
            card.setdefault(key, value)  # the card's own fields win
    return card


def _plain(value: Any) -> Any:
    """Turn ``value`` into plain YAML-safe data (dicts, lists, str, int, float, bool, None)."""
    # exact builtin types only: yaml.safe_dump refuses subclasses (numpy.float64, TorchVersion)
    if value is None:
        return None
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, Mapping):
        return {(_plain(k) if isinstance(k, (bool, int, float)) else str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_plain(v) for v in items]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.Tensor):
        return _plain(value.detach().cpu().tolist())
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        try:
            return _plain(value.tolist())
        except Exception:
            pass
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return _plain(dataclasses.asdict(value))
    return str(value)


def _dump_yaml(card: dict[str, Any]) -> str:
    import yaml

    header = "# MGD Studio model card: what the exported files are and how to feed them.\n"
    return header + yaml.safe_dump(_plain(card), sort_keys=False, allow_unicode=True, default_flow_style=False)


# ---------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------
def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create the export folder {path}: {e.strerror or e}") from e


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (the run folder's writer), as an ExportError on failure."""
    from engine.runfolder import DiskFullError, atomic_write

    try:
        atomic_write(path, data)
    except DiskFullError:
        raise
    except OSError as e:
        raise ExportError(f"cannot write {path}: {e.strerror or e}") from e


def _first_lines(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    out = " ".join(ln.strip() for ln in lines[:n])
    return out + (" ..." if len(lines) > n else "")
