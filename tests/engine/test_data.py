"""Tests of the data layer (engine.data): loaders on small fixtures and the BatchLoader."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.data import DATASETS, BatchLoader, DatasetBundle, load_dataset
from engine.data.augment import draw_augmentation, generator, random_crop, random_flip
from engine.errors import DataError, InputError

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- package


def test_datasets_import_does_not_need_torch():
    code = "import sys; from engine.data import DATASETS; print(DATASETS); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    lines = out.stdout.split()
    assert "demo" in out.stdout and lines[-1] == "False"
    assert DATASETS == ("demo", "cifar10", "cifar100", "imagefolder")


def test_unknown_dataset():
    with pytest.raises(DataError, match="dataset: unknown data set 'mnist'"):
        load_dataset("mnist")
    assert issubclass(DataError, InputError)


# ---------------------------------------------------------------- demo


def test_demo_loads():
    b = load_dataset("demo")
    assert isinstance(b, DatasetBundle) and b.name == "demo"
    assert b.train_images.dtype == torch.uint8 and b.test_images.dtype == torch.uint8
    assert b.train_labels.dtype == torch.int64 and b.test_labels.dtype == torch.int64
    assert b.train_images.shape[1:] == (1, 8, 8) and b.test_images.shape[1:] == (1, 8, 8)
    assert len(b.train_images) + len(b.test_images) == 1797
    assert (len(b.train_images), len(b.test_images)) == (1442, 355)
    assert len(b.train_labels) == len(b.train_images) and len(b.test_labels) == len(b.test_images)
    assert b.classes == [str(i) for i in range(10)]
    assert b.num_classes == 10 and b.in_channels == 1 and b.image_size == (8, 8)
    assert set(b.train_labels.tolist()) == set(range(10)) == set(b.test_labels.tolist())
    assert int(b.train_images.max()) == 255 and int(b.train_images.min()) == 0
    assert b.natural is False and b.crop_padding == 1
    x = b.train_images.double() / 255
    assert b.mean[0] == pytest.approx(float(x.mean()), abs=1e-9)
    assert b.std[0] == pytest.approx(float(x.std(unbiased=False)), abs=1e-9)
    # the split does not depend on any seed
    again = load_dataset("demo", split_seed=123)
    assert torch.equal(again.test_images, b.test_images) and torch.equal(again.train_labels, b.train_labels)


# ---------------------------------------------------------------- CIFAR fixtures


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def _cifar_batch(n: int, num_classes: int, label_key: str, rng: np.random.Generator) -> dict:
    batch = {
        "batch_label": "fixture",
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, num_classes, size=n)],
        "filenames": [f"img_{i}.png" for i in range(n)],
    }
    if label_key == "fine_labels":
        batch["coarse_labels"] = [v // 5 for v in batch[label_key]]
    return batch


def make_cifar10(root: Path) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = _cifar_batch(3, 10, "labels", rng)
        _dump(folder / name, batches[name])
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 3, "num_vis": 3072})
    return batches


def make_cifar100(root: Path) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {"train": _cifar_batch(7, 100, "fine_labels", rng), "test": _cifar_batch(4, 100, "fine_labels", rng)}
    for name, batch in batches.items():
        _dump(folder / name, batch)
    _dump(folder / "meta", {"fine_label_names": [f"class{i:02d}" for i in range(100)],
                            "coarse_label_names": [f"super{i:02d}" for i in range(20)]})
    return batches


def test_cifar10_reader(tmp_path):
    batches = make_cifar10(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        b = load_dataset("cifar10", root=str(root))
        assert b.train_images.shape == (15, 3, 32, 32) and b.test_images.shape == (3, 3, 32, 32)
        assert b.train_images.dtype == torch.uint8 and b.train_labels.dtype == torch.int64
        assert b.classes[0] == "airplane" and b.num_classes == 10 and b.image_size == (32, 32)
        assert b.natural is True and b.crop_padding == 4
        assert b.mean == (0.4914, 0.4822, 0.4465) and b.std == (0.2470, 0.2435, 0.2616)
        # layout: row of 3072 = 1024 red, 1024 green, 1024 blue, each row-major
        first = batches["data_batch_1"]["data"][0]
        assert torch.equal(b.train_images[0, 1, 2, 5], torch.tensor(int(first[1024 + 2 * 32 + 5]), dtype=torch.uint8))
        assert torch.equal(b.train_images[:3].reshape(3, -1), torch.from_numpy(batches["data_batch_1"]["data"]))
        last = batches["data_batch_5"]
        assert torch.equal(b.train_images[12:].reshape(3, -1), torch.from_numpy(last["data"]))
        assert b.train_labels[12:].tolist() == last["labels"]
        assert b.test_labels.tolist() == batches["test_batch"]["labels"]


def test_cifar100_reader(tmp_path):
    batches = make_cifar100(tmp_path)
    b = load_dataset("cifar100", root=tmp_path)
    assert b.train_images.shape == (7, 3, 32, 32) and b.test_images.shape == (4, 3, 32, 32)
    assert b.train_labels.tolist() == batches["train"]["fine_labels"]
    assert b.test_labels.tolist() == batches["test"]["fine_labels"]
    assert torch.equal(b.test_images.reshape(4, -1), torch.from_numpy(batches["test"]["data"]))
    assert b.num_classes == 100 and b.classes[7] == "class07"
    assert b.mean == (0.5071, 0.4865, 0.4409) and b.std == (0.2673, 0.2564, 0.2762)


def test_cifar_missing_folder_and_file(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*not found.*download: true"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DataError, match=r"cifar-100-python.*not found.*download: true"):
        load_dataset("cifar100", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="root"):
        load_dataset("cifar10", root=None)
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"data_batch_3: CIFAR-10 file is missing; set download: true") as info:
        load_dataset("cifar10", root=tmp_path)
    assert "\n" not in str(info.value)


def test_cifar_corrupt_pickle(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch: not a readable"):
        load_dataset("cifar10", root=tmp_path)


# ---------------------------------------------------------------- image folders


def _save(path: Path, mode: str, value: int, size=(10, 6), fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, value // 2)
    Image.new(mode, size, color).save(path, format=fmt)


def test_imagefolder_with_split_folders_rgb(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for c, name in enumerate(["cat", "dog"]):
            for i in range(n):
                _save(tmp_path / split / name / f"{i}.PNG", "RGB", 40 * c + i)
        _save(tmp_path / split / "dog" / "gray.jpg", "L", 200)  # one gray image: still RGB
    (tmp_path / "train" / "cat" / ".hidden.png").write_bytes(b"junk")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    b = load_dataset("imagefolder", root=tmp_path, image_size=16)
    assert b.classes == ["cat", "dog"]
    assert b.train_images.shape == (7, 3, 16, 16) and b.test_images.shape == (5, 3, 16, 16)
    assert b.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert b.natural is True and b.crop_padding == 2 and len(b.mean) == 3
    # a solid colour survives resizing; gray images become 3 equal channels
    assert b.train_images[0, :, 5, 5].tolist() == [0, 255, 0]
    assert b.train_images[6, :, 0, 0].tolist() == [200, 200, 200]  # dog/gray.jpg sorts last
    x = b.train_images.double() / 255
    assert b.mean == pytest.approx(tuple(x.mean(dim=(0, 2, 3)).tolist()))
    assert b.std == pytest.approx(tuple(x.std(dim=(0, 2, 3), unbiased=False).tolist()))


def test_imagefolder_without_split_grayscale(tmp_path):
    for c, name in enumerate(["a", "b", "c"]):
        for i in range(10):
            _save(tmp_path / name / f"{i:02d}.{('bmp', 'gif', 'tif', 'png')[i % 4]}", "L", 20 * c + i)
    b = load_dataset("imagefolder", root=tmp_path, test_fraction=0.2, split_seed=3)
    assert b.classes == ["a", "b", "c"] and b.in_channels == 1 and b.image_size == (32, 32)
    assert b.crop_padding == 4
    assert (len(b.train_images), len(b.test_images)) == (24, 6)
    assert b.test_labels.tolist() == [0, 0, 1, 1, 2, 2]
    pixels = set(b.train_images[:, 0, 0, 0].tolist()) | set(b.test_images[:, 0, 0, 0].tolist())
    assert pixels == {20 * c + i for c in range(3) for i in range(10)}
    same = load_dataset("imagefolder", root=tmp_path, test_fraction=0.2, split_seed=3)
    assert torch.equal(same.test_images, b.test_images)
    other = load_dataset("imagefolder", root=tmp_path, test_fraction=0.2, split_seed=4)
    assert not torch.equal(other.test_images, b.test_images)


def test_imagefolder_mismatched_classes(tmp_path):
    for split, names in (("train", ["cat", "dog"]), ("test", ["cat", "bird"])):
        for name in names:
            _save(tmp_path / split / name / "0.png", "RGB", 10)
    with pytest.raises(DataError, match=r"test classes differ.*only in train: dog; only in test: bird"):
        load_dataset("imagefolder", root=tmp_path)


def test_imagefolder_unreadable_image(tmp_path):
    for name in ["x", "y"]:
        _save(tmp_path / name / "0.png", "RGB", 10)
        _save(tmp_path / name / "1.png", "RGB", 20)
    (tmp_path / "y" / "broken.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: not an image in an allowed format"):
        load_dataset("imagefolder", root=tmp_path)
    (tmp_path / "y" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: cannot read the image"):
        load_dataset("imagefolder", root=tmp_path)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset("imagefolder", root=tmp_path / "missing")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset("imagefolder", root=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: class folder holds no images"):
        load_dataset("imagefolder", root=tmp_path)
    _save(tmp_path / "empty" / "0.png", "RGB", 10)
    with pytest.raises(DataError, match="at least 2 classes"):
        load_dataset("imagefolder", root=tmp_path)
    _save(tmp_path / "other" / "0.png", "RGB", 10)
    with pytest.raises(DataError, match="test_fraction"):
        load_dataset("imagefolder", root=tmp_path, test_fraction=1.5)
    with pytest.raises(DataError, match="image_size"):
        load_dataset("imagefolder", root=tmp_path, image_size=0)


# ---------------------------------------------------------------- BatchLoader


def _images(n=37, c=3, h=6, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8), torch.arange(n) % 4


MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _loader(images, labels, **kw):
    args = dict(batch_size=8, device="cpu", mean=MEAN[: images.shape[1]], std=STD[: images.shape[1]], train=True)
    args.update(kw)
    return BatchLoader(images, labels, **args)


def _denorm(x, mean=MEAN, std=STD):
    m = torch.tensor(mean[: x.shape[1]]).view(1, -1, 1, 1)
    s = torch.tensor(std[: x.shape[1]]).view(1, -1, 1, 1)
    return x * s + m


def test_loader_shapes_and_normalisation():
    images, labels = _images()
    loader = _loader(images, labels, train=False, crop_padding=2, flip=True)
    assert len(loader) == 5
    batches = list(loader.epoch(0))
    assert [len(b[0]) for b in batches] == [8, 8, 8, 8, 5]
    for x, y, idx in batches:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and idx.dtype == torch.int64
        assert x.shape[1:] == (3, 6, 5)
        assert torch.equal(y, labels[idx])
    x = torch.cat([b[0] for b in batches])
    idx = torch.cat([b[2] for b in batches])
    assert torch.equal(idx, torch.arange(37))  # test loaders keep the order
    restored = (_denorm(x) * 255).round().to(torch.uint8)
    assert torch.equal(restored, images)


def test_loader_normalised_statistics():
    b = load_dataset("demo")
    loader = BatchLoader(b.train_images, b.train_labels, batch_size=2000, device="cpu",
                         mean=b.mean, std=b.std, train=False)
    (x, _, _), = list(loader.epoch(0))
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(x.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)


def _reference_crop(img: torch.Tensor, top: int, left: int, p: int) -> torch.Tensor:
    h, w = img.shape[1:]
    return F.pad(img, (p, p, p, p))[:, top:top + h, left:left + w]


def test_random_crop_matches_reference():
    x = torch.rand(20, 3, 7, 9)
    for p in (1, 3):
        offsets = torch.randint(0, 2 * p + 1, (20, 2), generator=torch.Generator().manual_seed(p))
        out = random_crop(x, offsets, p)
        ref = torch.stack([_reference_crop(x[i], int(t), int(l), p) for i, (t, l) in enumerate(offsets)])
        assert torch.equal(out, ref)
    assert random_crop(x, None, 0) is x


def test_random_crop_matches_torchvision_pad_and_crop():
    tvf = pytest.importorskip("torchvision.transforms.functional")
    x = torch.rand(12, 3, 8, 8)
    p = 4
    offsets, _ = draw_augmentation(generator("t", 0), 12, p, False)
    assert int(offsets.min()) >= 0 and int(offsets.max()) <= 2 * p  # RandomCrop's range for size 8, padding 4
    out = random_crop(x, offsets, p)
    for i, (top, left) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], tvf.crop(tvf.pad(x[i], [p]), top, left, 8, 8))


def test_loader_crop_is_shifted_window_of_padded_image():
    images, labels = _images(n=64)
    p = 2
    loader = _loader(images, labels, crop_padding=p, flip=False, seed=5, batch_size=16)
    seen_offsets = set()
    for step, (x, _, idx) in enumerate(loader.epoch(3)):
        got = _denorm(x)
        offsets, flips = draw_augmentation(generator("aug", 5, 3, step), len(idx), p, False)
        assert flips is None
        for j, i in enumerate(idx.tolist()):
            top, left = offsets[j].tolist()
            seen_offsets.add((top, left))
            ref = _reference_crop(images[i].float() / 255, top, left, p)
            assert torch.allclose(got[j], ref, atol=1e-5)
    # the offsets cover the range [0, 2p] in both directions
    assert {t for t, _ in seen_offsets} == set(range(2 * p + 1)) == {l for _, l in seen_offsets}


def test_loader_crop_without_knowing_offsets():
    images, labels = _images(n=16)
    p = 1
    x, _, idx = next(_loader(images, labels, crop_padding=p, batch_size=16, seed=9).epoch(0))
    got = (_denorm(x) * 255).round()
    for j, i in enumerate(idx.tolist()):
        windows = [_reference_crop(images[i].float(), t, l, p) for t in range(3) for l in range(3)]
        assert any(torch.equal(got[j], w) for w in windows)


def test_flip():
    x = torch.rand(6, 2, 3, 4)
    flips = torch.tensor([True, False, True, False, False, True])
    out = random_flip(x, flips)
    for i in range(6):
        assert torch.equal(out[i], x[i].flip(-1) if flips[i] else x[i])
    images, labels = _images(n=200)
    loader = _loader(images, labels, flip=True, batch_size=50, seed=2)
    flipped = 0
    for step, (xb, _, idx) in enumerate(loader.epoch(0)):
        got = (_denorm(xb) * 255).round()
        _, expected = draw_augmentation(generator("aug", 2, 0, step), len(idx), 0, True)
        for j, i in enumerate(idx.tolist()):
            src = images[i].float()
            assert torch.equal(got[j], src.flip(-1) if expected[j] else src)
        flipped += int(expected.sum())
    assert 60 < flipped < 140  # probability 0.5


def test_start_step_resumes_exactly():
    images, labels = _images(n=50)
    loader = _loader(images, labels, crop_padding=2, flip=True, seed=11, batch_size=7)
    full = list(loader.epoch(4))
    resumed = list(loader.epoch(4, start_step=3))
    assert len(resumed) == len(full) - 3
    for a, b in zip(full[3:], resumed):
        for u, v in zip(a, b):
            assert torch.equal(u, v)
    assert list(loader.epoch(4, start_step=len(loader))) == []


def test_determinism_across_loaders():
    images, labels = _images(n=40)
    kw = dict(crop_padding=2, flip=True, batch_size=9)
    a = list(_loader(images, labels, seed=1, **kw).epoch(2))
    b = list(_loader(images.clone(), labels.clone(), seed=1, **kw).epoch(2))
    for u, v in zip(a, b):
        assert all(torch.equal(s, t) for s, t in zip(u, v))
    c = list(_loader(images, labels, seed=2, **kw).epoch(2))
    assert not torch.equal(a[0][2], c[0][2])
    d = list(_loader(images, labels, seed=1, **kw).epoch(3))
    assert not torch.equal(torch.cat([t[2] for t in a]), torch.cat([t[2] for t in d]))


def test_every_sample_once_per_epoch():
    images, labels = _images(n=45)
    loader = _loader(images, labels, crop_padding=1, flip=True, batch_size=8)
    for e in range(3):
        idx = torch.cat([b[2] for b in loader.epoch(e)])
        assert not torch.equal(idx, torch.arange(45))  # shuffled
        assert torch.equal(idx.sort().values, torch.arange(45))


def test_drop_last():
    images, labels = _images(n=45)
    loader = _loader(images, labels, batch_size=8, drop_last=True)
    assert len(loader) == 5
    batches = list(loader.epoch(0))
    assert len(batches) == 5 and all(len(b[0]) == 8 for b in batches)
    assert len(set(torch.cat([b[2] for b in batches]).tolist())) == 40
    assert len(_loader(images, labels, batch_size=8)) == 6
    assert len(_loader(images, labels, batch_size=50, drop_last=True)) == 0


def test_loader_rejects_bad_input():
    images, labels = _images(n=10)
    with pytest.raises(ValueError):
        _loader(images.float(), labels)
    with pytest.raises(ValueError):
        _loader(images, labels[:5])
    with pytest.raises(ValueError):
        _loader(images, labels, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError):
        _loader(images, labels).epoch(0, start_step=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_batches_on_cuda_and_cpu():
    images, labels = _images(n=100)
    kw = dict(crop_padding=3, flip=True, batch_size=32, seed=7)
    cpu = list(_loader(images, labels, **kw).epoch(1))
    gpu = list(_loader(images, labels, device="cuda", **kw).epoch(1))
    for (x, y, i), (xg, yg, ig) in zip(cpu, gpu):
        assert xg.device.type == "cuda" and yg.device.type == "cuda" and ig.device.type == "cuda"
        assert torch.equal(i, ig.cpu()) and torch.equal(y, yg.cpu())
        assert torch.allclose(x, xg.cpu(), atol=1e-6)
