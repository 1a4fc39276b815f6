"""Batch augmentation on the training device: random crop with zero padding, horizontal flip, and
the random resized crop (with the centre crop for testing) of natural images at larger sizes.

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


# ----------------------------------------------------------------------------- random resized crop

#: area fraction and aspect-ratio range of the random resized crop (torchvision's defaults)
RESIZED_CROP_SCALE = (0.08, 1.0)
RESIZED_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RESIZED_CROP_ATTEMPTS = 10


def draw_resized_crops(gen: torch.Generator, n: int, height: int, width: int,
                       scale: tuple[float, float] = RESIZED_CROP_SCALE,
                       ratio: tuple[float, float] = RESIZED_CROP_RATIO,
                       attempts: int = RESIZED_CROP_ATTEMPTS) -> torch.Tensor:
    """Crop boxes ``(top, left, height, width)`` (int64, ``n x 4``) of a random resized crop.

    torchvision's ``RandomResizedCrop`` rule, vectorised: per image, up to ``attempts`` draws
    of an area fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``; the first
    box that fits the image is placed uniformly at random, and when none fits the image's
    centre crop clamped to ``ratio`` is used. Every number is drawn for every image in a fixed
    order on ``gen``, so the boxes depend on the generator's seed alone.
    """
    import math

    area = float(height * width)
    fraction = torch.empty(n, attempts, dtype=torch.float64).uniform_(scale[0], scale[1], generator=gen)
    log_ratio = torch.empty(n, attempts, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    place = torch.rand(n, attempts, 2, generator=gen, dtype=torch.float64)
    aspect = log_ratio.exp()
    w = (area * fraction * aspect).sqrt().round()
    h = (area * fraction / aspect).sqrt().round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int64).argmax(dim=1, keepdim=True)  # the first fitting attempt (0 if none)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    u = place.gather(1, first[:, :, None].expand(n, 1, 2))[:, 0]
    top = (u[:, 0] * (height - h + 1)).floor()
    left = (u[:, 1] * (width - w + 1)).floor()
    # no attempt fitted: the centre crop, its aspect ratio clamped to the range
    image_ratio = width / height
    if image_ratio < ratio[0]:
        fw, fh = float(width), float(round(width / ratio[0]))
    elif image_ratio > ratio[1]:
        fw, fh = float(round(height * ratio[1])), float(height)
    else:
        fw, fh = float(width), float(height)
    none = ~fits.any(dim=1)
    w = torch.where(none, torch.full_like(w, fw), w)
    h = torch.where(none, torch.full_like(h, fh), h)
    top = torch.where(none, torch.full_like(top, (height - fh) // 2), top)
    left = torch.where(none, torch.full_like(left, (width - fw) // 2), left)
    return torch.stack([top, left, h, w], dim=1).to(torch.int64)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Cut box ``b`` (``top, left, height, width``) out of image ``b`` of ``x`` and resize it to
    ``size x size`` (bilinear), for the whole batch at once with ``grid_sample``."""
    b, _, height, width = x.shape
    boxes = boxes.to(device=x.device, dtype=torch.float32)
    top, left, h, w = boxes.unbind(1)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=torch.float32)
    # output [-1, 1] -> the box in the input's [-1, 1] coordinates (pixel edges, align_corners=False)
    theta[:, 0, 0] = w / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` window of every image of ``x`` (unchanged when it is that size)."""
    height, width = x.shape[-2:]
    if height == size and width == size:
        return x
    if size > height or size > width:
        raise ValueError(f"cannot centre-crop {height}x{width} images to {size}x{size}")
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top:top + size, left:left + size]
