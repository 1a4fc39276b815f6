"""Where a model comes from: the CIFAR zoo, torchvision, or timm; names, checks and weights.

A model name is either a zoo name (``resnet8``, see :data:`engine.models.MODELS`) or
``SOURCE:NAME`` with ``SOURCE`` one of :data:`SOURCES`:

* ``torchvision:NAME``: any torchvision classification model
  (``torchvision.models.list_models(module=torchvision.models)``), e.g. ``torchvision:resnet50``;
* ``timm:NAME``: any timm model (``timm.list_models()``), optionally with a pretrained tag,
  e.g. ``timm:mobilenetv3_small_100`` or ``timm:resnet50.a1_in1k``.

This module registers nothing and imports neither torch nor the libraries until a function
needs them (``import engine.config`` stays light); a zoo name is checked without any import.

Pretrained weights (:func:`pretrained_weights_file`) use the library's own cache:
torchvision's files go to ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``), timm's
to the Hugging Face hub cache (``$HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``),
or, for the few timm weights not on the hub, to torch's cache as well. A file already in the
cache is used without any network access; a missing one is downloaded when the host answers,
and otherwise the user gets one line naming the file to download and the folder it goes into.
"""

from __future__ import annotations

import difflib
import functools
import os
import socket
from pathlib import Path

from engine.errors import InputError

SOURCES = ("torchvision", "timm")
INSTALL_HINT = {"timm": "pip install timm", "torchvision": "pip install torchvision"}
#: ImageNet statistics, the normalisation of the libraries' pretrained weights
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: seconds to wait for a weights host before calling the machine offline
CONNECT_TIMEOUT = 5.0
HF_HOST = "huggingface.co"


def split_name(name: str) -> tuple[str | None, str]:
    """``("timm", "resnet50")`` for ``"timm:resnet50"``; ``(None, name)`` for a zoo name."""
    if ":" in name:
        source, _, model = name.partition(":")
        return source.strip().lower(), model.strip()
    return None, name


def is_external(name: str) -> bool:
    """Whether ``name`` names a library model (``torchvision:`` or ``timm:``) rather than a zoo model."""
    return isinstance(name, str) and split_name(name)[0] is not None


# ----------------------------------------------------------------------------- library lists


def import_library(source: str):
    """The library module of ``source``; an InputError naming the install command if it is missing."""
    try:
        if source == "timm":
            import timm

            return timm
        if source == "torchvision":
            import torchvision

            return torchvision
    except ImportError:
        raise InputError(f"{source}: models named {source}:NAME need the {source} package: "
                         f"{INSTALL_HINT[source]}") from None
    raise InputError(f"unknown model source {source!r}; use one of: {', '.join(s + ':NAME' for s in SOURCES)}")


@functools.lru_cache(maxsize=None)
def library_models(source: str) -> tuple[str, ...]:
    """The classification models of a library (sorted, without the ``source:`` prefix)."""
    lib = import_library(source)
    if source == "torchvision":
        import torchvision.models

        # the classification builders only: module=torchvision.models leaves out detection,
        # segmentation, video, optical flow and the quantized variants
        return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))
    return tuple(sorted(lib.list_models()))


def library_available(source: str) -> bool:
    try:
        import_library(source)
    except InputError:
        return False
    return True


def close_matches(name: str, candidates, n: int = 4) -> list[str]:
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a model MGD Studio can build (None when it is one).

    A zoo name is checked against the registry (no import); ``torchvision:``/``timm:`` names
    against the library's list of classification models, with close matches in the message.
    """
    from engine.models.zoo import MODELS

    if not isinstance(name, str) or not name.strip():
        return "a model name is needed"
    source, model = split_name(name)
    if source is None:
        if name in MODELS:
            return None
        near = close_matches(name, MODELS.names(), 3)
        hint = f"close matches: {', '.join(near)}; " if near else ""
        return (f"{name!r} is not allowed; {hint}choose a CIFAR zoo model ({', '.join(MODELS.names())}) or a "
                "library model torchvision:NAME or timm:NAME (e.g. torchvision:resnet50)")
    if source not in SOURCES:
        return f"unknown model source {source!r} in {name!r}; use torchvision:NAME or timm:NAME"
    if not model:
        return f"{name!r} names no model; write {source}:NAME, e.g. {source}:resnet18"
    try:
        known = library_models(source)
    except InputError as exc:
        return str(exc)
    base = model.split(".", 1)[0] if source == "timm" else model  # timm: NAME.pretrained_tag
    if base in known:
        return None
    near = close_matches(base, known)
    hint = f"; close matches: {', '.join(f'{source}:{m}' for m in near)}" if near else ""
    return f"unknown {source} classification model {model!r}{hint}"


def catalog() -> list[tuple[str, str]]:
    """Every model the pickers offer, as ``(name, one-line description)``: the zoo first, then
    torchvision, then timm (a library that is not installed is left out)."""
    from engine.models.zoo import MODELS

    out = [(name, entry.description) for name, entry in MODELS.entries().items()]
    for source in SOURCES:
        if not library_available(source):
            continue
        label = "torchvision classification model" if source == "torchvision" else "timm model"
        out += [(f"{source}:{m}", label) for m in library_models(source)]
    return out


def describe_sources() -> str:
    """Lines for ``mgd-train --list-models`` about the library models, after the zoo's."""
    examples = {"torchvision": "torchvision:resnet50", "timm": "timm:mobilenetv3_small_100"}
    lines = []
    for source in SOURCES:
        try:
            count = f"any of the {len(library_models(source)):,} {source} classification models"
        except InputError:
            count = f"{source} is not installed ({INSTALL_HINT[source]})"
        lines.append(f"{source + ':NAME':<14} {count}, e.g. {examples[source]}; pretrained: true for its weights\n")
    return "".join(lines)


