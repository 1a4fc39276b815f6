"""Image folders: ``root/train/<class>/*`` + ``root/test/<class>/*`` (or ``val``), or one
folder of class sub-folders split into train and test with a seeded stratified fraction.

A folder is decoded into memory (uint8 tensors) unless its decoded size exceeds
:func:`in_memory_budget` (``in_memory="auto"``) or streaming is asked for
(``in_memory="off"``): the bundle then holds :class:`~engine.data.stream.FileImages`
(file names only) and its normalisation statistics come from a seeded sample of
:data:`STATS_SAMPLE` training images, decoded :data:`STATS_CHUNK` at a time (never the
whole sample at once).

For the random resized crop (``crop_fraction``), images keep their aspect ratio: the
shorter side is resized to ``image_size / crop_fraction`` and the centre square of that
side is kept; the loaders then cut ``image_size`` crops out of it (random resized crops
for training, the centre crop for testing: resize 256, crop 224 at 224 px).
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.data.images import read_image as _read_image
from engine.errors import DataError

#: ``in_memory="auto"`` streams a folder whose decoded uint8 size (counted as RGB) exceeds
#: this many bytes; ``None``: :data:`IN_MEMORY_FRACTION` of the RAM available at load time.
#: The environment variable ``MGD_IN_MEMORY_BUDGET_MB`` overrides it too (tests, benchmarks).
IN_MEMORY_BUDGET: int | None = None
#: Share of the available RAM an in-memory data set may take. Loading needs about twice the
#: decoded size for a moment (the decoded images and their stacked copy), and a GPU run
#: keeps a copy on the device as well, hence a quarter.
IN_MEMORY_FRACTION = 0.25
#: Training images decoded to compute mean/std (and to check the images) of a streamed set.
STATS_SAMPLE = 2048
#: Test images also decoded up front for a streamed set (to see whether the set is gray).
TEST_SAMPLE = 256
#: Images decoded at a time for the statistics of a streamed set
STATS_CHUNK = 128
IN_MEMORY_CHOICES = ("auto", "on", "off")

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DEFAULT_IMAGE_SIZE = 32


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _subdir(root: Path, name: str) -> Path | None:
    """``root/name`` matched case-insensitively (``Train`` is ``train``)."""
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() == name:
            return child
    return None


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((c for c in folder.iterdir() if c.is_dir() and _visible(c)), key=lambda c: c.name)


def _image_files(class_dir: Path) -> list[Path]:
    """Image files under a class folder (recursively), hidden files and folders skipped, sorted."""
    files = []
    for path in class_dir.rglob("*"):
        rel = path.relative_to(class_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(class_dir).as_posix())


def _check_contents(files: list[Path]) -> None:
    """Refuse (DataError naming it) the first file whose content is not an allowed image
    format, whatever its extension, before anything is decoded (see :mod:`engine.data.images`)."""
    from concurrent.futures import ThreadPoolExecutor

    from engine.data.images import check_image_file

    if len(files) < 64:
        for path in files:
            check_image_file(path)
        return
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(check_image_file, files, chunksize=256))


def _scan(folder: Path) -> tuple[list[str], list[list[Path]]]:
    """Class names (sorted sub-folder names) and each class's image files (their contents checked)."""
    classes = _class_dirs(folder)
    if not classes:
        raise DataError(f"{folder}: no class sub-folders (expected <class>/<image> files)")
    files = []
    for class_dir in classes:
        found = _image_files(class_dir)
        if not found:
            exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
            raise DataError(f"{class_dir}: class folder holds no images (expected {exts})")
        files.append(found)
    if len(classes) < 2:
        raise DataError(f"{folder}: found only one class folder ('{classes[0].name}'); at least 2 classes are needed")
    _check_contents([f for found in files for f in found])
    return [c.name for c in classes], files


