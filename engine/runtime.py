"""Where and how a run computes: its device, speed settings, data and memory figures.

Small functions the run (:mod:`engine.run`), the runs panel and the benchmarks share.
"""

from __future__ import annotations

import platform
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from engine.config import ExperimentConfig
from engine.errors import InputError


def default_run_dir(cfg: ExperimentConfig, runs_root: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in cfg.name) or "run"
    path = Path(runs_root) / f"{stamp}-{safe}"
    n = 1
    while path.exists():
        n += 1
        path = Path(runs_root) / f"{stamp}-{safe}-{n}"
    return path


def select_device(name: str):
    """The torch device for a config's ``device`` and a description of it."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if not (name in ("cpu", "cuda", "mps") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise InputError(f"device: {name!r} is not allowed; choose auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device: {name!r} was asked for but no CUDA GPU is available; use auto or cpu")
        device = torch.device(name)
        index = device.index if device.index is not None else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"device: {name!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
        props = torch.cuda.get_device_properties(index)
        return torch.device("cuda", index), f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise InputError("device: 'mps' was asked for but no Apple GPU is available; use auto or cpu")
        return torch.device("mps"), "mps (Apple GPU)"
    return torch.device("cpu"), f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def augmentation(mode: str, bundle) -> tuple[int, bool]:
    """(crop padding, flip) for a configured augmentation mode and this data set."""
    if mode == "auto":
        return bundle.crop_padding, bundle.natural
    return (bundle.crop_padding if "crop" in mode else 0), ("flip" in mode)


_DATA_CACHE: dict | None = None  # while planning many runs of one data set (see data_cache)


def load_data(d):
    """The data set a config's data section names (``~`` in ``root`` expanded)."""
    from engine.data import load_dataset

    key = (d.dataset, d.root, d.download, d.image_size, d.test_fraction, d.in_memory, d.augment, d.normalize)
    if _DATA_CACHE is not None and key in _DATA_CACHE:
        return _DATA_CACHE[key]
    root = str(Path(d.root).expanduser()) if d.root else None
    bundle = load_dataset(d.dataset, root=root, download=d.download, image_size=d.image_size,
                          test_fraction=d.test_fraction, split_seed=0, in_memory=d.in_memory,
                          augment=d.augment, normalize=d.normalize)
    if _DATA_CACHE is not None:
        _DATA_CACHE[key] = bundle
    return bundle


@contextmanager
def data_cache(store: dict | None = None, keep: int | None = None):
    """Within the block, each data set is loaded once (planning a comparison's many runs).

    ``store``: a dict the caller keeps, so that the data sets stay loaded across blocks (the
    studio plans the set-up again after every edit); ``keep``: how many it holds at most."""
    global _DATA_CACHE
    outer = _DATA_CACHE
    _DATA_CACHE = store if store is not None else ({} if outer is None else outer)
    try:
        yield
    finally:
        if keep is not None:
            while len(_DATA_CACHE) > keep:
                _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        _DATA_CACHE = outer


def speed_settings(speed, device) -> tuple[str, bool]:
    """(precision, channels_last) for the config's speed options on this device."""
    import torch

    cuda = device.type == "cuda"
    if speed.amp == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    else:
        precision = {"off": "fp32"}.get(speed.amp, speed.amp)
    if precision == "fp16" and not cuda:
        raise InputError("speed.amp: fp16 needs a CUDA GPU (use bf16 or off on this device)")
    channels_last = cuda if speed.channels_last == "auto" else speed.channels_last == "on"
    return precision, channels_last


def peak_memory(device) -> dict[str, float]:
    """Peak memory so far: CUDA max allocated on a GPU, the process's peak resident set size otherwise."""
    import resource

    import torch

    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
