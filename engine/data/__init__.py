"""The data layer: data sets as in-memory uint8 tensors and a batch loader that augments on the device.

``from engine.data import DATASETS`` imports nothing heavy; the other names are loaded on
first use (PEP 562), so the GUI can list the data sets without paying for ``import torch``.

* :func:`load_dataset` returns a :class:`DatasetBundle` (train/test uint8 images, labels,
  class names, normalisation statistics and the augmentation defaults of the data set).
* :class:`BatchLoader` yields normalised, augmented batches with deterministic shuffling
  and augmentation derived from ``(seed, epoch, step)``, so a run resumed mid-epoch sees
  exactly the batches it would have seen. Natural images at real resolution (image folders
  of 64 px and more) get the random resized crop for training and the centre crop for testing.
* :class:`StreamLoader` does the same for an image folder too large for memory (a
  file-backed bundle): DataLoader workers decode the files, the augmentation is the same.
  :func:`make_loader` picks the right one for a bundle.
"""

from __future__ import annotations

from engine.data.names import DATASETS
from engine.lazy import lazy_attributes

# public name -> submodule that defines it
_LAZY = {
    "DatasetBundle": "engine.data.bundle",
    "channel_stats": "engine.data.bundle",
    "load_dataset": "engine.data.load",
    "BatchLoader": "engine.data.loader",
    "derive_seed": "engine.data.augment",
    "random_crop": "engine.data.augment",
    "random_flip": "engine.data.augment",
    "draw_augmentation": "engine.data.augment",
    "draw_resized_crops": "engine.data.augment",
    "resized_crop": "engine.data.augment",
    "center_crop": "engine.data.augment",
    "digits_path": "engine.data.demo",
    "make_loader": "engine.data.factory",
    "StreamLoader": "engine.data.stream",
    "FileImages": "engine.data.stream",
}

__all__ = ["DATASETS", *_LAZY]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
