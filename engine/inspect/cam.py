"""Class-activation maps (Grad-CAM, computed by the ``torchcam`` library) of the teacher,
of each teacher granularity head and of the student, for chosen test images.

The zoo models return ``(logits, features)``; the CAM library wants a module that
returns scores and a layer to hook. :class:`CamNet` wraps a backbone (and, for the
teacher, its granularity heads: teacher features -> pooled -> decoder logits) into one
module whose output is ``[model logits | head 1 logits | ...]``, and taps the backbone's
last spatial feature map (the last stage output, ``features[1:-1]``, whose map is larger
than 1x1 on these images) with an identity module the library hooks. One forward pass
then gives the maps of the teacher and of every head, each against its own logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import InputError
from engine.inspect.progress import CancelledFn, ProgressFn, check, report

TARGETS = ("predicted", "true")


@dataclass
class CamResult:
    """Maps of ``columns`` (teacher, each head, student) for the images ``indices``.

    ``maps[target]`` is a float32 array ``images x columns x H x W`` with values in [0, 1]
    (``target`` is ``"predicted"``: each model's own predicted class, or ``"true"``: the
    label). ``predictions`` and ``confidence`` (softmax of the predicted class) are
    ``images x columns``; ``layers`` names the tapped feature map of each column.
    """

    indices: list[int]
    labels: list[int]
    columns: list[str]
    maps: dict[str, np.ndarray]
    predictions: np.ndarray
    confidence: np.ndarray
    layers: dict[str, str] = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        m = self.maps["predicted"]
        return int(m.shape[2]), int(m.shape[3])


class _Tap(nn.Module):
    """An identity the CAM library hooks (a copy, so in-place operations after it leave the hooked map alone)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


@dataclass
class _Site:
    """Where a feature map is made (a module's output) or first used (a module's input)."""

    module: str
    call: int  # which call of that module in one forward pass
    kind: str  # "output" or "input"
    position: int | None  # index in a tuple output / in the positional inputs


def feature_index(model: nn.Module, x: torch.Tensor, stages_back: int = 0) -> int:
    """Index in ``features`` of the last stage output whose map is larger than 1x1 for ``x``
    (the last stage output when all are 1x1), or of the stage ``stages_back`` before it
    (never before the first stage: finer maps for tiny images)."""
    with torch.no_grad():
        _, feats = model(x[:1])
    stages = [i for i in range(1, len(feats) - 1) if feats[i].dim() == 4]
    if not stages:
        raise InputError(f"{type(model).__name__}: no spatial feature map to compute class-activation maps on")
    larger = [i for i in stages if feats[i].shape[2] * feats[i].shape[3] > 1]
    last = (larger or stages)[-1]
    return max(stages[0], last - max(0, int(stages_back)))


def _locate(model: nn.Module, x: torch.Tensor, index: int) -> _Site:
    """Find the module call that produces (or, failing that, first consumes) ``features[index]``."""
    calls: dict[str, int] = {}
    outputs: list[tuple[str, int, Any]] = []
    inputs: list[tuple[str, int, tuple]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def pre(mod, args, name=name):
            calls[name] = calls.get(name, 0) + 1
            inputs.append((name, calls[name], args))

        def post(mod, args, out, name=name):
            outputs.append((name, calls[name], out))

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        with torch.no_grad():
            _, feats = model(x[:1])
    finally:
        for h in handles:
            h.remove()
    target = feats[index]
    site = None
    for name, call, out in outputs:  # hooks fire innermost first: keep the outermost producer
        if out is target:
            site = _Site(name, call, "output", None)
        elif isinstance(out, (tuple, list)):
            for j, item in enumerate(out):
                if item is target:
                    site = _Site(name, call, "output", j)
    if site is not None:
        return site
    for name, call, args in inputs:
        for j, item in enumerate(args):
            if item is target:
                return _Site(name, call, "input", j)
    raise InputError(f"{type(model).__name__}: cannot find the module that makes its feature map {index}")


class CamNet(nn.Module):
    """A backbone (plus optional granularity heads on its pooled features) as one module
    returning ``[logits | head 1 logits | ...]``, with its CAM feature map tapped by ``tap``.

    Use as a context manager, or call :meth:`close`, to remove the hook it puts on the backbone.
    """

    def __init__(self, backbone: nn.Module, probe: torch.Tensor, heads: nn.Module | None = None,
                 index: int | None = None, stages_back: int = 0):
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        self.tap = _Tap()
        self.index = feature_index(backbone, probe, stages_back) if index is None else index
        with torch.no_grad():
            self.map_size = tuple(backbone(probe[:1])[1][self.index].shape[2:])
        self.site = _locate(backbone, probe, self.index)
        self._calls = 0
        module = backbone.get_submodule(self.site.module)
        if self.site.kind == "output":
            self._handle = module.register_forward_hook(self._on_output)
        else:
            self._handle = module.register_forward_pre_hook(self._on_input)

    @property
    def layer_text(self) -> str:
        h, w = self.map_size
        return f"features[{self.index}] ({self.site.module}, {h}x{w})"

    def _hit(self) -> bool:
        self._calls += 1
        return self._calls == self.site.call

    def _on_output(self, module, args, out):
        if not self._hit():
            return None
        if self.site.position is None:
            return self.tap(out)
        items = list(out)
        items[self.site.position] = self.tap(items[self.site.position])
        return type(out)(items)

    def _on_input(self, module, args):
        if not self._hit():
            return None
        items = list(args)
        items[self.site.position] = self.tap(items[self.site.position])
        return tuple(items)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._calls = 0
        logits, feats = self.backbone(x)
        parts = [logits]
        if self.heads is not None:
            _, decoded = self.heads(feats[-1])
            parts.extend(decoded)
        return torch.cat(parts, dim=1)

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self) -> "CamNet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _normalise(cam: torch.Tensor) -> torch.Tensor:
    """Min-max per map (the library's own normalisation adds an absolute 1e-8, which flattens
    the tiny but well-formed maps of a barely trained network); a constant map becomes 0."""
    cam = torch.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
    flat = cam.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1)
    span = (flat.max(dim=1).values - flat.min(dim=1).values).view(-1, 1, 1)
    return torch.where(span > 0, (cam - low) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(cam))


