"""Data pipeline: the engine's in-memory batches against the usual torchvision DataLoader.

On ``--images`` random 32x32 RGB images made on the spot (CIFAR-like), one training epoch
of resnet20 (forward, backward, SGD step) fed by

* ``engine in-memory``: ``engine.data.BatchLoader``: the uint8 set resident on the device,
  random crop with 4-pixel zero padding, flip and normalisation done on whole batches there;
* ``torchvision DataLoader``: a Dataset of uint8 arrays turned into PIL images one by one with
  ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize``,
  ``--workers`` processes (4 where there are cores, as the authors ran it), shuffled, new
  workers every epoch (the usual, non-persistent setting);
* ``engine streamed`` (for reference, issue 5): the same images written as PNG files and read
  by ``engine.data.StreamLoader`` (decoding in worker processes, augmentation on the device);
* ``model alone``: the same number of steps on one fixed batch: the compute floor, so that
  ``epoch - floor`` is what each pipeline costs the epoch.

The sides take turns epoch by epoch (the order reversed every other round); the script
reports median epoch times, the ratio in-memory / DataLoader (target <= 0.33), and the
pipelines alone (batches per second, no model).

    .venv/bin/python benchmarks/data_pipeline.py [--quick] [--device cuda]
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path

from _common import (CIFAR_MEAN, CIFAR_STD, base_parser, build, emit_json, environment, interleave, setup, summary,
                     sync, table)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TARGET = 0.33


class PilDataset(torch.utils.data.Dataset):
    """CIFAR as torchvision holds it: HWC uint8 arrays, a PIL image made per item, then transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--rounds", type=int, default=3, help="epochs per side (taking turns)")
    parser.add_argument("--workers", type=int, default=-1, help="DataLoader workers (-1: 4, or the CPU count if lower)")
    parser.add_argument("--no-stream", action="store_true", help="leave out the streamed (PNG files) side")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 640, 2
    device = setup(args)
    workers = args.workers if args.workers >= 0 else min(4, os.cpu_count() or 1)
    import torchvision.transforms as T

    from engine.data import BatchLoader, load_dataset, make_loader

    rng = np.random.default_rng(args.seed)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, args.classes, args.images).astype(np.int64)

    mem = BatchLoader(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels),
                      batch_size=args.batch, device=device, mean=CIFAR_MEAN, std=CIFAR_STD, train=True,
                      crop_padding=4, flip=True, seed=args.seed)
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    dl = torch.utils.data.DataLoader(PilDataset(images, labels, transform), batch_size=args.batch, shuffle=True,
                                     num_workers=workers, pin_memory=device.type == "cuda")
    loaders = {"engine in-memory": "mem", "torchvision DataLoader": "dl"}
    tmp = None
    stream = None
    if not args.no_stream:
        from PIL import Image

        tmp = tempfile.TemporaryDirectory(prefix="mgd-stream-")
        root = Path(tmp.name)
        t0 = time.perf_counter()
        first_of_class = sorted({int(c): i for i, c in reversed(list(enumerate(labels)))}.values())
        for split, picks in (("train", range(args.images)), ("test", first_of_class)):  # test: one per class
            for i in picks:
                folder = root / split / f"c{labels[i]:03d}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i]).save(folder / f"{i:06d}.png")
        bundle = load_dataset("imagefolder", root=root, image_size=32, in_memory="off")
        stream = make_loader(bundle, "train", batch_size=args.batch, device=device, train=True, crop_padding=4,
                             flip=True, seed=args.seed, workers=workers)
        print(f"(wrote {args.images} PNG files for the streamed side in {time.perf_counter() - t0:.1f} s)")
        loaders["engine streamed"] = "stream"
    loaders["model alone (fixed batch)"] = "none"
    steps = -(-args.images // args.batch)
    g = torch.Generator().manual_seed(args.seed)
    fixed = (torch.randn(args.batch, 3, 32, 32, generator=g).to(device),
             torch.randint(0, args.classes, (args.batch,), generator=g).to(device))

    base = build(args.model, args.classes, device, seed=args.seed)
    models = {name: copy.deepcopy(base) for name in loaders}
    optims = {name: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
              for name, m in models.items()}
    epochs_done = {name: 0 for name in loaders}

    def batches(kind: str, epoch: int):
        if kind == "mem":
            for x, y, _ in mem.epoch(epoch):
                yield x, y
        elif kind == "stream":
            for x, y, _ in stream.epoch(epoch):
                yield x, y
        elif kind == "none":
            for _ in range(steps):
                yield fixed
        else:
            for x, y in dl:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def train_epoch(name: str):
        model, opt = models[name], optims[name]
        model.train()
        sync(device)
        t0 = time.perf_counter()
        for x, y in batches(loaders[name], epochs_done[name]):
            loss = F.cross_entropy(model(x)[0], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        epochs_done[name] += 1
        return time.perf_counter() - t0

    def pipeline_epoch(name: str):
        sync(device)
        t0 = time.perf_counter()
        n = 0
        for x, _ in batches(loaders[name], 100 + epochs_done[name]):
            n += 1
        sync(device)
        epochs_done[name] += 1
        return n / (time.perf_counter() - t0)

    # warm-up: a few steps per model, one pass of each pipeline (starts the streamed workers)
    for name in loaders:
        for i, (x, y) in enumerate(batches(loaders[name], 99)):
            if i == 2:
                break
            F.cross_entropy(models[name](x)[0], y).backward()
    feeding = [name for name in loaders if loaders[name] != "none"]
    pipe = interleave({name: (lambda n=name: pipeline_epoch(n)) for name in feeding}, max(5, 2 * args.rounds))
    epochs = interleave({name: (lambda n=name: train_epoch(n)) for name in loaders}, args.rounds)
    if tmp is not None:
        stream.close()
        tmp.cleanup()

    env = environment(device)
    ep = {name: summary(v) for name, v in epochs.items()}
    bps = {name: summary(v) for name, v in pipe.items()}
    ref = ep["torchvision DataLoader"]["median"]
    floor = ep["model alone (fixed batch)"]["median"]
    print(f"data pipeline: {args.images} random 32x32 images, batch {args.batch} ({steps} steps), {args.model}, "
          f"DataLoader workers {workers}; device {env['device']}, torch {env['torch']}, "
          f"{env['torch_threads']} threads ({env['cpu_count']} CPUs, load {env['load_average_1min']})")
    print(table(["pipeline", "epoch s (median)", "epoch s (min)", "epochs", "/ DataLoader", "- model alone s",
                 "alone: batches/s", "alone: images/s"],
                [[name, ep[name]["median"], min(epochs[name]), ep[name]["n"], ep[name]["median"] / ref,
                  ep[name]["median"] - floor, bps[name]["median"] if name in bps else None,
                  bps[name]["median"] * args.batch if name in bps else None] for name in loaders]))
    ratio = ep["engine in-memory"]["median"] / ref
    pipe_ratio = bps["torchvision DataLoader"]["median"] / bps["engine in-memory"]["median"]
    print(f"epoch in-memory / DataLoader = {ratio:.3f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'missed'}); "
          f"pipelines alone: in-memory time / DataLoader time = {pipe_ratio:.4f}")
    emit_json({"benchmark": "data_pipeline", "images": args.images, "batch": args.batch, "model": args.model,
               "workers": workers, "epoch_s": {n: s["median"] for n, s in ep.items()},
               "epoch_s_all": epochs,
               "pipeline_batches_per_s": {n: s["median"] for n, s in bps.items()}, "ratio": ratio,
               "pipeline_ratio": pipe_ratio, "target": TARGET, "met": ratio <= TARGET, "env": env})


if __name__ == "__main__":
    main()
