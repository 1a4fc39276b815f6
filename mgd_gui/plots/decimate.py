"""Keep long curves light: min/max decimation and exponential smoothing (numpy only)."""

from __future__ import annotations

import numpy as np

MAX_POINTS = 4000


def decimate(x, y, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``max_points`` points that keep every bucket's minimum and maximum,
    in order, so spikes survive (a stride would drop them)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    if n <= max_points or max_points < 4:
        return x, y
    buckets = max_points // 2
    size = -(-n // buckets)  # ceil
    pad = buckets * size - n
    yy = np.concatenate([y, np.full(pad, np.nan)]).reshape(buckets, size)
    valid = ~np.all(np.isnan(yy), axis=1)
    filled_lo = np.where(np.isnan(yy), np.inf, yy)
    filled_hi = np.where(np.isnan(yy), -np.inf, yy)
    base = np.arange(buckets) * size
    lo = base + np.argmin(filled_lo, axis=1)
    hi = base + np.argmax(filled_hi, axis=1)
    first = np.minimum(lo, hi)[valid]
    second = np.maximum(lo, hi)[valid]
    idx = np.stack([first, second], axis=1).reshape(-1)
    idx = idx[np.concatenate([[True], np.diff(idx) != 0])]  # a bucket whose min is its max
    idx = np.clip(idx, 0, n - 1)
    return x[idx], y[idx]


def smooth(y, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction (the first points are not pulled to 0)."""
    y = np.asarray(y, dtype=float)
    if weight <= 0 or len(y) < 2:
        return y
    out = np.empty_like(y)
    acc = 0.0
    scale = 0.0
    for i, v in enumerate(y):
        if not np.isfinite(v):
            out[i] = v
            continue
        acc = weight * acc + (1 - weight) * v
        scale = weight * scale + (1 - weight)
        out[i] = acc / scale
    return out
