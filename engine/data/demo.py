"""The bundled demo data set: the UCI 8x8 handwritten digits (1,797 images, 10 classes)."""

from __future__ import annotations

import gzip
from pathlib import Path

from engine.errors import DataError

DIGITS_FILE = "digits.csv.gz"
PIXELS = 64  # 8 x 8, values 0..16
TEST_EVERY = 5  # every 5th sample of each class (in file order) goes to the test split


def digits_path() -> Path:
    """Where the bundled digits file lives: the only place that knows the resource layout.

    Looks in the repository's ``resources/data`` first, then next to this package (where an
    installed package would keep it as package data).
    """
    candidates = [
        Path(__file__).resolve().parents[2] / "resources" / "data" / DIGITS_FILE,
        Path(__file__).resolve().parent / "resources" / DIGITS_FILE,
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(f"{candidates[0]}: the bundled demo data file is missing (reinstall MGD Studio)")


def read_digits(path: Path) -> tuple[list[list[int]], list[int]]:
    """Rows of 64 pixel values (0..16) and labels (0..9) from the gzipped CSV."""
    try:
        with gzip.open(path, "rt", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the demo data ({exc})") from None
    pixels: list[list[int]] = []
    labels: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            values = [int(v) for v in line.split(",")]
        except ValueError:
            raise DataError(f"{path}, line {number}: expected {PIXELS + 1} integers") from None
        if len(values) != PIXELS + 1:
            raise DataError(f"{path}, line {number}: expected {PIXELS + 1} values, found {len(values)}")
        *row, label = values
        if min(row) < 0 or max(row) > 16 or not 0 <= label <= 9:
            raise DataError(f"{path}, line {number}: expected pixels 0..16 and a label 0..9")
        pixels.append(row)
        labels.append(label)
    if not labels:
        raise DataError(f"{path}: the demo data file is empty")
    return pixels, labels


def load_demo():
    """The digits as a :class:`DatasetBundle` with a fixed, seed-independent stratified split."""
    import torch

    from engine.data.bundle import DatasetBundle, channel_stats

    pixels, labels = read_digits(digits_path())
    raw = torch.tensor(pixels, dtype=torch.int64)
    images = ((raw * 255 + 8) // 16).to(torch.uint8).reshape(-1, 1, 8, 8)  # round(x * 255 / 16)
    targets = torch.tensor(labels, dtype=torch.int64)

    seen = [0] * 10
    is_test = []
    for label in labels:
        seen[label] += 1
        is_test.append(seen[label] % TEST_EVERY == 0)
    test_mask = torch.tensor(is_test, dtype=torch.bool)

    train_images = images[~test_mask].contiguous()
    mean, std = channel_stats(train_images)
    return DatasetBundle(
        name="demo",
        train_images=train_images,
        train_labels=targets[~test_mask].contiguous(),
        test_images=images[test_mask].contiguous(),
        test_labels=targets[test_mask].contiguous(),
        classes=[str(i) for i in range(10)],
        mean=mean,
        std=std,
        natural=False,
        crop_padding=1,
    )
