"""``load_dataset``: one entry point for every data set in :data:`engine.data.DATASETS`."""

from __future__ import annotations

from pathlib import Path

from engine.data import DATASETS
from engine.errors import DataError


def load_dataset(dataset: str, root: str | Path | None = None, download: bool = False,
                 image_size: int | None = None, test_fraction: float = 0.2, split_seed: int = 0,
                 in_memory: str = "auto"):
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
    """
    name = str(dataset).strip().lower() if dataset is not None else ""
    if name not in DATASETS:
        raise DataError(f"dataset: unknown data set {dataset!r} (expected one of {', '.join(DATASETS)})")
    if name == "demo":
        from engine.data.demo import load_demo

        return load_demo()
    if name in ("cifar10", "cifar100"):
        from engine.data.cifar import load_cifar

        return load_cifar(name, root, download=download)
    from engine.data.imagefolder import load_imagefolder

    return load_imagefolder(root, image_size=image_size, test_fraction=test_fraction, split_seed=split_seed,
                            in_memory=in_memory)
