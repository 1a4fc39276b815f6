"""One place that picks the loader for a data set: in memory (BatchLoader) or streamed."""

from __future__ import annotations


def make_loader(bundle, split: str, *, batch_size: int, device, train: bool, crop_padding: int = 0,
                flip: bool = False, seed: int = 0, drop_last: bool = False, workers: int = 0):
    """A loader over ``split`` ("train" or "test") of ``bundle`` with BatchLoader's interface:
    ``len(loader)`` batches per epoch and ``loader.epoch(e, start_step)`` yielding ``(x, y, idx)``.

    A file-backed bundle (``bundle.streamed``) gets a :class:`~engine.data.stream.StreamLoader`
    whose ``workers`` processes decode the images; the batches are the ones a BatchLoader
    would give over the same decoded images. An in-memory bundle ignores ``workers``.

    A bundle prepared for the random resized crop (``bundle.resized_crop``, images stored larger
    than ``bundle.view_size``) gets it for training and the centre crop for testing.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images = bundle.train_images if split == "train" else bundle.test_images
    labels = bundle.train_labels if split == "train" else bundle.test_labels
    common = dict(batch_size=batch_size, device=device, mean=bundle.mean, std=bundle.std, train=train,
                  crop_padding=crop_padding, flip=flip, seed=seed, drop_last=drop_last,
                  resized_crop=bool(getattr(bundle, "resized_crop", False)),
                  output_size=getattr(bundle, "view_size", None))
    if getattr(images, "streamed", False):
        from engine.data.stream import StreamLoader

        return StreamLoader(images, labels, workers=workers, **common)
    from engine.data.loader import BatchLoader

    return BatchLoader(images, labels, **common)