def _grad_cam(net: CamNet, x: torch.Tensor, num_classes: int, labels: torch.Tensor, size: tuple[int, int],
              on_step) -> tuple[dict[str, list[torch.Tensor]], torch.Tensor]:
    """Maps ``{target: [one N x H x W map per output block]}`` and the scores ``N x blocks x C``."""
    from torchcam.methods import GradCAM

    extractor = GradCAM(net, target_layer=net.tap, input_shape=tuple(x.shape[1:]))
    try:
        x = x.detach().clone().requires_grad_(True)  # the frozen models need a graph to the tapped map
        scores = net(x)
        blocks = scores.shape[1] // num_classes
        probs = scores.detach().view(len(x), blocks, num_classes)
        maps: dict[str, list[torch.Tensor]] = {t: [] for t in TARGETS}
        for b in range(blocks):
            predicted = probs[:, b].argmax(dim=1)
            for target in TARGETS:
                classes = predicted if target == "predicted" else labels
                idx = [b * num_classes + int(c) for c in classes]
                cam = extractor(idx, scores, normalized=False, retain_graph=True)[0].detach().double()
                cam = F.interpolate(_normalise(cam)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
                maps[target].append(cam.float().clamp_(0.0, 1.0))
                on_step()
        return maps, probs
    finally:
        extractor.remove_hooks()


def class_activation_maps(models, test, indices: Sequence[int], *, stages_back: int = 0, batch_size: int = 32,
                          progress: ProgressFn | None = None, cancelled: CancelledFn | None = None) -> CamResult:
    """Grad-CAM maps of the teacher, each teacher head and the student for the test images ``indices``.

    The maps are taken on each backbone's last stage output whose map is larger than 1x1
    (``stages_back`` > 0: that many stages earlier, finer maps for tiny images).

    ``models`` is a :class:`~engine.inspect.load.RunModels`, ``test`` its
    :class:`~engine.inspect.load.TestSet`. Runs on the CPU; maps are upsampled to the
    image's size and min-max normalised per map.
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise InputError("choose at least one test image")
    n_total = len(test)
    bad = [i for i in indices if not 0 <= i < n_total]
    if bad:
        raise InputError(f"test image {bad[0]} does not exist (the test set has {n_total} images)")
    C = models.num_classes
    size = test.image_size
    columns: list[str] = []
    nets: list[tuple[CamNet, int]] = []  # (net, output blocks)
    probe = test.normalised(indices[:1])
    if models.teacher is not None:
        columns.append("teacher")
        if models.teacher_heads is not None:
            columns.extend(models.head_labels)
    columns.append("student")
    layers: dict[str, str] = {}
    if models.teacher is not None:
        tnet = CamNet(models.teacher, probe, models.teacher_heads, stages_back=stages_back)
        blocks = 1 + (len(models.teacher_heads) if models.teacher_heads is not None else 0)
        nets.append((tnet, blocks))
        for name in columns[:blocks]:
            layers[name] = f"the teacher's {tnet.layer_text}"
    snet = CamNet(models.student, probe, stages_back=stages_back)
    nets.append((snet, 1))
    layers["student"] = f"the student's {snet.layer_text}"

    batches = [indices[s:s + batch_size] for s in range(0, len(indices), batch_size)]
    total = len(batches) * len(columns) * len(TARGETS)
    done = 0
    report(progress, 0, total)

    def step() -> None:
        nonlocal done
        done += 1
        report(progress, done, total)
        check(cancelled)

    out = {t: np.zeros((len(indices), len(columns), *size), dtype=np.float32) for t in TARGETS}
    preds = np.zeros((len(indices), len(columns)), dtype=np.int64)
    conf = np.zeros((len(indices), len(columns)), dtype=np.float32)
    labels_all = test.labels
    try:
        with torch.enable_grad():
            row = 0
            for batch in batches:
                check(cancelled)
                x = test.normalised(batch)
                y = torch.as_tensor([int(labels_all[i]) for i in batch])
                col = 0
                for net, blocks in nets:
                    maps, probs = _grad_cam(net, x, C, y, size, step)
                    soft = probs.softmax(dim=2)
                    for b in range(blocks):
                        for target in TARGETS:
                            out[target][row:row + len(batch), col + b] = maps[target][b].numpy()
                        best = soft[:, b].max(dim=1)
                        preds[row:row + len(batch), col + b] = best.indices.numpy()
                        conf[row:row + len(batch), col + b] = best.values.numpy()
                    col += blocks
                row += len(batch)
    finally:
        for net, _ in nets:
            net.close()
    return CamResult(indices=indices, labels=[int(labels_all[i]) for i in indices], columns=columns, maps=out,
                     predictions=preds, confidence=conf, layers=layers)


def first_per_class(labels, per_class: int) -> list[int]:
    """The first ``per_class`` test images of each class, in class order."""
    if per_class < 1:
        raise InputError(f"--images must be at least 1, got {per_class}")
    seen: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist() if hasattr(labels, "tolist") else labels):
        bucket = seen.setdefault(int(label), [])
        if len(bucket) < per_class:
            bucket.append(i)
    return [i for c in sorted(seen) for i in seen[c]]
