"""CIFAR-10 and CIFAR-100 read straight from torchvision's on-disk python pickles.

The reader does not use torchvision's dataset classes (their md5 checks reject anything but
the original files); torchvision is only called to download the archive when asked to.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

from engine.errors import DataError


@dataclass(frozen=True)
class CifarSpec:
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    downloader: str  # torchvision.datasets class name


SPECS = {
    "cifar10": CifarSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        downloader="CIFAR10",
    ),
    "cifar100": CifarSpec(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        downloader="CIFAR100",
    ),
}


def _required(spec: CifarSpec) -> tuple[str, ...]:
    return (*spec.train_files, spec.test_file, spec.meta_file)


def _folder(root: Path, spec: CifarSpec) -> Path:
    """``root/<folder>`` or ``root`` itself when it is that folder (or holds its files)."""
    if root.name == spec.folder or (root / spec.meta_file).is_file():
        return root
    return root / spec.folder


def _missing(folder: Path, spec: CifarSpec) -> list[str]:
    return [name for name in _required(spec) if not (folder / name).is_file()]


def _download(root: Path, folder: Path, spec: CifarSpec) -> None:
    target = folder.parent  # torchvision extracts <folder> inside the root it is given
    try:
        import torchvision.datasets as tvd

        target.mkdir(parents=True, exist_ok=True)
        getattr(tvd, spec.downloader)(str(target), train=True, download=True)
    except Exception as exc:  # no network, no disk space, a corrupt archive, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{target}: downloading {spec.title} failed ({reason})") from None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh, encoding="latin1")
    except Exception as exc:
        raise DataError(f"{path}: not a readable {path.name} pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(data).__name__}")
    # files pickled under Python 2 may come back with bytes keys
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in data.items()}


def _read_batch(path: Path, spec: CifarSpec):
    import numpy as np
    import torch

    batch = _unpickle(path)
    for key in ("data", spec.label_key):
        if key not in batch:
            raise DataError(f"{path}: the pickle has no '{key}' entry")
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[spec.label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: 'data' or '{spec.label_key}' is not numeric ({exc})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' should be N x 3072 (32x32 RGB), found shape {tuple(data.shape)}")
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataError(f"{path}: labels must lie in 0..{spec.num_classes - 1}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.copy())


def _read_classes(path: Path, spec: CifarSpec) -> list[str]:
    meta = _unpickle(path)
    names = meta.get(spec.names_key)
    if names is None:
        raise DataError(f"{path}: the pickle has no '{spec.names_key}' entry")
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    if len(names) != spec.num_classes:
        raise DataError(f"{path}: expected {spec.num_classes} class names in '{spec.names_key}', found {len(names)}")
    return names


def download_target(dataset: str, root: str | Path | None) -> Path | None:
    """The folder that ``download: true`` would fill for ``dataset`` under ``root``: ``None``
    when every file is already there (or ``dataset`` is not a CIFAR set or has no root).
    Reads no data and downloads nothing (the studio asks it while the user edits)."""
    spec = SPECS.get(str(dataset))
    if spec is None or root is None or str(root).strip() == "":
        return None
    folder = _folder(Path(root).expanduser(), spec)
    return folder if _missing(folder, spec) else None


def load_cifar(dataset: str, root: str | Path | None, download: bool = False):
    """CIFAR-10 or CIFAR-100 (``dataset`` is ``"cifar10"`` or ``"cifar100"``) as a DatasetBundle.

    ``root`` is the folder that contains ``cifar-10-batches-py`` / ``cifar-100-python``, or
    that folder itself. With ``download`` the archive is fetched when files are missing.
    """
    import torch

    from engine.data.bundle import DatasetBundle

    spec = SPECS[dataset]
    if root is None or str(root).strip() == "":
        raise DataError(f"root: {dataset} needs a data folder (the one holding '{spec.folder}')")
    root = Path(root).expanduser()
    folder = _folder(root, spec)
    missing = _missing(folder, spec)
    if missing and download:
        _download(root, folder, spec)
        missing = _missing(folder, spec)
    if missing:
        hint = "set download: true to fetch it when online"
        if not folder.is_dir():
            raise DataError(f"{folder}: {spec.title} folder not found (expected torchvision's '{spec.folder}'); {hint}")
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{folder / missing[0]}: {spec.title} file is missing{more}; {hint}")

    parts = [_read_batch(folder / name, spec) for name in spec.train_files]
    train_images = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    train_labels = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    test_images, test_labels = _read_batch(folder / spec.test_file, spec)
    if train_images.shape[0] == 0 or test_images.shape[0] == 0:
        raise DataError(f"{folder}: the {spec.title} training or test files hold no images")
    return DatasetBundle(
        name=dataset,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        classes=_read_classes(folder / spec.meta_file, spec),
        mean=spec.mean,
        std=spec.std,
        natural=True,
        crop_padding=4,
    )
