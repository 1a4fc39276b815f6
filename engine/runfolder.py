"""The run folder: its layout, atomic writes, the metrics log, the summary and the writer's lock.

One module owns what a run folder holds, so the engine, ``mgd-train``, the studio and
scripts agree on every name::

    RUN_DIR/
      config.yaml          the resolved experiment
      metrics.jsonl        every event, one JSON object per line
      summary.json         key figures, rewritten after each stage
      error.log            the traceback of a failed run
      checkpoints/         <stage>.pt when a stage is done, <stage>_last.pt while it runs
      export/              the exported student (unless export.dir says otherwise)
      .lock, .writer       held by the one process writing the folder (pid, host, start)
      annotation.json      the user's name and note for the run (the studio; never read by a run)

Every file is written atomically: to a temporary file beside it, flushed to disk, then
renamed over the old one, so a crash leaves the old or the new file, never half of one.
A full disk raises :class:`DiskFullError` naming the path. This module imports no torch
(the studio's runs panel uses it); :func:`save_checkpoint` and :func:`load_checkpoint` do
on first use.
"""

from __future__ import annotations

import errno
import io
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.errors import CheckpointError, InputError, TrainingError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
ERROR_FILE = "error.log"
CHECKPOINT_DIR = "checkpoints"
EXPORT_DIR = "export"
CARD_FILE = "model_card.yaml"
LOCK_FILE = ".lock"
WRITER_FILE = ".writer"
ANNOTATION_FILE = "annotation.json"
TMP_SUFFIX = ".tmp"

#: version of the checkpoint layout written by :func:`engine.stage_runner` (one for every stage)
CHECKPOINT_FORMAT = 2


class DiskFullError(TrainingError):
    """No space left (or quota exceeded) while writing a file of the run."""

    def __init__(self, path: Path, exc: OSError):
        self.path = path
        super().__init__(f"the disk is full: could not write {path} ({exc.strerror or exc}); "
                         "free some space and resume the run (the last good checkpoint is kept)", kind="disk")


def checkpoint_path(run_dir: str | Path, stage: str) -> Path:
    """The final checkpoint of a finished stage."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{stage}.pt"


def last_checkpoint_path(run_dir: str | Path, stage: str) -> Path:
    """The per-epoch checkpoint of a stage in progress (resume continues from it)."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{stage}_last.pt"


# ----------------------------------------------------------------------------- atomic writes


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    Raises :class:`DiskFullError` when the disk is full, ``OSError`` for other failures;
    the temporary file never stays behind.
    """
    path = Path(path)
    if int(os.environ.get("RANK", "0")) != 0:  # several processes: the first alone writes the run folder
        return path
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = _tmp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            view = memoryview(data)
            while view:  # os.write reports a full disk as ENOSPC, unlike some C++ writers
                written = os.write(fh.fileno(), view)
                view = view[written:]
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(path, exc) from None
        raise
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass
    return path


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write(path, json.dumps(data, indent=2))


def read_json(path: str | Path) -> dict:
    """A JSON object from ``path``; ``{}`` when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_checkpoint(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (serialised in memory first, so a full disk
    is reported as such rather than as a serialiser error), with the CRC-32 of every record of
    its zip archive, which :func:`load_checkpoint` verifies (see :mod:`engine.verify`)."""
    import torch

    buffer = io.BytesIO()
    options = torch.serialization
    crc_was = options.get_crc32_options() if hasattr(options, "get_crc32_options") else True
    if not crc_was:  # someone switched torch's CRC-32 off in this process: the digest is not optional here
        options.set_crc32_options(True)
    try:
        torch.save(obj, buffer)
    finally:
        if not crc_was:
            options.set_crc32_options(False)
    return atomic_write(path, buffer.getbuffer())


def load_checkpoint(path: str | Path) -> Any:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code), on the CPU, once its
    archive is verified (:func:`engine.verify.check_archive`: the CRC-32 of each record, and
    no more bytes declared than the file can hold)."""
    import torch

    from engine.verify import check_archive

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    check_archive(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})") from None


