"""The processes of one run started and ended together (``mgd-train CONFIG --nproc N``).

:func:`run_workers` starts N copies of the same ``mgd-train`` command with the environment
``torch.distributed`` reads (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...), as torchrun
would, and watches them:

* when one process ends in failure (an error, a crash, ``kill -9``), the others are stopped
  (SIGTERM, then SIGKILL after :data:`GRACE_S`), and the run's end is the failure of the
  process that failed first, as a record (:func:`describe_failure`): its message, kind and
  stage, from the JSON record the worker wrote (:func:`note_failure`, in the file that
  :data:`FAILURE_ENV` names), or the launcher's own words for a process that died without
  one (killed); the others' consequences (a peer's "Connection reset by peer") are not told;
* each worker asks the kernel for a parent-death signal (Linux ``PR_SET_PDEATHSIG``,
  :func:`die_with_launcher`): when the launcher dies, however it dies, its workers get it and
  stop at the same step, as on SIGTERM;
* a stop (the launcher's SIGTERM, or ``control.stop()`` from another thread) reaches every
  worker as SIGTERM: they stop at the same step and keep the checkpoint.

The workers' standard output is theirs; their standard error passes through the launcher
line by line until one of them fails, through a file rather than a pipe, so a worker whose
launcher died can still write while it stops. A launched worker tells its failure in its
record only; the launcher tells the cause's (:mod:`engine.processes`, :mod:`engine.cli`).

This module imports no torch and no other part of the engine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

#: seconds the other processes get to stop after one failed, before they are killed
GRACE_S = 15.0
PR_SET_PDEATHSIG = 1
#: the environment variable naming the file where a launched worker records how it failed
FAILURE_ENV = "MGD_FAILURE_FILE"
#: the environment variable holding the launcher's process id (the worker dies with it)
LAUNCHER_ENV = "MGD_LAUNCHER_PID"
#: the signal a worker gets when its launcher dies: not SIGTERM, whose second delivery aborts; the
#: kernel sends it again each time the worker passes to another thread of the dying launcher
PARENT_DEATH_SIGNAL = getattr(signal, "SIGHUP", signal.SIGTERM)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- the worker's side


def launched() -> bool:
    """True in a worker that a launcher started (its failure goes to its record, not to stderr)."""
    return bool(os.environ.get(FAILURE_ENV))


def die_with_launcher() -> None:
    """In a launched worker: :data:`PARENT_DEATH_SIGNAL` when the launcher dies (Linux; the worker
    stops on it as on SIGTERM, however often it comes: :class:`engine.cli.SignalStop`), and an end
    now if it already has died. Asked for by the worker itself, not in a ``preexec_fn`` (which is
    not safe in a launcher with threads, such as the studio)."""
    parent = os.environ.get(LAUNCHER_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != parent:
        os._exit(1)


def note_failure(stage: str, message: str, kind: str, details: str = "", field: str | None = None) -> bool:
    """Record, for the launcher, how this worker failed (``stage``, ``message``, ``kind`` as in a
    RunFailed event, and the config ``field`` at fault). The first record stays: what fails after
    it is its consequence. Returns whether this is a launched worker (False: nothing written)."""
    path = os.environ.get(FAILURE_ENV)
    if not path:
        return False
    if not os.path.exists(path):
        record = {"stage": stage, "message": message, "kind": kind, "details": details[-20000:], "field": field}
        tmp = f"{path}.{os.getpid()}.tmp"
        try:  # whole or not at all (not the run folder's writer: every process writes its own record)
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(record))
            os.replace(tmp, path)
        except OSError:  # the launcher then tells the exit status alone
            pass
    return True


def read_failure(path: str | Path) -> dict | None:
    """A worker's failure record, or None (none written, or unreadable)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("message"), str) else None


# ----------------------------------------------------------------------------- the launcher's side


@dataclass
class Worker:
    rank: int
    proc: subprocess.Popen
    record_path: Path | None = None  # where it records its failure
    record: dict | None = None  # its failure record, read once it has ended
    ended: int | None = None  # the watch round in which it was seen ended
    reader: threading.Thread | None = field(default=None, repr=False)


def _forward(worker: Worker, stream, failed: threading.Event, lock: threading.Lock) -> None:
    """Pass the worker's standard error on, line by line, until it has ended (nothing more once a
    process failed: the others' lines are its consequences)."""
    pending = b""
    while True:
        chunk = stream.read()
        ended = not chunk and worker.proc.poll() is not None
        if ended:
            chunk = stream.read()
        *lines, pending = (pending + chunk).split(b"\n")
        if ended and pending:
            lines, pending = lines + [pending], b""
        for raw in lines:
            if not failed.is_set():
                with lock:
                    sys.stderr.write(raw.decode("utf-8", errors="replace") + "\n")
                    sys.stderr.flush()
        if ended:
            stream.close()
            return
        if not chunk:
            time.sleep(0.05)


