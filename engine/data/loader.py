"""In-memory batches, shuffled and augmented deterministically from ``(seed, epoch, step)``."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from engine.data.augment import (center_crop, draw_augmentation, draw_resized_crops, generator, random_crop,
                                 random_flip, resized_crop)


def check_batch_size(batch_size: int) -> None:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def num_batches(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch: the last partial batch counts unless ``drop_last``."""
    return num_samples // batch_size if drop_last else -(-num_samples // batch_size)


def epoch_order(num_samples: int, train: bool, seed: int, epoch: int) -> torch.Tensor:
    """The sample indices of an epoch in batch order (int64, on the CPU): a permutation drawn
    from ``(seed, epoch)`` for training, ``0..n-1`` otherwise. Every loader uses this one."""
    if not train:
        return torch.arange(num_samples)
    return torch.randperm(num_samples, generator=generator("perm", int(seed), int(epoch)))


class BatchAugment:
    """The batch transform every loader applies on the device: uint8 -> [0, 1], random crop
    with zero padding and flip drawn from ``(seed, epoch, step)`` (training only), then
    ``(x - mean) / std``. In-memory and streamed loaders share it, so they give equal batches.

    With ``output_size`` smaller than the stored images, the models see ``output_size``
    squares: training batches take a random resized crop (``resized_crop``, then the flip),
    test batches the centre crop. The boxes come from ``(seed, epoch, step)`` as well."""

    def __init__(self, channels: int, device: str | torch.device, *, mean: Sequence[float], std: Sequence[float],
                 train: bool, crop_padding: int = 0, flip: bool = False, seed: int = 0,
                 resized_crop: bool = False, output_size: int | None = None):
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values (one per channel)")
        if any(float(s) <= 0 for s in std):
            raise ValueError("std values must be positive")
        if int(crop_padding) < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.device = torch.device(device)
        self.train = bool(train)
        self.crop_padding = int(crop_padding) if self.train else 0
        self.flip = bool(flip) and self.train
        self.seed = int(seed)
        self.resized_crop = bool(resized_crop) and self.train
        self.output_size = int(output_size) if output_size else None
        if self.output_size is not None and self.output_size < 1:
            raise ValueError(f"output_size must be positive, got {output_size}")
        shape = (1, channels, 1, 1)
        self.mean = torch.tensor([float(m) for m in mean], dtype=torch.float32, device=self.device).view(shape)
        inv_std = (1.0 / torch.tensor([float(s) for s in std], dtype=torch.float64)).float()
        self.inv_std = inv_std.to(self.device).view(shape)

    def __call__(self, images: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """Normalised float32 batch from a uint8 ``B x C x H x W`` batch already on the device."""
        size = self.output_size
        if self.resized_crop:
            gen = generator("aug", self.seed, int(epoch), int(step))
            boxes = draw_resized_crops(gen, images.shape[0], images.shape[-2], images.shape[-1])
            _, flips = draw_augmentation(gen, images.shape[0], 0, self.flip)
            x = resized_crop(images.float().div_(255.0), boxes, size or images.shape[-1])
            if flips is not None:
                x = random_flip(x, flips)
            return x.sub_(self.mean).mul_(self.inv_std)
        if size is not None:
            images = center_crop(images, size)
        x = images.float().div_(255.0)
        if self.crop_padding > 0 or self.flip:
            offsets, flips = draw_augmentation(generator("aug", self.seed, int(epoch), int(step)),
                                               x.shape[0], self.crop_padding, self.flip)
            if offsets is not None:
                x = random_crop(x, offsets, self.crop_padding)
            if flips is not None:
                x = random_flip(x, flips)
        return x.sub_(self.mean).mul_(self.inv_std)


class EpochLoader:
    """What every loader shares: the settings, the batch count, the epoch order and the
    ``epoch(e, start_step)`` entry point. Subclasses hold the images and implement
    ``_iterate(epoch, start_step)``."""

    def __init__(self, labels: torch.Tensor, channels: int, *, batch_size: int, device: str | torch.device,
                 mean: Sequence[float], std: Sequence[float], train: bool, crop_padding: int = 0,
                 flip: bool = False, seed: int = 0, drop_last: bool = False, resized_crop: bool = False,
                 output_size: int | None = None):
        check_batch_size(batch_size)
        self.device = torch.device(device)
        self.augment = BatchAugment(channels, self.device, mean=mean, std=std, train=train,
                                    crop_padding=crop_padding, flip=flip, seed=seed, resized_crop=resized_crop,
                                    output_size=output_size)
        self.labels = labels.to(device=self.device, dtype=torch.int64)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.crop_padding = self.augment.crop_padding
        self.flip = self.augment.flip
        self.seed = int(seed)
        self.drop_last = bool(drop_last)

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        return num_batches(self.num_samples, self.batch_size, self.drop_last)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample indices of epoch ``epoch`` in batch order (int64, on the device)."""
        return epoch_order(self.num_samples, self.train, self.seed, epoch).to(self.device)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y, idx)`` for the batches ``start_step..`` of epoch ``epoch``.

        ``x`` is float32 ``B x C x H x W`` normalised, ``y`` the int64 labels and ``idx`` the
        int64 sample indices, all on the device.
        """
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        return self._iterate(int(epoch), int(start_step))

    def _iterate(self, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        raise NotImplementedError


class BatchLoader(EpochLoader):
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
                 crop_padding: int = 0, flip: bool = False, seed: int = 0, drop_last: bool = False,
                 resized_crop: bool = False, output_size: int | None = None):
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError("images must be a uint8 tensor of shape N x C x H x W")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must be a 1-D tensor of {images.shape[0]} entries")
        super().__init__(labels, images.shape[1], batch_size=batch_size, device=device, mean=mean, std=std,
                         train=train, crop_padding=crop_padding, flip=flip, seed=seed, drop_last=drop_last,
                         resized_crop=resized_crop, output_size=output_size)
        self.images = images.to(self.device)  # uint8 copy on the device

    def _iterate(self, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        steps = len(self)
        if start_step >= steps:
            return
        order = self.order(epoch)
        for step in range(start_step, steps):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield self._batch(idx, epoch, step), self.labels[idx], idx

    def _batch(self, idx: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        return self.augment(self.images[idx], epoch, step)