# ----------------------------------------------------------------------------- pretrained weights


def _reachable(host: str, port: int = 443, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (no data is sent)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def torch_hub_checkpoints() -> Path:
    """torch's download cache for weight files (``$TORCH_HOME/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment at each call."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _url_host(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).hostname or url


def _download_url(url: str, folder: Path, what: str, field: str) -> Path:
    """``folder/<file name of url>``, downloaded with torch.hub when missing."""
    target = folder / os.path.basename(url.split("?")[0])
    if target.is_file():
        return target
    advice = f"download {url} into {folder}/ (or set {field} to the downloaded file)"
    if not _reachable(_url_host(url)):
        raise InputError(f"{what}: pretrained weights are not in the cache and this machine is offline: {advice}")
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except Exception as exc:  # network errors come in many types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{what}: downloading the pretrained weights failed ({reason}): {advice}") from None
    return target


def _torchvision_weights(model: str):
    import torchvision.models

    try:
        weights = torchvision.models.get_model_weights(model)
    except (ValueError, KeyError):
        weights = None
    if weights is None or not list(weights):
        raise InputError(f"torchvision:{model}: torchvision has no pretrained weights for this model; "
                         "set pretrained to false or give a weights file")
    return weights.DEFAULT


def _timm_pretrained_cfg(model: str):
    import_library("timm")
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(model)
    except RuntimeError as exc:  # an unknown pretrained tag
        raise InputError(f"timm:{model}: {str(exc).splitlines()[0]}") from None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise InputError(f"timm:{model}: timm has no pretrained weights for this model; "
                         "set pretrained to false or give a weights file")
    return cfg


def _hf_file(repo: str, filenames: list[str], what: str, field: str) -> Path:
    """A file of a Hugging Face model repo from the hub cache, downloaded when missing and online."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:
        raise InputError(f"{what}: timm's pretrained weights need the huggingface_hub package: "
                         "pip install huggingface_hub") from None
    cache = hf_hub_cache()
    for filename in filenames:
        found = try_to_load_from_cache(repo, filename, cache_dir=str(cache))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    url = f"https://{HF_HOST}/{repo}/resolve/main/{filenames[0]}"
    advice = (f"download {url} into the Hugging Face cache {cache}/ (on a machine with network: "
              f"hf download {repo} --cache-dir {cache}, then copy that folder here), "
              f"or set {field} to the downloaded file")
    if not _reachable(HF_HOST):
        raise InputError(f"{what}: pretrained weights are not in the cache and this machine is offline: {advice}")
    failures = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo, filename, cache_dir=str(cache)))
        except Exception as exc:  # the file is not in the repo, or the download failed
            failures.append(f"{filename}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    raise InputError(f"{what}: downloading the pretrained weights failed ({'; '.join(failures)}): {advice}")


def pretrained_weights_file(name: str, field: str = "teacher.weights") -> Path:
    """The local file holding the library's pretrained weights of ``name``, from the library's
    cache, downloading it first when it is missing and the host answers.

    Raises a one-line :class:`InputError` naming the file (its URL) to download and the folder
    it goes into when the machine is offline; ``field`` is the setting the message offers as
    the alternative (a weights file).
    """
    source, model = split_name(name)
    if source is None:
        raise InputError(f"{name}: the CIFAR zoo has no pretrained weights; train it, or load a checkpoint "
                         "or a weights file")
    problem = name_problem(name)
    if problem:
        raise InputError(problem)
    if source == "torchvision":
        weights = _torchvision_weights(model)
        return _download_url(weights.url, torch_hub_checkpoints(), f"{name} ({weights})", field)
    cfg = _timm_pretrained_cfg(model)
    if cfg.file:
        path = Path(cfg.file).expanduser()
        if path.is_file():
            return path
    if cfg.hf_hub_id:
        filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        return _hf_file(cfg.hf_hub_id, filenames, name, field)
    return _download_url(cfg.url, torch_hub_checkpoints(), name, field)

