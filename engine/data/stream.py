"""Data sets too large for memory: images kept on disk, decoded by DataLoader workers.

* :class:`FileImages` stands where a bundle's uint8 image tensor would be: it knows the
  files, the decoded shape ``N x C x H x W`` and decodes one image (or a few) on demand.
  A :class:`~engine.data.bundle.DatasetBundle` holding it is *file-backed*
  (``bundle.streamed``).
* :class:`StreamLoader` has :class:`~engine.data.loader.BatchLoader`'s interface
  (``len()``, ``epoch(e, start_step)`` yielding ``(x, y, idx)`` on the device) and gives
  the very same batches: the same permutation per ``(seed, epoch)``, and the same batched
  crop / flip / normalisation (:class:`~engine.data.loader.BatchAugment`) applied on the
  device to the decoded uint8 batch. Only decoding and resizing happen in the ``workers``
  processes of a torch ``DataLoader``, which stay alive between epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import torch

from engine.data.loader import EpochLoader, epoch_order
from engine.errors import DataError


def decode_image(path: str | Path, size: int, channels: int, fit: str = "stretch") -> torch.Tensor:
    """One image file as a uint8 ``C x size x size`` tensor with ``channels`` (1 or 3) channels,
    decoded and resized (``fit``, see :func:`engine.data.images.read_image`) exactly as
    the in-memory image-folder loader does."""
    import numpy as np

    from engine.data.images import read_image

    arr, _ = read_image(Path(path), size, fit)
    if channels == 1:
        if arr.ndim == 3:  # a colour image in a set judged gray from its sample: PIL's luma
            from PIL import Image

            arr = np.asarray(Image.fromarray(arr, mode="RGB").convert("L"), dtype=np.uint8)
        return torch.from_numpy(np.ascontiguousarray(arr))[None]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class FileImages:
    """The images of one split, on disk: ``len``, ``shape`` and ``[i]`` like a uint8 tensor.

    ``images[i]`` decodes image ``i`` (``C x H x W``); a slice or a sequence of indices gives
    a stacked ``B x C x H x W`` batch. Nothing is held in memory but the file names.
    """

    streamed = True
    dtype = torch.uint8

    def __init__(self, files: Sequence[str | Path], size: int, channels: int, fit: str = "stretch"):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.files = [str(f) for f in files]
        self.size = int(size)
        self.channels = int(channels)
        self.fit = fit

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), self.channels, self.size, self.size))

    @property
    def nbytes(self) -> int:
        """Bytes the decoded uint8 images would take in memory."""
        return len(self.files) * self.channels * self.size * self.size

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.files)

    def decode(self, i: int) -> torch.Tensor:
        return decode_image(self.files[i], self.size, self.channels, self.fit)

    def __getitem__(self, key):
        if isinstance(key, torch.Tensor):
            key = key.tolist()
        if isinstance(key, int):
            n = len(self.files)
            if not -n <= key < n:
                raise IndexError(f"image index {key} out of range for {n} images")
            return self.decode(key % n)
        if isinstance(key, slice):
            key = range(*key.indices(len(self.files)))
        picked = [self.decode(int(i)) for i in key]
        if not picked:
            return torch.empty((0, self.channels, self.size, self.size), dtype=torch.uint8)
        return torch.stack(picked)

    def __repr__(self) -> str:
        return f"FileImages({len(self.files)} files, {self.channels}x{self.size}x{self.size})"


class _DecodeSet(torch.utils.data.Dataset):
    """What the DataLoader workers see: index -> (index, uint8 image or None, error or None).

    A file that cannot be read comes back as an error message (not an exception), so the
    main process raises a plain :class:`DataError` naming the file.
    """

    def __init__(self, images: FileImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        try:
            return i, self.images.decode(i), None
        except DataError as exc:
            return i, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - reported by the main process
            return i, None, f"{self.images.files[i]}: cannot read the image ({type(exc).__name__}: {exc})"


def _collate(items):
    errors = [e for _, _, e in items if e is not None]
    if errors:
        return None, None, errors[0]
    return torch.stack([img for _, img, _ in items]), torch.tensor([i for i, _, _ in items], dtype=torch.int64), None


class _EpochBatches:
    """The batch sampler of the persistent DataLoader: the index lists of the current epoch."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamLoader(EpochLoader):
    """Batches of a file-backed split, equal to :class:`BatchLoader`'s over the same images.

    ``workers`` processes decode and resize the files of the coming batches (``prefetch``
    batches ahead each); the main process copies each uint8 batch to ``device`` (pinned,
    non-blocking on a GPU) and augments it there as :class:`BatchLoader` does. With
    ``workers=0`` the main process decodes. Call :meth:`close` to end the workers early
    (they also end when the loader is garbage-collected).
    """

    def __init__(self, images: FileImages, labels: torch.Tensor, *, batch_size: int,
                 device: str | torch.device, mean: Sequence[float], std: Sequence[float], train: bool,
                 crop_padding: int = 0, flip: bool = False, seed: int = 0, drop_last: bool = False,
                 workers: int = 0, prefetch: int = 2, resized_crop: bool = False, output_size: int | None = None):
        if not getattr(images, "streamed", False):
            raise ValueError("images must be FileImages (use BatchLoader for tensors)")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != len(images):
            raise ValueError(f"labels must be a 1-D tensor of {len(images)} entries")
        if int(workers) < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        super().__init__(labels, images.channels, batch_size=batch_size, device=device, mean=mean, std=std,
                         train=train, crop_padding=crop_padding, flip=flip, seed=seed, drop_last=drop_last,
                         resized_crop=resized_crop, output_size=output_size)
        self.images = images
        self.workers = int(workers)
        self.prefetch = max(1, int(prefetch))
        self._sampler = _EpochBatches()
        self._loader: torch.utils.data.DataLoader | None = None
        self._generation = 0  # which epoch() iteration owns the DataLoader now

    def _dataloader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            extra = {"persistent_workers": True, "prefetch_factor": self.prefetch} if self.workers > 0 else {}
            self._loader = torch.utils.data.DataLoader(
                _DecodeSet(self.images), batch_sampler=self._sampler, num_workers=self.workers,
                collate_fn=_collate, pin_memory=self.device.type == "cuda", **extra)
        return self._loader

    def _iterate(self, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        steps = len(self)
        if start_step >= steps:
            return
        order = epoch_order(self.num_samples, self.train, self.seed, epoch)
        bs = self.batch_size
        self._generation += 1
        generation = self._generation
        self._sampler.batches = [order[s * bs:(s + 1) * bs].tolist() for s in range(start_step, steps)]
        batches = iter(self._dataloader())  # (re)starts the workers' epoch; stale prefetches are dropped
        non_blocking = self.device.type == "cuda"
        for step in range(start_step, steps):
            if generation != self._generation:  # checked before touching the shared DataLoader iterator
                raise RuntimeError("StreamLoader: another epoch() started while this one was being iterated")
            images, idx, error = next(batches)
            if error is not None:
                raise DataError(error)
            idx = idx.to(self.device, non_blocking=non_blocking)
            x = self.augment(images.to(self.device, non_blocking=non_blocking), epoch, step)
            yield x, self.labels[idx], idx

    def close(self) -> None:
        """End the worker processes now (a later epoch starts new ones)."""
        loader, self._loader = self._loader, None
        if loader is not None:
            it = getattr(loader, "_iterator", None)
            if it is not None and hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()
