"""``load_dataset``: one entry point for every data set in :data:`engine.data.DATASETS`."""

from __future__ import annotations

from pathlib import Path

from engine.data.names import DATASETS
from engine.errors import DataError

#: image folders of this side or more get the random resized crop with ``augment="auto"``
RESIZED_CROP_MIN_SIZE = 64
#: share of the stored side the test-time centre crop keeps (ImageNet's 224 of 256)
CENTRE_CROP_FRACTION = 0.875
AUGMENTS = ("auto", "none", "crop", "flip", "crop_flip", "resized_crop_flip")
NORMALIZATIONS = ("auto", "dataset", "imagenet")


def uses_resized_crop(dataset: str, augment: str, image_size: int | None) -> bool:
    """Whether the random resized crop applies: asked for, or ``auto`` on an image folder of
    ``image_size`` :data:`RESIZED_CROP_MIN_SIZE` or more (natural images at a real resolution)."""
    if augment == "resized_crop_flip":
        return True
    from engine.data.imagefolder import DEFAULT_IMAGE_SIZE

    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    return augment == "auto" and dataset == "imagefolder" and size >= RESIZED_CROP_MIN_SIZE


def imagenet_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's mean and std (those of the libraries' pretrained weights), averaged for one channel."""
    from engine.models.sources import IMAGENET_MEAN, IMAGENET_STD

    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (sum(IMAGENET_MEAN) / 3,) * channels, (sum(IMAGENET_STD) / 3,) * channels


def load_dataset(dataset: str, root: str | Path | None = None, download: bool = False,
                 image_size: int | None = None, test_fraction: float = 0.2, split_seed: int = 0,
                 in_memory: str = "auto", augment: str = "auto", normalize: str = "dataset"):
    """Load ``dataset`` as a :class:`~engine.data.bundle.DatasetBundle`.

    * ``demo``: the bundled 8x8 digits (``root``, ``download`` and ``image_size`` unused).
    * ``cifar10`` / ``cifar100``: torchvision's pickles under ``root``; ``download`` fetches
      them when missing (``image_size`` unused: the images stay 32x32).
    * ``imagefolder``: class sub-folders under ``root`` (``train``/``test`` or ``val``, or one
      folder split with ``test_fraction`` and ``split_seed``), resized to ``image_size``
      (default 32). ``in_memory`` (``"auto"``, ``"on"`` or ``"off"``) decides whether the
      images are decoded into memory or left on disk and streamed (a file-backed bundle,
      ``bundle.streamed``); ``"auto"`` streams a folder too large for memory (see
      :func:`engine.data.imagefolder.in_memory_budget`). The other data sets always fit in
      memory and ignore it.

    ``augment`` (the config's ``data.augment``) prepares the set for the random resized crop
    when :func:`uses_resized_crop` says so: image folders are then stored at
    ``image_size / CENTRE_CROP_FRACTION`` with their aspect ratio kept, and the bundle's
    ``resized_crop`` and ``view_size`` tell the loaders to crop (random resized crops for
    training, the centre crop for testing). ``normalize="imagenet"`` replaces the data set's
    own mean and std by ImageNet's (``"dataset"`` and ``"auto"`` keep them).
    """
    name = str(dataset).strip().lower() if dataset is not None else ""
    if name not in DATASETS:
        raise DataError(f"dataset: unknown data set {dataset!r} (expected one of {', '.join(DATASETS)})")
    if augment not in AUGMENTS:
        raise DataError(f"augment: expected one of {', '.join(AUGMENTS)}, got {augment!r}")
    if normalize not in NORMALIZATIONS:
        raise DataError(f"normalize: expected one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    resized = uses_resized_crop(name, augment, image_size)
    if name == "demo":
        from engine.data.demo import load_demo

        bundle = load_demo()
    elif name in ("cifar10", "cifar100"):
        from engine.data.cifar import load_cifar

        bundle = load_cifar(name, root, download=download)
    else:
        from engine.data.imagefolder import load_imagefolder

        bundle = load_imagefolder(root, image_size=image_size, test_fraction=test_fraction, split_seed=split_seed,
                                  in_memory=in_memory, crop_fraction=CENTRE_CROP_FRACTION if resized else None)
    if resized and not bundle.resized_crop:  # a tensor data set: crops of its own images, tested whole
        bundle.resized_crop, bundle.view_size, bundle.crop_padding = True, bundle.image_size[0], 0
    if normalize == "imagenet":
        bundle.mean, bundle.std = imagenet_stats(bundle.in_channels)
    return bundle
