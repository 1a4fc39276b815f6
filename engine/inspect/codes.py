"""Granularity codes in two dimensions: PCA (default; t-SNE or UMAP when installed), the
share of variance the two axes keep, and how well the classes separate there.

Codes are centred per image before projecting: the code loss compares
``softmax(e / T)``, which ignores a constant added to a whole code, so a student code
that differs from its teacher's only by such a shift matches it exactly; centring shows
teacher and student in the same terms.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import InputError
from engine.inspect.progress import CancelledFn, ProgressFn, check, report

METHODS = ("pca", "tsne", "umap")


@dataclass
class Projection:
    """2-D points of one granularity's codes for one model (``role``: teacher or student)."""

    granularity: str
    role: str
    method: str
    points: np.ndarray  # N x 2 float32
    labels: np.ndarray  # N int64
    variance_share: float | None  # share of the codes' variance the two PCA axes keep (None for t-SNE/UMAP)
    separation: float  # leave-one-out 5-NN accuracy in 2-D, %
    chance: float  # accuracy of always answering the most frequent class, %

    @property
    def title(self) -> str:
        share = f", {100 * self.variance_share:.0f}% of variance" if self.variance_share is not None else ""
        return f"{self.role} {self.granularity} ({self.method.upper()}{share})"


def available_methods() -> list[str]:
    """The projection methods usable here: PCA always, t-SNE with scikit-learn, UMAP with umap-learn."""
    out = ["pca"]
    if importlib.util.find_spec("sklearn") is not None:
        out.append("tsne")
    if importlib.util.find_spec("umap") is not None:
        out.append("umap")
    return out


def pca_2d(codes: np.ndarray) -> tuple[np.ndarray, float]:
    """The first two principal components of ``codes`` (N x d) and the share of variance they keep.

    Signs are fixed (each axis's largest loading positive) so equal codes give equal plots.
    """
    x = torch.as_tensor(np.asarray(codes), dtype=torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2), dtype=np.float32), 0.0
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(2, vh.shape[0])
    axes = vh[:k]
    flip = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))
    axes = axes * torch.where(flip == 0, torch.ones_like(flip), flip)
    points = x @ axes.T
    if k < 2:
        points = torch.cat([points, torch.zeros(points.shape[0], 2 - k, dtype=points.dtype)], dim=1)
    total = float((s ** 2).sum())
    share = float((s[:k] ** 2).sum()) / total if total > 0 else 0.0
    return points.float().numpy(), share


def knn_accuracy(points: np.ndarray, labels: np.ndarray, k: int = 5, chunk: int = 2048) -> float:
    """Leave-one-out k-nearest-neighbour accuracy (%) of ``labels`` from ``points``.

    Votes are counted per class; a tie goes to the class of the nearest neighbour among the tied.
    """
    x = torch.as_tensor(np.asarray(points), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    n = x.shape[0]
    if n < 2:
        return 0.0
    k = min(k, n - 1)
    classes = int(y.max()) + 1
    correct = 0
    for start in range(0, n, chunk):
        d = torch.cdist(x[start:start + chunk], x)
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = float("inf")  # leave the point itself out
        order = d.topk(k, dim=1, largest=False).indices  # nearest first
        votes = torch.zeros(d.shape[0], classes, dtype=torch.float64)
        neighbour = y[order]
        # every vote counts 1; nearer neighbours add a little less than 1/k to break ties
        weight = 1.0 + (k - torch.arange(k, dtype=torch.float64)) / (k * (k + 1))
        votes.scatter_add_(1, neighbour, weight.expand_as(neighbour).clone())
        correct += int((votes.argmax(dim=1) == y[start:start + chunk]).sum())
    return 100.0 * correct / n


def chance_accuracy(labels: np.ndarray) -> float:
    """Accuracy (%) of always answering the most frequent class."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return 0.0
    return 100.0 * np.bincount(labels).max() / labels.size


def project(codes: np.ndarray, labels: np.ndarray, *, granularity: str, role: str, method: str = "pca",
            seed: int = 0) -> Projection:
    """One granularity's codes of one model in 2-D, with the variance share and the class separation."""
    if method not in METHODS:
        raise InputError(f"projection {method!r}: choose one of {', '.join(METHODS)}")
    if method not in available_methods():
        package = {"tsne": "scikit-learn", "umap": "umap-learn"}[method]
        raise InputError(f"projection {method!r} needs the package {package} (pip install {package}); "
                         "PCA needs nothing")
    x = np.asarray(codes, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)  # softmax ignores a constant shift of a code
    share = None
    if method == "pca":
        points, share = pca_2d(x)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(max(2.0, min(30.0, (len(x) - 1) / 3)))
        points = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(x)
    else:
        import umap

        points = umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    points = np.asarray(points, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    return Projection(granularity=granularity, role=role, method=method, points=points, labels=labels,
                      variance_share=share, separation=knn_accuracy(points, labels), chance=chance_accuracy(labels))


def code_projections(outputs, *, method: str = "pca", seed: int = 0, progress: ProgressFn | None = None,
                     cancelled: CancelledFn | None = None) -> list[Projection]:
    """Projections of every granularity's codes, the teacher's then (when available) the student's."""
    jobs = [("teacher", g, c) for g, c in zip(outputs.granularities, outputs.teacher_codes)]
    jobs += [("student", g, c) for g, c in zip(outputs.granularities, outputs.student_codes)]
    out = []
    report(progress, 0, len(jobs))
    for i, (role, granularity, codes) in enumerate(jobs, start=1):
        check(cancelled)
        out.append(project(codes, outputs.labels, granularity=granularity, role=role, method=method, seed=seed))
        report(progress, i, len(jobs))
    return out
