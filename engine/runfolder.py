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
      .writer              who holds the writer's lock (pid, host, start); the lock itself is
                           an OS lock on the folder (see RunLock), not a file
      annotation.json      the user's name and note for the run (the studio; never read by a run)

Every file is written atomically: to a temporary file beside it, flushed to disk, then
renamed over the old one, so a crash leaves the old or the new file, never half of one;
``metrics.jsonl`` is appended one whole line at a time. A full disk raises
:class:`DiskFullError` naming the path; a run folder deleted (or moved) while its writer
holds it raises :class:`RunFolderGone` at the next write or event. Both stop the run, even
when an event subscriber meets them (their ``stops_run`` attribute, see ``EventBus.emit``). This module imports no torch
(the studio's runs panel uses it); :func:`save_checkpoint` and :func:`load_checkpoint` do
on first use.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

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


class RunFolderError(TrainingError):
    """A file of the run folder cannot be written (the message names it): the run stops."""

    stops_run = True  # raised by an event subscriber, it still ends the run (EventBus.emit)

    def __init__(self, path: Path, message: str, kind: str = "io"):
        self.path = Path(path)
        super().__init__(message, kind=kind)


class DiskFullError(RunFolderError):
    """No space left (or quota exceeded) while writing a file of the run."""

    def __init__(self, path: Path, exc: OSError):
        super().__init__(path, f"the disk is full: could not write {path} ({exc.strerror or exc}); "
                         "free some space and resume the run (the last good checkpoint is kept)", kind="disk")


class RunFolderGone(RunFolderError):
    """The run folder was deleted or moved while its writer held it."""

    def __init__(self, run_dir: Path):
        super().__init__(run_dir, f"the run folder {run_dir} was deleted or moved while the run was writing it; "
                         "the run stops (start it again to train from the beginning)", kind="vanished")


def write_error(path: str | Path, exc: OSError) -> RunFolderError:
    """The error for a failed write of ``path``: :class:`DiskFullError` for a full disk or quota,
    else a :class:`RunFolderError` naming the file and the reason."""
    path = Path(path)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(path, exc)
    return RunFolderError(path, f"could not write {path} ({exc.strerror or exc})")


def as_run_error(exc: BaseException) -> RunFolderError | None:
    """An ``OSError`` raised while a run wrote its files, as a :class:`RunFolderError` naming the
    file (``None`` for anything else): a message that says which file, not only ``[Errno 28]``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return write_error(exc.filename or "a file of the run", exc)
    return None


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
    check_alive(path)  # never re-create a run folder deleted under its writer
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
        if exc.filename == str(tmp):  # name the file the caller wrote, not its temporary twin
            raise OSError(exc.errno, exc.strerror, str(path)) from None
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


def _drop_partial_line(fd: int) -> None:
    """Truncate the file open at ``fd`` after its last newline (a line cut by a crash goes)."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    if end != size:
        os.ftruncate(fd, end)


class MetricsWriter:
    """Subscriber that appends every event to ``metrics.jsonl`` as one JSON object per line.

    The file holds whole lines only: a partial last line (a crash) is dropped when it is opened
    again, and a line that cannot be written (a full disk) is cut off again before the error
    (:class:`DiskFullError` / :class:`RunFolderError`, naming the file) stops the run; the
    writer then writes nothing more. A run folder deleted under it raises :class:`RunFolderGone`.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / METRICS_FILE
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            _drop_partial_line(self._fd)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        self.failed = False

    def __call__(self, event) -> None:
        if self._fd is None or self.failed:
            return
        try:
            check_alive(self.path)
        except RunFolderGone:
            self.failed = True
            raise
        data = memoryview((json.dumps(event.to_dict()) + "\n").encode("utf-8"))
        size = os.fstat(self._fd).st_size
        try:
            while data:  # one os.write in practice; a short write is a full disk
                data = data[os.write(self._fd, data):]
        except OSError as exc:
            self.failed = True
            try:
                os.ftruncate(self._fd, size)  # never half a line followed by the next event
            except OSError:
                pass
            raise write_error(self.path, exc) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_summary(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / SUMMARY_FILE)


def write_summary(run_dir: str | Path, summary: dict) -> Path:
    """Write ``summary.json``; a failure is a :class:`RunFolderError` naming it (it stops the run,
    even from an event subscriber)."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        return write_json(path, summary)
    except OSError as exc:
        raise write_error(path, exc) from None


# ----------------------------------------------------------------------------- the writer's lock


try:
    import fcntl
except ImportError:  # Windows: the filelock package's lock file instead
    fcntl = None

#: run folders whose writer's lock this process holds (see :func:`check_alive`)
_HELD: list[RunLock] = []


def check_alive(path: str | Path) -> None:
    """Raise :class:`RunFolderGone` when ``path`` lies in a run folder this process holds the
    lock of and that folder was deleted or moved since (nothing to check for other paths)."""
    if not _HELD:
        return
    target = os.path.abspath(path)
    for lock in list(_HELD):
        root = lock.abs_dir
        if (target == root or target.startswith(root + os.sep)) and lock.vanished():
            raise RunFolderGone(lock.run_dir)


class RunLock:
    """An exclusive lock on a run folder for the process that writes it.

    A second writer (another ``mgd-train --resume`` of the same folder, the studio) gets an
    :class:`InputError` naming the holder's process, host and start time (from ``.writer``).
    Where the OS has ``flock`` the lock is taken on the folder itself (an open descriptor of
    the directory), so deleting files in the folder cannot break it, and it is released when
    its process dies, however it dies; elsewhere it is a ``.lock`` file (the filelock package).
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.abs_dir = os.path.abspath(self.run_dir)
        self._fd: int | None = None  # the directory's descriptor, flocked
        self._lock = None  # the filelock fallback

    def _refuse(self) -> InputError:
        try:
            who = (self.run_dir / WRITER_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            who = ""
        return InputError(f"{self.run_dir}: the run folder is being written by {who or 'another process'}; "
                          "wait for it to finish or stop it first")

    def _take(self) -> None:
        if fcntl is None:
            from filelock import FileLock, Timeout

            lock = FileLock(str(self.run_dir / LOCK_FILE), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                raise self._refuse() from None
            self._lock = lock
            return
        fd = os.open(self.run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise self._refuse() from None
            raise
        self._fd = fd

    def acquire(self) -> RunLock:
        created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._take()
        except BaseException:
            if created:  # refused: leave no empty folder behind
                try:
                    self.run_dir.rmdir()
                except OSError:
                    pass
            raise
        _HELD.append(self)
        info = f"process {os.getpid()} on {socket.gethostname()} since {datetime.now().isoformat(timespec='seconds')}"
        try:
            atomic_write(self.run_dir / WRITER_FILE, info)
        except (OSError, TrainingError):
            pass
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None or self._lock is not None

    def vanished(self) -> bool:
        """Whether the held folder was deleted or moved (its path no longer names the folder locked)."""
        if not self.held:
            return False
        try:
            now = os.stat(self.run_dir)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        if self._fd is None:
            return False
        locked = os.fstat(self._fd)
        return (now.st_dev, now.st_ino) != (locked.st_dev, locked.st_ino)

    def release(self, remove: bool = False) -> None:
        """Give the lock up; ``remove``: delete the run folder first (a run refused at its start)."""
        if not self.held:
            return
        if self in _HELD:
            _HELD.remove(self)
        if remove and not self.vanished():
            shutil.rmtree(self.run_dir, ignore_errors=True)
        else:
            try:
                (self.run_dir / WRITER_FILE).unlink()
            except OSError:
                pass
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def record_failure(run_dir: str | Path, details: str, save_summary: Callable[[], Any]) -> None:
    """Write what a failed run can still write: ``error.log`` (the traceback), then the summary
    (``save_summary``, saying failed); each is tried on its own and a failure to write is
    swallowed (a full disk or a read-only folder: the failure itself is reported elsewhere).
    Nothing is written into a run folder that vanished (it would be re-created)."""
    for write in (lambda: atomic_write(Path(run_dir) / ERROR_FILE, details), save_summary):
        try:
            write()
        except (OSError, TrainingError):
            pass


def record_launch_failure(run_dir: str | Path, failure: dict) -> None:
    """Record that a run's processes failed (``failure``: :func:`engine.launch.describe_failure`'s
    record), once none of them holds the folder any more: in its summary, in ``error.log`` when
    its processes wrote none, and as the run's last event in ``metrics.jsonl`` (a RunFailed
    naming the cause) unless the run's own last event already tells it. A run that never began
    (no summary) is left as it is; a folder still held or unwritable is left too."""
    from engine.events import RunFailed

    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if not summary:
        return
    try:
        lock = RunLock(run_dir).acquire()
    except (InputError, OSError):
        return
    message, stage = failure["message"], failure.get("stage") or ""
    try:
        summary.update(status="failed", error=message, failed_in=stage)
        if not (run_dir / ERROR_FILE).exists():
            atomic_write(run_dir / ERROR_FILE, f"{failure.get('details') or message}\n")
        write_summary(run_dir, summary)
        last = _last_end(run_dir / METRICS_FILE)
        if not (last and last.get("event") == "RunFailed" and last.get("message") == message):
            writer = MetricsWriter(run_dir)
            try:
                writer(RunFailed(str(run_dir), stage, message, failure.get("kind") or "error",
                                 failure.get("details") or ""))
            finally:
                writer.close()
    except (OSError, TrainingError):
        pass
    finally:
        lock.release()


def _last_end(path: Path) -> dict | None:
    """The last RunFinished or RunFailed event of a metrics log (read from its end), or None."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 262144))
            lines = fh.read().split(b"\n")
    except OSError:
        return None
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") in ("RunFinished", "RunFailed"):
            return event
    return None


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
            try:
                folder.mkdir()
            except FileExistsError:  # made meanwhile by another program: it is not ours to remove
                continue
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
