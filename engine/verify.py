"""Checks that a checkpoint can be trusted before its contents are used.

Every check raises a one-line :class:`engine.errors.CheckpointError` naming the file, so that
``mgd-train`` exits 2 before any training:

* :func:`check_archive`, before ``torch.load``: the zip archive ``torch.save`` writes is
  intact (each record's CRC-32) and declares no more bytes than the file could hold (a small
  deflated file declaring gigabytes is refused before anything is allocated).
* :func:`check_tensors`: weights are plain dense tensors (no meta or sparse ones), finite and
  within :data:`WEIGHT_LIMIT`.
* :func:`check_heads_state`: a granularity-heads checkpoint (``granularity.checkpoint``) is made
  of string-keyed weights and a well-formed best-weights tracker.
* :func:`check_stage_state`: a stage checkpoint of this run (``<stage>.pt`` or the resume point
  ``<stage>_last.pt``) has a known format, a position inside the stage's schedule and a
  well-formed epoch history; :func:`check_run_checkpoints` applies it to a run folder at plan time.

Integrity: the digest is the zip archive's own CRC-32 per record, which ``torch.save`` has
always written (it is on by default) and which ``torch.load`` never checks. Checking it adds
nothing to the file, so checkpoints stay readable by every older reader, and the runs written
before this check are verified too. CRC-32 finds every burst of damage up to 32 bits and any
other damage with probability 1 - 2**-32 (a disk or copy error, bytes overwritten); it is not a
defence against deliberate edits, and neither would a digest stored beside the data be, since an
editor rewrites it too: deliberate edits are caught by the checks of what the file says (its
position, history, format and weights). A file written with torch's CRC-32 switched off
(``torch.serialization.set_crc32_options(False)``: every record's CRC is 0) carries no digest
and is not checked; :func:`engine.runfolder.save_checkpoint` always writes one.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import CheckpointError

#: the largest magnitude a stored weight may have. Trained networks keep weights and batch-norm
#: statistics within about 1e3 of zero; a value of 1e6 overflows half precision (65504) at once,
#: and float32 after a handful of layers, so it can only come from a diverged or edited file.
WEIGHT_LIMIT = 1e6
#: how many times its own size a torch archive may declare when unpacked: torch stores its
#: records uncompressed (1x); a re-zipped file of real weights deflates by well under 2x.
INFLATE_LIMIT = 16
_SLACK = 1 << 20  # bytes allowed beyond either limit (headers, small files)
#: the checkpoint layouts of a run folder that this engine reads (engine.runfolder.CHECKPOINT_FORMAT)
KNOWN_FORMATS = (2,)


# ----------------------------------------------------------------------------- the archive


def check_archive(path: str | Path, needed_bytes: int | None = None) -> None:
    """Refuse a damaged zip archive or one declaring more bytes than it can hold, before loading.

    ``needed_bytes``: the size of the weights the file is loaded for, when known; a file
    declaring far more (64x, beyond a model, its optimiser state, best copies and a distillation
    partner) is refused too. Files in the legacy pickle format (no zip) are left to the loader.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
            declared = sum(r.file_size for r in records)
            if declared > INFLATE_LIMIT * size + _SLACK:
                raise CheckpointError(f"{path}: the archive declares {declared:,} bytes in a {size:,}-byte file; "
                                      "refused before unpacking (not a file torch.save writes)")
            if needed_bytes is not None and declared > 64 * needed_bytes + 16 * _SLACK:
                raise CheckpointError(f"{path}: the archive declares {declared:,} bytes for weights of "
                                      f"{needed_bytes:,} bytes; refused before unpacking")
            # torch.serialization.set_crc32_options(False) writes 0 for every record: such a file
            # (never one of the engine's, see runfolder.save_checkpoint) carries no digest to check
            unsigned = all(r.CRC == 0 for r in records if r.file_size)
            damaged = None if unsigned else archive.testzip()  # reads every record, compares its CRC-32
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint archive ({_first_line(exc)})") from None
    if damaged is not None:
        raise CheckpointError(f"{path}: damaged checkpoint (record {damaged} fails its CRC-32 check); "
                              "restore it from a copy or delete it to retrain that part")


# ----------------------------------------------------------------------------- tensors


