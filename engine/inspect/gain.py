"""Where one model gains over another: per-class accuracy side by side and the test images
one gets right and the other wrong (two runs' students, or a run's teacher and student)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import InputError


@dataclass
class Gain:
    """Model ``a`` against model ``b`` on the same test images.

    ``per_class`` has one row per class: ``{"class", "images", "a", "b"}`` (accuracies in %).
    ``a_only`` are the test images ``a`` gets right and ``b`` wrong, ``b_only`` the reverse;
    ``pred_a`` / ``pred_b`` are both models' predictions for every test image.
    """

    names: tuple[str, str]
    classes: list[str]
    labels: np.ndarray
    pred_a: np.ndarray
    pred_b: np.ndarray
    per_class: list[dict]
    accuracy: tuple[float, float]
    a_only: list[int]
    b_only: list[int]

    @property
    def net(self) -> int:
        """Images ``b`` gets right that ``a`` does not, minus the reverse."""
        return len(self.b_only) - len(self.a_only)


def compare_predictions(labels, pred_a, pred_b, classes: list[str], names: tuple[str, str]) -> Gain:
    """Per-class accuracy of two models' predictions on the same labels, and where they differ."""
    labels, pred_a, pred_b = (np.asarray(v, dtype=np.int64) for v in (labels, pred_a, pred_b))
    if not (labels.shape == pred_a.shape == pred_b.shape):
        raise InputError(f"{names[0]} and {names[1]} were not evaluated on the same test images "
                         f"({pred_a.shape[0]} and {pred_b.shape[0]} predictions)")
    right_a, right_b = pred_a == labels, pred_b == labels
    rows = []
    for c, name in enumerate(classes):
        mask = labels == c
        n = int(mask.sum())
        rows.append({"class": name, "images": n,
                     "a": float(right_a[mask].mean() * 100) if n else None,
                     "b": float(right_b[mask].mean() * 100) if n else None})
    n = max(1, labels.size)
    return Gain(names=tuple(names), classes=list(classes), labels=labels, pred_a=pred_a, pred_b=pred_b,
                per_class=rows, accuracy=(float(right_a.sum() * 100 / n), float(right_b.sum() * 100 / n)),
                a_only=np.flatnonzero(right_a & ~right_b).tolist(), b_only=np.flatnonzero(right_b & ~right_a).tolist())


def student_gain(outputs_a, outputs_b, classes: list[str], names: tuple[str, str]) -> Gain:
    """The best students of two runs on the same test set (refused when the test sets differ)."""
    if outputs_a.labels.shape != outputs_b.labels.shape or not np.array_equal(outputs_a.labels, outputs_b.labels):
        raise InputError(f"{names[0]} and {names[1]} have different test sets ({outputs_a.labels.size} and "
                         f"{outputs_b.labels.size} images, or other labels); compare runs on the same data")
    return compare_predictions(outputs_a.labels, outputs_a.predictions["student"], outputs_b.predictions["student"],
                               classes, names)


def teacher_student_gap(outputs, classes: list[str]) -> Gain | None:
    """The run's teacher (a) against its student (b); ``None`` for a run without a teacher."""
    if "teacher" not in outputs.predictions:
        return None
    return compare_predictions(outputs.labels, outputs.predictions["teacher"], outputs.predictions["student"],
                               classes, ("teacher", "student"))