def _split_indices(counts: list[int], test_fraction: float, seed: int) -> list[tuple[list[int], list[int]]]:
    """Per class, (train positions, test positions): a seeded stratified split, file order kept."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for n in counts:
        order = rng.permutation(n)
        n_test = 0 if n < 2 else min(n - 1, max(1, int(round(n * test_fraction))))
        test = sorted(int(i) for i in order[:n_test])
        chosen = set(test)
        out.append(([i for i in range(n) if i not in chosen], test))
    return out


def _stack(arrays: list, labels: list[int], gray: bool):
    import numpy as np
    import torch

    if gray:
        batch = np.stack(arrays)[:, None, :, :]
    else:
        batch = np.stack([a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays])
        batch = batch.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(batch)), torch.tensor(labels, dtype=torch.int64)


def _available_ram() -> int:
    """Bytes of RAM available now (MemAvailable on Linux), or a conservative 4 GiB if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 4 << 30


def in_memory_budget() -> int:
    """Bytes of decoded images ``in_memory="auto"`` keeps in memory (see :data:`IN_MEMORY_BUDGET`)."""
    if IN_MEMORY_BUDGET is not None:
        return int(IN_MEMORY_BUDGET)
    env = os.environ.get("MGD_IN_MEMORY_BUDGET_MB", "").strip()
    if env:
        try:
            return int(float(env) * 2**20)
        except ValueError:
            raise DataError(f"MGD_IN_MEMORY_BUDGET_MB: expected a number of MiB, got {env!r}") from None
    return int(_available_ram() * IN_MEMORY_FRACTION)


def _in_memory_choice(in_memory) -> str:
    if isinstance(in_memory, bool):
        return "on" if in_memory else "off"
    choice = str(in_memory).strip().lower() if in_memory is not None else "auto"
    if choice not in IN_MEMORY_CHOICES:
        raise DataError(f"in_memory: expected one of {', '.join(IN_MEMORY_CHOICES)}, got {in_memory!r}")
    return choice


def _decode_many(paths: list[Path], size: int, fit: str = "stretch") -> list:
    """``_read_image`` of many files on a thread pool (PIL releases the GIL while decoding)."""
    from concurrent.futures import ThreadPoolExecutor

    if len(paths) < 16:
        return [_read_image(p, size, fit) for p in paths]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda p: _read_image(p, size, fit), paths))


def _streamed_bundle(classes, train_items, test_items, size: int, split_seed: int, fit: str = "stretch"):
    """A file-backed bundle: file names, labels, and mean/std from a seeded sample of training
    images, decoded and counted a chunk at a time."""
    import numpy as np
    import torch

    from engine.data.bundle import DatasetBundle, channel_histogram, stats_from_histogram
    from engine.data.stream import FileImages

    rng = np.random.default_rng([int(split_seed), len(train_items), 7919])
    n_train = len(train_items)
    train_pick = sorted(rng.choice(n_train, size=min(STATS_SAMPLE, n_train), replace=False).tolist())
    test_pick = sorted(rng.choice(len(test_items), size=min(TEST_SAMPLE, len(test_items)), replace=False).tolist())
    counts = None  # RGB histograms (gray images repeated over the channels, as _stack does)
    gray = True
    for start in range(0, len(train_pick), STATS_CHUNK):
        chunk = _decode_many([train_items[i][0] for i in train_pick[start:start + STATS_CHUNK]], size, fit)
        gray = gray and all(g for _, g in chunk)
        images, _ = _stack([a for a, _ in chunk], [0] * len(chunk), False)
        part = channel_histogram(images)
        counts = part if counts is None else counts + part
    for start in range(0, len(test_pick), STATS_CHUNK):
        if not gray:
            break
        chunk = _decode_many([test_items[i][0] for i in test_pick[start:start + STATS_CHUNK]], size, fit)
        gray = all(g for _, g in chunk)
    channels = 1 if gray else 3
    mean, std = stats_from_histogram(counts[:1] if gray else counts)
    return DatasetBundle(
        name="imagefolder",
        train_images=FileImages([f for f, _ in train_items], size, channels, fit),
        train_labels=torch.tensor([c for _, c in train_items], dtype=torch.int64),
        test_images=FileImages([f for f, _ in test_items], size, channels, fit),
        test_labels=torch.tensor([c for _, c in test_items], dtype=torch.int64),
        classes=classes,
        mean=mean,
        std=std,
        natural=True,
        crop_padding=size // 8,
    )


