"""Images at real resolution: random resized crop with centre-crop testing, aspect-keeping
decoding, ImageNet normalisation, and file-backed sets that never decode everything."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.data import load_dataset, make_loader
from engine.data.augment import center_crop, draw_resized_crops, generator, resized_crop
from engine.data.bundle import channel_stats
from engine.data.load import CENTRE_CROP_FRACTION, uses_resized_crop


def _folder(root, size=(30, 60), per_class=(5, 3), classes=("a", "b")):
    rng = np.random.default_rng(1)
    for split, n in zip(("train", "test"), per_class):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_resized_crop_boxes_fit_follow_the_ranges_and_repeat():
    boxes = draw_resized_crops(generator("aug", 0, 1, 2), 500, 40, 30)
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 30).all()
    area = (h * w).double() / (40 * 30)
    assert area.min() >= 0.08 - 0.02 and area.max() <= 1.0
    assert ((w.double() / h) > 0.7).all() and ((w.double() / h) < 1.45).all()
    assert torch.equal(boxes, draw_resized_crops(generator("aug", 0, 1, 2), 500, 40, 30))
    assert not torch.equal(boxes, draw_resized_crops(generator("aug", 0, 1, 3), 500, 40, 30))
    # an impossible ratio range: every image falls back to the clamped centre crop
    fallback = draw_resized_crops(generator("x"), 4, 10, 40, scale=(0.99, 1.0), ratio=(1.0, 1.0))
    assert fallback.tolist() == [[0, 15, 10, 10]] * 4


def test_resized_crop_resamples_the_box():
    x = torch.rand(2, 3, 16, 16)
    whole = resized_crop(x, torch.tensor([[0, 0, 16, 16], [0, 0, 16, 16]]), 16)
    torch.testing.assert_close(whole, x)  # the whole image at its own size is the image
    box = torch.tensor([[4, 2, 8, 8], [0, 8, 8, 8]])
    got = resized_crop(x, box, 16)
    for b, (t, l, h, w) in enumerate(box.tolist()):
        want = F.interpolate(x[b:b + 1, :, t:t + h, l:l + w], size=(16, 16), mode="bilinear", align_corners=False)
        # inside the box they agree; on its outermost output pixels grid_sample blends in the image's
        # pixels just outside the box where interpolate repeats the box's edge
        torch.testing.assert_close(got[b:b + 1, :, 1:-1, 1:-1], want[:, :, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert torch.equal(center_crop(torch.arange(36).view(1, 1, 6, 6), 2), torch.tensor([[[[14, 15], [20, 21]]]]))


def test_auto_picks_the_resized_crop_for_image_folders_of_64_pixels_or_more():
    assert uses_resized_crop("imagefolder", "auto", 64) and uses_resized_crop("imagefolder", "auto", 224)
    assert not uses_resized_crop("imagefolder", "auto", 32) and not uses_resized_crop("imagefolder", "auto", None)
    assert not uses_resized_crop("cifar10", "auto", None) and not uses_resized_crop("imagefolder", "crop_flip", 224)
    assert uses_resized_crop("demo", "resized_crop_flip", None)


def test_a_folder_for_the_resized_crop_keeps_the_aspect_ratio_and_tests_on_the_centre(tmp_path):
    root = tmp_path / "f"
    (root / "train" / "a").mkdir(parents=True)
    (root / "train" / "b").mkdir(parents=True)
    wide = np.zeros((20, 60, 3), dtype=np.uint8)
    wide[:, 20:40] = 255  # a white square in the middle third of a 3:1 image
    for cls in ("a", "b"):
        Image.fromarray(wide).save(root / "train" / cls / "0.png")
    (root / "test").mkdir()
    for cls in ("a", "b"):
        (root / "test" / cls).mkdir()
        Image.fromarray(wide).save(root / "test" / cls / "0.png")
    bundle = load_dataset("imagefolder", root=root, image_size=14, augment="auto", normalize="imagenet")
    assert not bundle.resized_crop  # 14 px: below the rule's 64
    bundle = load_dataset("imagefolder", root=root, image_size=14, augment="resized_crop_flip",
                          normalize="imagenet")
    stored = round(14 / CENTRE_CROP_FRACTION)
    assert bundle.resized_crop and bundle.view_size == 14 and bundle.image_size == (14, 14)
    assert tuple(bundle.train_images.shape[-2:]) == (stored, stored)
    assert bundle.train_images.float().mean() > 200  # the centre square is the white one, not a squeezed image
    assert bundle.mean == (0.485, 0.456, 0.406) and bundle.std == (0.229, 0.224, 0.225)
    test = make_loader(bundle, "test", batch_size=2, device="cpu", train=False)
    x, _, idx = next(iter(test.epoch(0)))
    mean = torch.tensor(bundle.mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std).view(1, 3, 1, 1)
    expected = (center_crop(bundle.test_images[idx], 14).float() / 255 - mean) / std
    torch.testing.assert_close(x, expected)


def test_resized_crop_batches_are_equal_streamed_or_in_memory_and_resume_exactly(tmp_path):
    root = _folder(tmp_path / "f")
    mem = load_dataset("imagefolder", root=root, image_size=16, augment="resized_crop_flip", in_memory="on")
    disk = load_dataset("imagefolder", root=root, image_size=16, augment="resized_crop_flip", in_memory="off")
    assert disk.streamed and disk.resized_crop and disk.view_size == 16
    loaders = [make_loader(b, "train", batch_size=3, device="cpu", train=True, flip=True, seed=4, workers=0)
               for b in (mem, disk)]
    first = [list(loader.epoch(1)) for loader in loaders]
    for (xa, ya, ia), (xb, yb, ib) in zip(*first):
        assert xa.shape[-2:] == (16, 16)
        torch.testing.assert_close(xa, xb, rtol=0, atol=2e-6)
        assert torch.equal(ya, yb) and torch.equal(ia, ib)
    resumed = list(loaders[0].epoch(1, start_step=2))
    for (xa, _, _), (xb, _, _) in zip(first[0][2:], resumed):
        assert torch.equal(xa, xb)  # resuming mid-epoch gives the very same crops
    assert not torch.equal(first[0][0][0], list(loaders[0].epoch(2))[0][0])  # another epoch, other crops


def test_a_streamed_folder_takes_its_statistics_a_chunk_at_a_time(tmp_path, monkeypatch):
    from engine.data import imagefolder

    root = _folder(tmp_path / "f", per_class=(9, 2))
    decoded = []
    original = imagefolder._decode_many

    def spy(paths, size, fit="stretch"):
        decoded.append(len(paths))
        return original(paths, size, fit)

    monkeypatch.setattr(imagefolder, "STATS_CHUNK", 4)
    monkeypatch.setattr(imagefolder, "_decode_many", spy)
    disk = load_dataset("imagefolder", root=root, image_size=12, in_memory="off")
    mem = load_dataset("imagefolder", root=root, image_size=12, in_memory="on")
    assert max(decoded) <= 4 and sum(decoded) >= 18  # every training image counted, never more than 4 at once
    for a, b in zip(disk.mean + disk.std, channel_stats(mem.train_images)[0] + channel_stats(mem.train_images)[1]):
        assert a == pytest.approx(b, abs=1e-12)