def _how(worker: Worker) -> str:
    code = worker.proc.returncode
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def describe_failure(workers: list[Worker]) -> tuple[int, dict]:
    """(exit status, record) for workers of which at least one failed: the first to fail is the
    cause (a silent death before a recorded failure seen in the same round). The record holds
    ``message``, ``kind``, ``stage``, ``details``, ``field`` (the cause's own record, or the
    launcher's words for a process that died without one), ``rank`` and ``processes``."""
    failed = [w for w in workers if w.proc.returncode not in (0, None)]
    cause = min(failed, key=lambda w: (w.ended or 0, w.record is not None, w.rank))
    code = 2 if cause.proc.returncode == 2 else 1
    where = {"rank": cause.rank, "processes": len(workers)}
    if cause.record:
        return code, {"stage": "", "kind": "input" if code == 2 else "error", "details": "", "field": None,
                      **cause.record, **where}
    others = len(workers) - 1
    # the stage it died in: from a peer's record (its consequence happened in the same stage)
    stage = next((w.record.get("stage") for w in workers if w.record and w.record.get("stage")), "")
    message = (f"process {cause.rank} of {len(workers)} {_how(cause)}; "
               f"the other process{'es were' if others > 1 else ' was'} stopped")
    return code, {"stage": stage, "message": message, "kind": "input" if code == 2 else "error", "details": "",
                  "field": None, **where}


def run_workers(command: list[str], nproc: int, env: dict | None = None, *, control=None,
                every: Callable[[], None] | None = None, stdout=None) -> tuple[int, dict | None]:
    """Run ``nproc`` copies of ``command`` as the ranks of one process group; returns (0, None)
    when they all ended well, else (exit status, the record of the process that failed first:
    :func:`describe_failure`). A SIGTERM to this process (when called from its main thread)
    and ``control.stop()`` (a :class:`engine.control.RunControl`) reach every worker as
    SIGTERM; Ctrl-C reaches them directly. ``every`` is called about every 50 ms while they run
    (and once after they ended); ``stdout``: the workers' standard output (``subprocess.Popen``'s;
    by default this process's)."""
    base = {**(env or os.environ), "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), LAUNCHER_ENV: str(os.getpid())}
    workers: list[Worker] = []
    failed, lock = threading.Event(), threading.Lock()
    records = tempfile.TemporaryDirectory(prefix="mgd-launch-")
    try:
        for rank in range(nproc):
            # standard error goes to a file the launcher reads (not a pipe): a worker that outlives
            # its launcher for a moment (the parent-death signal) can still write, and stop cleanly
            fd, name = tempfile.mkstemp(prefix=f"mgd-rank{rank}-", suffix=".stderr")
            stream = open(name, "rb")
            try:
                os.unlink(name)  # gone with its last reader and writer, however they end
            except OSError:  # Windows: an open file stays; removed when the run ends
                pass
            record_path = Path(records.name) / f"rank{rank}.json"
            try:
                proc = subprocess.Popen(command, stdout=stdout, stderr=fd,
                                        env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank),
                                             FAILURE_ENV: str(record_path)})
            finally:
                os.close(fd)
            worker = Worker(rank, proc, record_path)
            worker.reader = threading.Thread(target=_forward, args=(worker, stream, failed, lock), daemon=True)
            worker.reader.start()
            workers.append(worker)
        code, failure = _watch(workers, failed, control, every)
    finally:
        records.cleanup()
    return code, failure


def _watch(workers: list[Worker], failed: threading.Event, control, every) -> tuple[int, dict | None]:
    def forward(signum, frame):
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signum)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, forward) if main else None
    deadline, watch, stopping = None, 0, False
    try:
        while any(w.ended is None for w in workers):
            watch += 1
            try:
                if control is not None and control.stop_requested and not stopping:
                    stopping = True  # every process stops at the same step and keeps its checkpoint
                    forward(signal.SIGTERM, None)
                for w in workers:
                    if w.ended is None and w.proc.poll() is not None:
                        w.ended = watch
                        w.record = read_failure(w.record_path) if w.proc.returncode != 0 else None
                        if w.proc.returncode != 0 and not failed.is_set():
                            failed.set()
                            forward(signal.SIGTERM, None)
                            deadline = time.monotonic() + GRACE_S
                if deadline is not None and time.monotonic() > deadline:
                    for w in workers:
                        if w.proc.poll() is None:
                            w.proc.kill()
                if every is not None:
                    every()
                time.sleep(0.05)
            except KeyboardInterrupt:  # the workers got the Ctrl-C too and stop cleanly
                continue
    except BaseException:  # the watch itself failed (a subscriber of ``every``): no worker outlives it
        forward(signal.SIGTERM, None)
        for w in workers:
            try:
                w.proc.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                w.proc.kill()
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        for w in workers:
            w.reader.join(timeout=5)
    if every is not None:
        every()
    if not failed.is_set():
        return 0, None
    return describe_failure(workers)