def load_imagefolder(root: str | Path | None, image_size: int | None = None,
                     test_fraction: float = 0.2, split_seed: int = 0, in_memory: str = "auto",
                     crop_fraction: float | None = None):
    """An image-folder data set as a DatasetBundle (images resized to ``image_size`` square).

    ``in_memory``: ``"on"`` decodes every image into memory; ``"off"`` keeps them on disk
    (a file-backed bundle, streamed by :class:`~engine.data.stream.StreamLoader`); ``"auto"``
    streams when the decoded size exceeds :func:`in_memory_budget`.

    ``crop_fraction`` (e.g. 0.875): prepare the set for the random resized crop: images are
    stored at ``round(image_size / crop_fraction)`` with their aspect ratio kept (shorter side
    resized, centre square), ``bundle.view_size`` is ``image_size`` and ``bundle.resized_crop``
    is set (see :class:`~engine.data.loader.BatchAugment`).
    """
    from engine.data.bundle import DatasetBundle, channel_stats

    if root is None or str(root).strip() == "":
        raise DataError("root: imagefolder needs a data folder (with train/ and test/, or class sub-folders)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"image_size: expected a positive integer, got {image_size!r}")
    choice = _in_memory_choice(in_memory)
    view = None
    fit = "stretch"
    if crop_fraction:
        if not 0.0 < float(crop_fraction) <= 1.0:
            raise DataError(f"crop_fraction: expected a number in (0, 1], got {crop_fraction!r}")
        view, size, fit = size, max(size, round(size / float(crop_fraction))), "cover"

    train_dir = _subdir(root, "train")
    if train_dir is not None:
        test_dir = _subdir(root, "test") or _subdir(root, "val")
        if test_dir is None:
            raise DataError(f"{root}: has a 'train' folder but no 'test' or 'val' folder next to it")
        classes, train_files = _scan(train_dir)
        test_classes, test_files = _scan(test_dir)
        if test_classes != classes:
            only_train = sorted(set(classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(classes))
            raise DataError(
                f"{test_dir}: test classes differ from {train_dir.name} classes "
                f"(only in {train_dir.name}: {', '.join(only_train) or 'none'}; "
                f"only in {test_dir.name}: {', '.join(only_test) or 'none'})"
            )
        train_items = [(f, c) for c, fs in enumerate(train_files) for f in fs]
        test_items = [(f, c) for c, fs in enumerate(test_files) for f in fs]
    else:
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
                or not 0.0 < float(test_fraction) < 1.0:
            raise DataError(f"test_fraction: expected a number between 0 and 1 (exclusive), got {test_fraction!r}")
        classes, files = _scan(root)
        train_items, test_items = [], []
        for c, (tr, te) in enumerate(_split_indices([len(f) for f in files], float(test_fraction), split_seed)):
            train_items += [(files[c][i], c) for i in tr]
            test_items += [(files[c][i], c) for i in te]
        if not test_items:
            raise DataError(f"{root}: too few images to split off a test set (each class needs at least 2)")

    decoded_bytes = (len(train_items) + len(test_items)) * 3 * size * size  # as RGB: gray is not known yet
    if choice == "off" or (choice == "auto" and decoded_bytes > in_memory_budget()):
        bundle = _streamed_bundle(classes, train_items, test_items, size, split_seed, fit)
        if view is not None:
            bundle.resized_crop, bundle.view_size, bundle.crop_padding = True, view, 0
        return bundle

    train = [_read_image(f, size, fit) for f, _ in train_items]
    test = [_read_image(f, size, fit) for f, _ in test_items]
    gray = all(g for _, g in train) and all(g for _, g in test)
    train_images, train_labels = _stack([a for a, _ in train], [c for _, c in train_items], gray)
    test_images, test_labels = _stack([a for a, _ in test], [c for _, c in test_items], gray)
    mean, std = channel_stats(train_images)
    return DatasetBundle(
        name="imagefolder",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        classes=classes,
        mean=mean,
        std=std,
        natural=True,
        crop_padding=0 if view is not None else size // 8,
        resized_crop=view is not None,
        view_size=view,
    )