def _walk(obj: Any, name: str = ""):
    """(dotted name, tensor) of every tensor in nested mappings and lists."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield name, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _walk(v, f"{name}.{k}" if name else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{name}[{i}]")


def check_tensors(obj: Any, source: str, limit: float | None = WEIGHT_LIMIT) -> None:
    """Every tensor in ``obj`` (a state dict, or nested containers of them) is dense, holds real
    data, and (floating ones) is finite and within ``limit`` in magnitude (None: finite only)."""
    import torch

    for name, t in _walk(obj):
        if t.layout != torch.strided:
            raise CheckpointError(f"{source}: tensor {name!r} is {str(t.layout).replace('torch.', '')}, "
                                  "not a dense tensor of weights")
        if t.is_meta:
            raise CheckpointError(f"{source}: tensor {name!r} is on the meta device (it holds no values)")
        if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
            continue
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{source}: tensor {name!r} holds NaN or infinite values: it was saved from a "
                                  "diverged run or damaged; use an earlier checkpoint")
        if limit is not None:
            peak = float(t.detach().abs().max())
            if peak > limit:
                raise CheckpointError(f"{source}: tensor {name!r} holds a value of magnitude {peak:.3g}, beyond "
                                      f"{limit:.0e}: not weights of a trained network")


def tensor_bytes(state: Mapping) -> int:
    """Bytes of the tensors of a state dict (what a file of those weights needs)."""
    return sum(t.numel() * t.element_size() for _, t in _walk(state))


# ----------------------------------------------------------------------------- granularity heads


def check_heads_state(state: Any, path: str | Path) -> tuple[dict, dict]:
    """The (weights, tracker) of a heads checkpoint: the ``heads`` module of a heads-stage
    checkpoint (with its tracker, ``{}`` when none) or a plain state dict; both checked."""
    source = str(path)
    if isinstance(state, Mapping) and "modules" in state:
        modules = state["modules"]
        if not isinstance(modules, Mapping) or "heads" not in modules:
            raise CheckpointError(f"{source}: a stage checkpoint without granularity heads ('modules' has no 'heads')")
        weights, tracker = modules["heads"], state.get("tracker")
    else:
        weights, tracker = state, None
    _check_state_dict(weights, source, "the heads' weights")
    if tracker is None:
        tracker = {}
    if not isinstance(tracker, Mapping):
        raise CheckpointError(f"{source}: its best-weights tracker is a {type(tracker).__name__}, not a mapping")
    for key, entry in tracker.items():
        _check_tracker_entry(key, entry, source)
    return dict(weights), dict(tracker)


def _check_state_dict(weights: Any, source: str, what: str, allow_empty: bool = False,
                      limit: float | None = WEIGHT_LIMIT) -> None:
    import torch

    if not isinstance(weights, Mapping) or not (weights or allow_empty):
        raise CheckpointError(f"{source}: {what} are not a state dict (a mapping of names to tensors)")
    bad = [k for k, v in weights.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)][:1]
    if bad:
        bad = bad[0]
        raise CheckpointError(f"{source}: {what} are not a state dict: key {bad!r} "
                              f"{'is not a string' if not isinstance(bad, str) else 'does not hold a tensor'}")
    check_tensors(weights, source, limit)


def _check_tracker_entry(key: Any, entry: Any, source: str) -> None:
    if not isinstance(key, str):
        raise CheckpointError(f"{source}: its best-weights tracker has a key {key!r} that is not a string")
    if not isinstance(entry, Mapping) or not {"metric", "epoch", "state"} <= set(entry):
        raise CheckpointError(f"{source}: best-weights entry {key!r} is not {{metric, epoch, state}}")
    metric, epoch, best = entry["metric"], entry["epoch"], entry["state"]
    if metric is not None and not _is_number(metric):
        raise CheckpointError(f"{source}: best-weights entry {key!r} has metric {metric!r}, not a number")
    if not _is_int(epoch) or epoch < 0:
        raise CheckpointError(f"{source}: best-weights entry {key!r} has epoch {epoch!r}, not a count of epochs")
    if best is not None:
        _check_state_dict(best, source, f"the best weights of {key!r}")


# ----------------------------------------------------------------------------- stage checkpoints


def check_stage_state(state: Any, path: str | Path, stage: str, epochs: int, steps: int, final: bool) -> None:
    """Refuse a checkpoint of ``stage`` that this run cannot continue from.

    ``final``: the stage's finished checkpoint (``<stage>.pt``: modules, tracker, a history of
    every epoch); otherwise its resume point (``<stage>_last.pt``), whose ``epoch`` (epochs
    completed, or the one in progress) and ``step`` (steps completed in it) must lie inside a
    schedule of ``epochs`` epochs of ``steps`` steps, with one history record per completed epoch.
    """
    source = str(path)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: not a stage checkpoint (a {type(state).__name__})")
    fmt = state.get("format")
    if fmt not in KNOWN_FORMATS or isinstance(fmt, bool):
        raise CheckpointError(f"{source}: unknown checkpoint format {fmt!r} (this version reads "
                              f"{', '.join(map(str, KNOWN_FORMATS))})")
    if state.get("stage") != stage:
        raise CheckpointError(f"{source}: a checkpoint of the {state.get('stage')!r} stage, not of {stage!r}")
    modules = state.get("modules")
    if not isinstance(modules, Mapping) or not modules:
        raise CheckpointError(f"{source}: holds no module weights")
    for name, weights in modules.items():
        # a baseline's own state (CRD's normalising constants, memory banks) is not bounded like weights
        _check_state_dict(weights, source, f"the weights of {name!r}", allow_empty=True,
                          limit=None if name == "distiller" else WEIGHT_LIMIT)
    tracker = state.get("tracker")
    if tracker is not None:
        if not isinstance(tracker, Mapping):
            raise CheckpointError(f"{source}: its best-weights tracker is a {type(tracker).__name__}, not a mapping")
        for key, entry in tracker.items():
            _check_tracker_entry(key, entry, source)
    if not _is_number(state.get("seconds", 0.0)) or not 0 <= float(state.get("seconds", 0.0)) < math.inf:
        raise CheckpointError(f"{source}: seconds {state.get('seconds')!r} is not a duration")
    history = state.get("history")
    if final:
        done = epochs
    else:
        done, step = state.get("epoch"), state.get("step")
        if not _is_int(done) or not 0 <= done <= epochs:
            raise CheckpointError(f"{source}: resume epoch {done!r} lies outside the stage's {epochs} epochs")
        if not _is_int(step) or not 0 <= step < steps or (done == epochs and step):
            raise CheckpointError(f"{source}: resume step {step!r} lies outside an epoch of {steps} steps"
                                  + (" (the last epoch is complete)" if done == epochs and _is_int(step) else ""))
        if not isinstance(state.get("optimizer"), Mapping):
            raise CheckpointError(f"{source}: holds no optimiser state to resume from")
        check_tensors(state["optimizer"], source, limit=None)
        if step:
            check_partial(state.get("partial"), source, step)
    _check_history(history, source, done)


def check_partial(partial: Any, source: str, step: int) -> None:
    """The running sums of an epoch interrupted after ``step`` steps (``None`` in checkpoints
    written before they were kept): finite loss sums, ``correct <= seen`` and at most ``step`` steps."""
    if partial is None:
        return
    ok = (isinstance(partial, Mapping) and isinstance(partial.get("sums"), Mapping)
          and all(isinstance(k, str) and _is_number(v) and math.isfinite(v) for k, v in partial["sums"].items())
          and _is_number(partial.get("correct")) and _is_int(partial.get("seen")) and partial["seen"] >= 0
          and 0 <= partial["correct"] <= partial["seen"]
          and _is_int(partial.get("steps")) and 0 <= partial["steps"] <= step)
    if not ok:
        raise CheckpointError(f"{source}: the running sums of its interrupted epoch are malformed")


def _check_history(history: Any, source: str, epochs_done: int) -> None:
    if not isinstance(history, list):
        raise CheckpointError(f"{source}: its epoch history is a {type(history).__name__}, not a list of epochs")
    if len(history) != epochs_done:
        raise CheckpointError(f"{source}: its epoch history has {len(history)} epochs for {epochs_done} completed")
    for i, record in enumerate(history):
        ok = (isinstance(record, Mapping) and record.get("epoch") == i + 1 and _is_int(record.get("epoch"))
              and isinstance(record.get("losses"), Mapping)
              and all(isinstance(k, str) and _is_number(v) for k, v in record["losses"].items())
              and all(_is_number(record.get(k)) for k in ("train_acc", "test_acc"))
              and all(_is_number(record[k]) for k in ("lr", "seconds") if k in record)
              and isinstance(record.get("metrics", {}), Mapping))
        if not ok:
            raise CheckpointError(f"{source}: epoch record {i + 1} of its history is malformed "
                                  "(expected epoch, losses, train_acc, test_acc, lr, seconds)")


# ----------------------------------------------------------------------------- helpers


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
