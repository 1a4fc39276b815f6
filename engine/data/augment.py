"""Batch augmentation on the training device: random crop with zero padding and horizontal flip.

The random numbers are drawn on a CPU ``torch.Generator`` (:func:`draw_augmentation`) and
moved to the device, so a batch is augmented identically on every device. The transforms
themselves (:func:`random_crop`, :func:`random_flip`) are vectorised over the batch.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple such as ``("perm", seed, epoch)``; stable across runs and platforms."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def generator(*parts: int | str) -> torch.Generator:
    """A CPU generator seeded from :func:`derive_seed` of ``parts``."""
    return torch.Generator(device="cpu").manual_seed(derive_seed(*parts))


def draw_augmentation(gen: torch.Generator, n: int, padding: int, flip: bool):
    """The random parameters of one batch, drawn in a fixed order on the CPU generator.

    Returns ``(offsets, flips)``: ``offsets`` an int64 ``n x 2`` tensor of (top, left) crop
    offsets in ``[0, 2 * padding]`` (``None`` when ``padding`` is 0) and ``flips`` a bool
    tensor of length ``n``, True with probability 0.5 (``None`` when ``flip`` is False).
    """
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=gen, dtype=torch.int64) if padding > 0 else None
    flips = (torch.rand(n, generator=gen) < 0.5) if flip else None
    return offsets, flips


def random_crop(x: torch.Tensor, offsets: torch.Tensor, padding: int) -> torch.Tensor:
    """Crop each image of ``x`` (``B x C x H x W``) out of its zero-padded version.

    Image ``b`` becomes ``pad(x[b], padding)[:, top:top + H, left:left + W]`` with
    ``(top, left) = offsets[b]``, as torchvision's ``RandomCrop(H, padding=padding)`` does.
    """
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    wp = w + 2 * padding
    padded = F.pad(x, (padding, padding, padding, padding)).reshape(b, c, -1)  # zeros around
    offsets = offsets.to(x.device)
    # flat position in the padded image of output pixel (r, q): (top + r) * wp + left + q
    window = (torch.arange(h, device=x.device)[:, None] * wp + torch.arange(w, device=x.device)).reshape(1, -1)
    index = offsets[:, 0:1] * wp + offsets[:, 1:2] + window  # B x (H * W)
    return padded.gather(2, index[:, None, :].expand(b, c, h * w)).reshape(b, c, h, w)


def random_flip(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror (left-right) the images of ``x`` whose entry in the bool tensor ``flips`` is True."""
    flips = flips.to(x.device)
    return torch.where(flips[:, None, None, None], x.flip(3), x)