def remove_orphans(run_dir: str | Path) -> list[Path]:
    """Delete temporary files left by a killed writer (call it while holding the lock)."""
    removed = []
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir / CHECKPOINT_DIR, run_dir / EXPORT_DIR):
        if not folder.is_dir():
            continue
        for path in folder.glob(f".*{TMP_SUFFIX}"):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


# ----------------------------------------------------------------------------- metrics and summary


class MetricsWriter:
    """Subscriber that appends every event to ``metrics.jsonl`` as one JSON object per line."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / METRICS_FILE
        self._fh = open(self.path, "a", encoding="utf-8")

    def __call__(self, event) -> None:
        if self._fh.closed:
            return
        self._fh.write(json.dumps(event.to_dict()) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_summary(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / SUMMARY_FILE)


def write_summary(run_dir: str | Path, summary: dict) -> Path:
    return write_json(Path(run_dir) / SUMMARY_FILE, summary)


# ----------------------------------------------------------------------------- the writer's lock


class RunLock:
    """An exclusive lock on a run folder for the process that writes it.

    A second writer (another ``mgd-train --resume`` of the same folder, the studio) gets an
    :class:`InputError` naming the holder's process, host and start time. The lock is an
    OS file lock, so it is released when its process dies, however it dies.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._lock = None

    def acquire(self) -> RunLock:
        from filelock import FileLock, Timeout

        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.run_dir / LOCK_FILE), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = (self.run_dir / WRITER_FILE)
            try:
                who = holder.read_text(encoding="utf-8").strip()
            except OSError:
                who = "another process"
            raise InputError(f"{self.run_dir}: the run folder is being written by {who or 'another process'}; "
                             "wait for it to finish or stop it first") from None
        self._lock = lock
        info = f"process {os.getpid()} on {socket.gethostname()} since {datetime.now().isoformat(timespec='seconds')}"
        try:
            atomic_write(self.run_dir / WRITER_FILE, info)
        except OSError:
            pass
        return self

    def release(self) -> None:
        if self._lock is not None:
            try:
                (self.run_dir / WRITER_FILE).unlink()
            except OSError:
                pass
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_writable_dir(path: str | Path, field: str) -> None:
    """Refuse (InputError naming ``field``) a folder that cannot be created or written.

    The folder is created and a probe file written into it and removed, so that what the
    file system refuses (a NUL byte, /proc, /sys, a read-only mount, a name too long) is
    found before any training; the folders it had to create are removed again, leaving the
    file system as it was.
    """
    if "\0" in str(path):
        raise InputError(f"{field}: {_shown(path)!r} cannot be a folder (it holds a NUL byte)")
    try:
        path = Path(path).expanduser()
        missing = []
        probe = path
        while not os.path.lexists(probe) and probe.parent != probe:
            missing.append(probe)
            probe = probe.parent
    except (ValueError, OSError) as exc:  # a NUL byte, a name too long for the file system
        raise InputError(f"{field}: {_shown(path)!r} cannot be a folder ({_reason(exc)})") from None
    if probe.exists() and not probe.is_dir():
        raise InputError(f"{field}: {probe} is a file, not a folder")
    created: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        test = path / f".write-probe-{os.getpid()}"
        with open(test, "wb") as fh:
            fh.write(b"probe")
        test.unlink()
    except (OSError, ValueError) as exc:
        what = f"cannot create {_shown(path)}" if missing else f"{_shown(path)} is not writable"
        raise InputError(f"{field}: {what} ({_reason(exc)})") from None
    finally:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass


def _shown(path: str | Path, limit: int = 120) -> str:
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text):,} characters)"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return "it holds a NUL byte" if "null" in str(exc) else str(exc)


def now_iso() -> str:
    return datetime.now().isoformat(timespec="seconds")
