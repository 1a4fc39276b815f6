"""The :class:`DatasetBundle` every loader returns, and per-channel statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class DatasetBundle:
    """A whole data set: uint8 ``N x C x H x W`` images on the CPU and int64 labels.

    A *file-backed* bundle (``streamed``) holds :class:`~engine.data.stream.FileImages`
    instead of tensors: the same ``shape``, ``len`` and ``[i]``, decoded from disk on demand.
    """

    name: str
    train_images: "torch.Tensor"  # uint8, N x C x H x W, CPU
    train_labels: "torch.Tensor"  # int64, N
    test_images: "torch.Tensor"
    test_labels: "torch.Tensor"
    classes: list[str]
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    natural: bool  # True: horizontal flip is a valid augmentation
    crop_padding: int  # default padding of the random crop
    #: prepared for the random resized crop: the images are stored larger than the models' input
    #: (``view_size``), training batches take random resized crops and test batches the centre crop
    resized_crop: bool = False
    view_size: int | None = None  # side of the models' input when it differs from the stored images

    @property
    def streamed(self) -> bool:
        """True when the images stay on disk and are streamed (see :mod:`engine.data.stream`)."""
        return bool(getattr(self.train_images, "streamed", False))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the models' input (the stored images, or ``view_size`` squares)."""
        if self.view_size:
            return int(self.view_size), int(self.view_size)
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])


def channel_stats(images: "torch.Tensor", chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 images, on the [0, 1] scale.

    Counts the 256 pixel values per channel, so it is exact and needs no float copy of the
    data set. A constant channel gets std 1.0 (normalising by 0 would give inf).
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError("channel_stats needs a non-empty N x C x H x W tensor")
    return stats_from_histogram(channel_histogram(images, chunk))


def channel_histogram(images: "torch.Tensor", chunk: int = 4096) -> "torch.Tensor":
    """Counts of the 256 pixel values per channel (``C x 256``, float64) of uint8 images;
    histograms of several batches add up, so statistics can be taken batch by batch."""
    import torch

    channels = images.shape[1]
    counts = torch.zeros(channels, 256, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        part = images[start:start + chunk]
        for c in range(channels):
            counts[c] += torch.bincount(part[:, c].reshape(-1), minlength=256).double()
    return counts


def stats_from_histogram(counts: "torch.Tensor") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population standard deviation on the [0, 1] scale (see :func:`channel_stats`)."""
    import torch

    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = counts.sum(dim=1)
    mean = (counts * values).sum(dim=1) / total
    var = (counts * (values[None, :] - mean[:, None]) ** 2).sum(dim=1) / total
    std = var.sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
