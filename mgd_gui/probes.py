"""Look-ups that need torch, run in the background thread (:mod:`mgd_gui.tasks`, the look-ups lane).

Plain functions without Qt: each returns plain data (numbers, strings, numpy arrays).
"""

from __future__ import annotations

from typing import Any


def probe_devices() -> list[tuple[str, str]]:
    """``[(config value, label)]`` of the devices torch can use here: GPUs with name and memory."""
    import torch

    found: list[tuple[str, str]] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            found.append((f"cuda:{i}", f"cuda:{i}  {props.name} ({props.total_memory / 2**30:.0f} GiB)"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append(("mps", "mps  Apple GPU"))
    return found


def warm_up() -> None:
    """Import the engine's training modules now, in the background, rather than when the
    user presses Run (an import holds the interpreter lock, and the window would stutter)."""
    import engine.comparison  # noqa: F401 - the queue's model (it loads the driver, hence torch)
    import engine.evaluate  # noqa: F401
    import engine.run  # noqa: F401
    import engine.stages  # noqa: F401
    import engine.trainer  # noqa: F401


def pending_download(data: dict) -> str | None:
    """What a run would download first (``download`` ticked, files missing), in words; None
    when nothing is to be downloaded. The studio's look-ups never download themselves."""
    from engine.data.cifar import SPECS, download_target

    if not data.get("download"):
        return None
    target = download_target(data.get("dataset"), data.get("root"))
    if target is None:
        return None
    title = SPECS[data["dataset"]].title
    return (f"{title} is not downloaded yet: Download is ticked, so the run fetches it into {target} "
            "before training (the other checks of the set-up wait for it)")


def dataset_overview(data: dict, samples: int = 16) -> dict[str, Any]:
    """Class names, sizes and a few training images (uint8 H x W x C numpy arrays) of a data set;
    ``{"pending_download": text}`` when the run would download it first."""
    from engine.data import load_dataset

    pending = pending_download(data)
    if pending is not None:
        return {"pending_download": pending}

    bundle = load_dataset(data.get("dataset"), root=data.get("root"), download=False,
                          image_size=data.get("image_size"), test_fraction=data.get("test_fraction", 0.2),
                          split_seed=0)
    labels = bundle.train_labels
    # one image of each class first, then more in file order, so the grid shows the variety
    picked: list[int] = []
    seen: set[int] = set()
    for i, label in enumerate(labels.tolist()):
        if label not in seen:
            seen.add(label)
            picked.append(i)
        if len(picked) >= samples:
            break
    i = 0
    while len(picked) < min(samples, len(labels)):
        if i not in picked:
            picked.append(i)
        i += 1
    images = [bundle.train_images[i].permute(1, 2, 0).contiguous().numpy() for i in picked]
    return {
        "name": bundle.name,
        "classes": list(bundle.classes),
        "in_channels": bundle.in_channels,
        "image_size": list(bundle.image_size),
        "train_size": len(bundle.train_labels),
        "test_size": len(bundle.test_labels),
        "samples": [(img, str(bundle.classes[int(labels[i])])) for img, i in zip(images, picked)],
    }


def parameter_count(arch: str, num_classes: int, in_channels: int) -> int:
    """Parameters of ``arch`` for the data set (counted on the meta device and cached by the engine)."""
    from engine.models import parameter_count as count

    return count(arch, num_classes, in_channels)


def parameter_counts(names: list[str], num_classes: int, in_channels: int) -> dict[str, int | None]:
    """Counts of several models (None for one that cannot be built), for the model pickers' lists."""
    out: dict[str, int | None] = {}
    for name in names:
        try:
            out[name] = parameter_count(name, num_classes, in_channels)
        except Exception:  # noqa: BLE001 - a library model MGD Studio cannot wrap: no count
            out[name] = None
    return out


def model_catalog() -> list[tuple[str, str]]:
    """Every model the pickers offer: the zoo, torchvision's and timm's classification models."""
    from engine.models.sources import catalog

    return catalog()


def device_memory(device: str) -> tuple[str, int | None]:
    """(device name, bytes of memory) that training on the config's ``device`` can use: the GPU's
    total memory, or the RAM available now for the CPU (and Apple GPUs, which share it)."""
    import torch

    from engine.data.imagefolder import _available_ram

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return device, None
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            return device, None
        return f"cuda:{index}", int(torch.cuda.get_device_properties(index).total_memory)
    return ("mps" if device == "mps" else "cpu"), _available_ram()


def training_memory(arch: str, num_classes: int, in_channels: int, image_size: int, batch_size: int,
                    device: str) -> dict[str, Any]:
    """The engine's estimate of the memory training ``arch`` takes, and what the device has."""
    from engine.models import training_memory as estimate

    name, capacity = device_memory(device)
    return {"arch": arch, "estimate": estimate(arch, num_classes, in_channels, image_size, batch_size),
            "capacity": capacity, "device": name, "image_size": image_size, "batch_size": batch_size}


def distiller_options(name: str) -> type:
    """The ``Options`` dataclass a baseline declares (its fields carry type, default, help, bounds)."""
    from engine.distillers import distiller_class

    return distiller_class(name).Options


_PLANNED_DATA: dict = {}  # the data set of the last set-up planned


def check_plan(cfg, processes: int = 1) -> tuple[str, str] | None:
    """None when the engine accepts the experiment, else ``(field, reason)`` of the first problem
    its plan finds (the very checks a run makes before its first step), for a run of
    ``processes`` processes (the studio's "all GPUs")."""
    import dataclasses

    from engine.errors import ConfigError, InputError
    from engine.run import plan_experiment
    from engine.runtime import data_cache

    # a look-up never downloads: a data set still to be fetched is the run's first job, not a problem
    for section in (cfg.data, *((cfg.transfer.data,) if cfg.transfer.enabled else ())):
        if pending_download(dataclasses.asdict(section)) is not None:
            return None
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, download=False),
                              transfer=dataclasses.replace(cfg.transfer, data=dataclasses.replace(
                                  cfg.transfer.data, download=False)))
    try:
        with data_cache(_PLANNED_DATA, keep=2):  # an edit that keeps the data sets does not load them again
            plan_experiment(cfg, processes=processes if processes > 1 and not cfg.comparison.baselines else None)
    except ConfigError as exc:
        return exc.field or "", exc.reason
    except InputError as exc:
        return exc.field or "", str(exc)
    return None
