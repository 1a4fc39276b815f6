"""Streamed image folders (engine.data.stream): the same batches as in memory, picked by size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import FileImages, StreamLoader, load_dataset, make_loader
from engine.data import imagefolder
from engine.data.loader import BatchLoader
from engine.errors import DataError

CLASSES = ("ant", "bee", "cow")


def _write(path: Path, rng: np.random.Generator, gray: bool, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if gray else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode="L" if gray else "RGB").save(path)


def _folder(root: Path, per_class=(9, 3), gray=False, seed=0) -> Path:
    """train/ and test/ of random-noise images of mixed sizes (so resizing matters), one gray
    image in an RGB set."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class):
        for c in CLASSES:
            for i in range(n):
                size = (20, 14) if i % 2 else (12, 12)
                _write(root / split / c / f"{i:02d}.png", rng, gray or (i == 4 and c == "bee"), size)
    return root


def _batches(loader, epoch, start_step=0):
    return [tuple(t.clone() for t in b) for b in loader.epoch(epoch, start_step=start_step)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (x, y, i), (u, v, j) in zip(a, b):
        assert torch.equal(i, j) and torch.equal(y, v)
        assert x.dtype == u.dtype == torch.float32 and torch.equal(x, u)


@pytest.fixture(scope="module")
def rgb_root(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("stream_rgb"))


def test_file_backed_bundle_matches_in_memory(rgb_root):
    mem = load_dataset("imagefolder", root=rgb_root, image_size=16, in_memory="on")
    st = load_dataset("imagefolder", root=rgb_root, image_size=16, in_memory="off")
    assert not mem.streamed and st.streamed
    assert isinstance(st.train_images, FileImages) and isinstance(st.test_images, FileImages)
    assert st.train_images.shape == mem.train_images.shape == (27, 3, 16, 16)
    assert st.in_channels == 3 and st.image_size == (16, 16) and st.classes == list(CLASSES)
    assert torch.equal(st.train_labels, mem.train_labels) and torch.equal(st.test_labels, mem.test_labels)
    assert (st.natural, st.crop_padding) == (mem.natural, mem.crop_padding) == (True, 2)
    # fewer training images than the statistics sample: the statistics are exact
    assert st.mean == pytest.approx(mem.mean, abs=1e-12) and st.std == pytest.approx(mem.std, abs=1e-12)
    # FileImages decodes like the in-memory loader (index, negative index, slice, index list)
    assert torch.equal(st.train_images[13], mem.train_images[13])
    assert torch.equal(st.train_images[-1], mem.train_images[-1])
    assert torch.equal(st.test_images[2:5], mem.test_images[2:5])
    assert torch.equal(st.train_images[[0, 26]], mem.train_images[[0, 26]])
    assert st.train_images.nbytes == mem.train_images.numel()
    with pytest.raises(IndexError):
        st.train_images[27]


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_equal_in_memory_batches(rgb_root, workers):
    mem = load_dataset("imagefolder", root=rgb_root, image_size=16, in_memory="on")
    st = load_dataset("imagefolder", root=rgb_root, image_size=16, in_memory="off")
    kw = dict(batch_size=5, device="cpu", train=True, crop_padding=2, flip=True, seed=3)
    a = make_loader(mem, "train", **kw)
    b = make_loader(st, "train", workers=workers, **kw)
    assert isinstance(a, BatchLoader) and isinstance(b, StreamLoader)
    assert len(a) == len(b) == 6
    for epoch in (0, 1, 0):  # same order and augmentation, epoch after epoch (workers persist)
        _assert_same(_batches(a, epoch), _batches(b, epoch))
    ta = make_loader(mem, "test", batch_size=4, device="cpu", train=False)
    tb = make_loader(st, "test", batch_size=4, device="cpu", train=False, workers=workers)
    _assert_same(_batches(ta, 0), _batches(tb, 0))
    b.close()
    _assert_same(_batches(a, 2), _batches(b, 2))  # a closed loader starts new workers
    b.close()
    tb.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_start_step_and_abandoned_epochs(rgb_root, workers):
    st = load_dataset("imagefolder", root=rgb_root, image_size=16, in_memory="off")
    loader = make_loader(st, "train", batch_size=4, device="cpu", train=True, crop_padding=2, flip=True, seed=9,
                         workers=workers, drop_last=True)
    assert len(loader) == 6
    full = _batches(loader, 4)
    assert len(full) == 6 and all(len(b[0]) == 4 for b in full)
    _assert_same(full[2:], _batches(loader, 4, start_step=2))
    assert _batches(loader, 4, start_step=6) == []
    # an epoch left half-way (a stopped run, a probe batch) does not disturb the next one
    it = loader.epoch(4)
    next(it)
    next(it)
    _assert_same(full[3:], _batches(loader, 4, start_step=3))
    with pytest.raises(RuntimeError, match="another epoch"):
        next(it)
    with pytest.raises(ValueError):
        loader.epoch(0, start_step=-1)
    loader.close()


def test_gray_folder_streams_one_channel(tmp_path):
    root = _folder(tmp_path, per_class=(5, 2), gray=True, seed=1)
    mem = load_dataset("imagefolder", root=root, image_size=8, in_memory="on")
    st = load_dataset("imagefolder", root=root, image_size=8, in_memory="off")
    assert st.in_channels == mem.in_channels == 1
    kw = dict(batch_size=4, device="cpu", train=True, crop_padding=1, flip=True, seed=0)
    _assert_same(_batches(make_loader(mem, "train", **kw), 1), _batches(make_loader(st, "train", **kw), 1))


def test_auto_streams_above_the_budget(rgb_root, monkeypatch):
    decoded = (27 + 9) * 3 * 16 * 16
    monkeypatch.setattr(imagefolder, "IN_MEMORY_BUDGET", decoded - 1)
    assert load_dataset("imagefolder", root=rgb_root, image_size=16).streamed  # in_memory defaults to auto
    assert not load_dataset("imagefolder", root=rgb_root, image_size=16, in_memory="on").streamed
    monkeypatch.setattr(imagefolder, "IN_MEMORY_BUDGET", decoded)
    assert not load_dataset("imagefolder", root=rgb_root, image_size=16, in_memory="auto").streamed
    assert load_dataset("imagefolder", root=rgb_root, image_size=16, in_memory="off").streamed
    # without the constant: the environment, then a share of the available RAM
    monkeypatch.setattr(imagefolder, "IN_MEMORY_BUDGET", None)
    monkeypatch.setenv("MGD_IN_MEMORY_BUDGET_MB", "0.01")
    assert imagefolder.in_memory_budget() == int(0.01 * 2**20)
    assert load_dataset("imagefolder", root=rgb_root, image_size=16).streamed
    monkeypatch.delenv("MGD_IN_MEMORY_BUDGET_MB")
    assert imagefolder.in_memory_budget() > 10 * 2**20
    assert not load_dataset("imagefolder", root=rgb_root, image_size=16).streamed
    with pytest.raises(DataError, match="in_memory"):
        load_dataset("imagefolder", root=rgb_root, in_memory="maybe")
    # the other data sets always fit and ignore the setting
    assert not load_dataset("demo", in_memory="off").streamed


def test_statistics_from_a_seeded_sample(rgb_root, monkeypatch):
    mem = load_dataset("imagefolder", root=rgb_root, image_size=16, in_memory="on")
    monkeypatch.setattr(imagefolder, "STATS_SAMPLE", 10)
    a = load_dataset("imagefolder", root=rgb_root, image_size=16, in_memory="off")
    b = load_dataset("imagefolder", root=rgb_root, image_size=16, in_memory="off")
    assert a.mean == b.mean and a.std == b.std  # the same sample every time
    assert a.mean != mem.mean
    assert a.mean == pytest.approx(mem.mean, abs=0.05) and a.std == pytest.approx(mem.std, abs=0.05)


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_file_while_streaming(tmp_path, monkeypatch, workers):
    root = _folder(tmp_path, per_class=(4, 2))
    (root / "train" / "cow" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")  # passes the scan
    monkeypatch.setattr(imagefolder, "STATS_SAMPLE", 1)  # the broken file is (almost surely) not sampled
    try:
        bundle = load_dataset("imagefolder", root=root, image_size=8, in_memory="off")
        loader = make_loader(bundle, "train", batch_size=4, device="cpu", train=True, workers=workers)
        list(loader.epoch(0))
    except DataError as exc:
        assert "zz_broken.png: cannot read the image" in str(exc)
    else:
        pytest.fail("no DataError for the unreadable file")


def test_stream_loader_rejects_bad_input(rgb_root):
    st = load_dataset("imagefolder", root=rgb_root, image_size=16, in_memory="off")
    kw = dict(batch_size=4, device="cpu", mean=st.mean, std=st.std, train=True)
    with pytest.raises(ValueError):
        StreamLoader(torch.zeros(27, 3, 16, 16, dtype=torch.uint8), st.train_labels, **kw)
    with pytest.raises(ValueError):
        StreamLoader(st.train_images, st.train_labels[:3], **kw)
    with pytest.raises(ValueError):
        StreamLoader(st.train_images, st.train_labels, **{**kw, "batch_size": 0})
    with pytest.raises(ValueError):
        StreamLoader(st.train_images, st.train_labels, workers=-1, **kw)
    with pytest.raises(ValueError):
        StreamLoader(st.train_images, st.train_labels, **{**kw, "mean": (0.5,), "std": (0.5,)})


@pytest.mark.e2e
def test_a_streamed_run_gives_the_numbers_of_an_in_memory_run(rgb_root, tmp_path, monkeypatch):
    """End to end: the engine picks the streamed loader for a file-backed bundle, and the three
    stages give exactly the in-memory numbers (the same batches, on the CPU)."""
    from engine.run import run_experiment
    from tests.engine.conftest import tiny_config

    used = {"stream": 0}
    original = StreamLoader._iterate

    def counting(self, epoch, start_step):
        used["stream"] += 1
        return original(self, epoch, start_step)

    monkeypatch.setattr(StreamLoader, "_iterate", counting)
    cfg = tiny_config(**{"data.dataset": "imagefolder", "data.root": str(rgb_root), "data.image_size": 16,
                         "data.batch_size": 8, "data.workers": 2, "evaluation.noise_levels": [0.0, 0.1],
                         "teacher.schedule.epochs": 1, "export.enabled": False})
    summaries = {}
    for name, budget in (("memory", 1 << 40), ("stream", 1)):
        monkeypatch.setattr(imagefolder, "IN_MEMORY_BUDGET", budget)
        before = used["stream"]
        summaries[name] = run_experiment(cfg, run_dir=tmp_path / name)
        assert summaries[name]["status"] == "finished"
        assert (used["stream"] > before) == (name == "stream")
    a, b = summaries["memory"], summaries["stream"]
    assert a["teacher"]["test_acc"] == b["teacher"]["test_acc"]
    assert [h["test_acc"] for h in a["heads"]] == [h["test_acc"] for h in b["heads"]]
    assert a["student"]["noise_curve"] == b["student"]["noise_curve"]
    assert a["student"]["output_noise"] == pytest.approx(b["student"]["output_noise"], abs=1e-9)
