"""In-memory batches, shuffled and augmented deterministically from ``(seed, epoch, step)``."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from engine.data.augment import draw_augmentation, generator, random_crop, random_flip


class BatchLoader:
    """In-memory batches with augmentation done on whole batches on the training device.

    The uint8 images are copied to ``device`` once. Each batch is gathered there, scaled to
    [0, 1], randomly cropped (zero padding ``crop_padding``) and flipped (when ``flip``),
    then normalised with ``mean``/``std``. The permutation of epoch ``e`` comes from a
    generator seeded from ``(seed, e)`` and the augmentation of batch ``(e, step)`` from one
    seeded from ``(seed, e, step)``: no RNG state needs saving, ``epoch(e, start_step=k)``
    yields exactly the batches ``k..`` of ``epoch(e)``, and equal seeds give equal batches.
    With ``train=False`` the order is fixed and nothing is augmented.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
                 device: str | torch.device, mean: Sequence[float], std: Sequence[float], train: bool,
                 crop_padding: int = 0, flip: bool = False, seed: int = 0, drop_last: bool = False):
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError("images must be a uint8 tensor of shape N x C x H x W")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must be a 1-D tensor of {images.shape[0]} entries")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values (one per channel)")
        if any(float(s) <= 0 for s in std):
            raise ValueError("std values must be positive")
        if int(crop_padding) < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")

        self.device = torch.device(device)
        self.images = images.to(self.device)  # uint8 copy on the device
        self.labels = labels.to(device=self.device, dtype=torch.int64)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.crop_padding = int(crop_padding) if self.train else 0
        self.flip = bool(flip) and self.train
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        shape = (1, channels, 1, 1)
        self._mean = torch.tensor([float(m) for m in mean], dtype=torch.float32, device=self.device).view(shape)
        self._inv_std = (1.0 / torch.tensor([float(s) for s in std], dtype=torch.float64)).float().to(self.device)
        self._inv_std = self._inv_std.view(shape)

    @property
    def num_samples(self) -> int:
        return int(self.images.shape[0])

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample indices of epoch ``epoch`` in batch order (int64, on the device)."""
        if not self.train:
            return torch.arange(self.num_samples, device=self.device)
        perm = torch.randperm(self.num_samples, generator=generator("perm", self.seed, int(epoch)))
        return perm.to(self.device)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y, idx)`` for the batches ``start_step..`` of epoch ``epoch``.

        ``x`` is float32 ``B x C x H x W`` normalised, ``y`` the int64 labels and ``idx`` the
        int64 sample indices, all on the device.
        """
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        return self._iterate(int(epoch), int(start_step))

    def _iterate(self, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        steps = len(self)
        if start_step >= steps:
            return
        order = self.order(epoch)
        for step in range(start_step, steps):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield self._batch(idx, epoch, step), self.labels[idx], idx

    def _batch(self, idx: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        x = self.images[idx].float().div_(255.0)
        if self.crop_padding > 0 or self.flip:
            offsets, flips = draw_augmentation(generator("aug", self.seed, int(epoch), int(step)),
                                               x.shape[0], self.crop_padding, self.flip)
            if offsets is not None:
                x = random_crop(x, offsets, self.crop_padding)
            if flips is not None:
                x = random_flip(x, flips)
        return x.sub_(self._mean).mul_(self._inv_std)
