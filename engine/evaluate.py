"""Test-set evaluation: accuracy, confusion matrices and the noise-robustness curve."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

Forward = Callable[[torch.Tensor], "torch.Tensor | list[torch.Tensor]"]


def sample_noise(shape: Sequence[int], indices: torch.Tensor, seed: int) -> torch.Tensor:
    """Standard normal noise for the test samples ``indices``, of per-sample ``shape``.

    One fixed draw per (seed, sample): every noise level scales the same draw, so curves are
    smooth in the level, and a sample gets the same noise whatever batch it is evaluated in,
    so a model's curve does not depend on the evaluation batch size, the run or the device.
    """
    out = torch.empty((len(indices), *shape))
    for row, index in enumerate(indices.tolist()):
        out[row] = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed * 1_000_003 + int(index)))
    return out


@torch.no_grad()
def confusion_matrices(forward: Forward, loader, num_classes: int, *, noise_std: float = 0.0,
                       noise_seed: int = 0, on_batch: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """One ``[true][predicted]`` count matrix per output of ``forward`` (a tensor or a list of them)."""
    matrices: list[torch.Tensor] | None = None
    seen = 0
    for x, y, idx in loader.epoch(0):
        if noise_std > 0:
            indices = idx.cpu() if idx is not None else torch.arange(seen, seen + x.shape[0])
            noise = sample_noise(x.shape[1:], indices, noise_seed)
            x = x + noise_std * noise.to(x.device, x.dtype)
        seen += x.shape[0]
        outputs = forward(x)
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        if matrices is None:
            matrices = [torch.zeros(num_classes * num_classes, dtype=torch.long, device=y.device) for _ in outputs]
        for m, logits in zip(matrices, outputs):
            pred = logits.argmax(dim=1)
            m += torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes)
        if on_batch is not None:
            on_batch()
    if matrices is None:
        raise ValueError("the test set is empty")
    return [m.view(num_classes, num_classes).cpu() for m in matrices]


def accuracy(confusion: torch.Tensor) -> float:
    """Top-1 accuracy in percent from a confusion matrix."""
    total = int(confusion.sum())
    return 100.0 * int(confusion.diag().sum()) / max(1, total)


def per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    support = confusion.sum(dim=1).clamp(min=1)
    return (100.0 * confusion.diag().double() / support.double()).tolist()


def evaluate_model(forward: Forward, loader, num_classes: int) -> tuple[float, list[list[int]]]:
    """Accuracy (percent) and the confusion matrix as nested lists."""
    (conf,) = confusion_matrices(forward, loader, num_classes)
    return accuracy(conf), conf.tolist()


def noise_robustness(forward: Forward, loader, num_classes: int, levels: Sequence[float],
                     seed: int = 0) -> list[list[float]]:
    """``[[level, accuracy], ...]``: accuracy with Gaussian noise of std ``level`` added to the normalised input."""
    curve = []
    for level in levels:
        (conf,) = confusion_matrices(forward, loader, num_classes, noise_std=float(level), noise_seed=seed)
        curve.append([float(level), accuracy(conf)])
    return curve


def _output_noise_sum(p: torch.Tensor) -> float:
    """Sum over the batch of the output noise of softmax rows ``p`` (see :func:`output_noise`)."""
    top = p.argmax(dim=1, keepdim=True)
    p_max = p.gather(1, top)
    b = (1.0 - p_max) / max(1, p.shape[1] - 1)
    spread = (p - b).abs()
    spread.scatter_(1, top, 0.0)  # the top class is not part of the noise
    return float(spread.sum())


def _ece(conf: torch.Tensor, hit: torch.Tensor, bins: int) -> float:
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += float(inside.double().mean()) * abs(float(conf[inside].mean()) - float(hit[inside].mean()))
    return 100.0 * ece


@torch.no_grad()
def output_noise(forward: Forward, loader) -> float:
    """How unevenly a model spreads the probability it does not give to its top class
    (the authors' "output noise", METHOD.md): for each test image with softmax ``p``,
    ``b = (1 - p_max) / (C - 1)`` and the noise is ``sum over non-top classes |p_c - b|``;
    the result is the mean over images."""
    total, count = 0.0, 0
    for x, _, _ in loader.epoch(0):
        p = torch.softmax(forward(x).double(), dim=1)
        total += _output_noise_sum(p)
        count += p.shape[0]
    return total / max(1, count)


@torch.no_grad()
def expected_calibration_error(forward: Forward, loader, bins: int = 15) -> float:
    """Expected calibration error in percent: the confidence-weighted gap between the top
    softmax probability and the accuracy, over ``bins`` equal-width confidence bins."""
    confs, hits = [], []
    for x, y, _ in loader.epoch(0):
        p = torch.softmax(forward(x).double(), dim=1)
        conf, pred = p.max(dim=1)
        confs.append(conf.cpu())
        hits.append((pred == y).double().cpu())
    return _ece(torch.cat(confs), torch.cat(hits), bins)


def report_passes(loader, levels: Sequence[float]) -> int:
    """Batches :func:`evaluation_report` runs through (for progress): one clean pass, one per non-zero noise level."""
    return len(loader) * (1 + sum(1 for level in levels if float(level) > 0))


@torch.no_grad()
def evaluation_report(forward: Forward, loader, num_classes: int, levels: Sequence[float], seed: int = 0,
                      progress: Callable[[int], None] | None = None, bins: int = 15) -> dict:
    """Everything the run reports about a trained model, in one clean pass plus one pass per
    non-zero noise level: ``test_acc``, ``confusion``, ``noise_curve`` (as
    :func:`noise_robustness`), ``output_noise`` and ``ece`` (as the functions of those names).
    ``progress(batches_done)`` is called after every batch."""
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done)

    conf_matrix = torch.zeros(num_classes * num_classes, dtype=torch.long)
    noise_total, count, confs, hits = 0.0, 0, [], []
    for x, y, _ in loader.epoch(0):
        logits = forward(x)
        pred = logits.argmax(dim=1)
        conf_matrix += torch.bincount((y * num_classes + pred).cpu(), minlength=num_classes * num_classes)
        p = torch.softmax(logits.double(), dim=1)
        noise_total += _output_noise_sum(p)
        count += p.shape[0]
        conf, top = p.max(dim=1)
        confs.append(conf.cpu())
        hits.append((top == y).double().cpu())
        tick()
    if count == 0:
        raise ValueError("the test set is empty")
    conf_matrix = conf_matrix.view(num_classes, num_classes)
    clean = accuracy(conf_matrix)
    curve = []
    for level in levels:
        level = float(level)
        if level > 0:
            (noisy,) = confusion_matrices(forward, loader, num_classes, noise_std=level, noise_seed=seed,
                                          on_batch=tick)
            curve.append([level, accuracy(noisy)])
        else:
            curve.append([level, clean])
    return {"test_acc": clean, "confusion": conf_matrix.tolist(), "noise_curve": curve,
            "output_noise": noise_total / count, "ece": _ece(torch.cat(confs), torch.cat(hits), bins)}


@torch.no_grad()
def cpu_latency_ms(model, input_shape, repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one single-image forward pass on the CPU, in milliseconds."""
    import copy
    import time

    m = copy.deepcopy(model).to("cpu").eval()
    x = torch.randn(1, *input_shape)
    for _ in range(warmup):
        m(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m(x)
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1000.0 * times[len(times) // 2]
