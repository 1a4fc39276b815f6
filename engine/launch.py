"""The processes of one run started and ended together (``mgd-train CONFIG --nproc N``).

:func:`run_workers` starts N copies of the same ``mgd-train`` command with the environment
``torch.distributed`` reads (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...), as torchrun
would, and watches them:

* when one process ends in failure (an error, a crash, ``kill -9``), the others are stopped
  (SIGTERM, then SIGKILL after :data:`GRACE_S`), and the run's end is one line naming the
  process that failed first and why; the others' consequences (a peer's "Connection reset
  by peer") are not printed;
* each worker gets the kernel's parent-death signal (Linux ``PR_SET_PDEATHSIG``): when the
  launcher dies, however it dies, its workers get SIGTERM and stop at the same step.

The workers' standard output is theirs; their standard error passes through the launcher
line by line (their failure lines are held back, only the first failure's is told), through
a file rather than a pipe, so a worker whose launcher died can still write while it stops.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

#: the lines ``mgd-train`` ends a failed run with (held back: only the cause's is told)
FAILURE_PREFIXES = ("mgd-train: error: ", "mgd-train: training failed: ")
#: seconds the other processes get to stop after one failed, before they are killed
GRACE_S = 15.0
PR_SET_PDEATHSIG = 1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with(parent: int):
    """A ``preexec_fn``: the child gets SIGTERM when ``parent`` dies (and ends now if it already has)."""
    def setup() -> None:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:
            os._exit(1)
    return setup


@dataclass
class Worker:
    rank: int
    proc: subprocess.Popen
    said: str | None = None  # its failure line, held back
    ended: int | None = None  # the watch round in which it was seen ended
    reader: threading.Thread | None = field(default=None, repr=False)


def _forward(worker: Worker, stream, failed: threading.Event, lock: threading.Lock) -> None:
    """Pass the worker's standard error on, line by line, until it has ended (failure lines held)."""
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
            line = raw.decode("utf-8", errors="replace")
            if line.startswith(FAILURE_PREFIXES):
                worker.said = worker.said or line
            elif not failed.is_set():
                with lock:
                    sys.stderr.write(line + "\n")
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


def describe_failure(workers: list[Worker]) -> tuple[int, str]:
    """(exit status, one line) for workers of which at least one failed: the first to fail is the cause."""
    failed = [w for w in workers if w.proc.returncode not in (0, None)]
    cause = min(failed, key=lambda w: (w.ended or 0, w.said is not None, w.rank))  # a silent death first
    if cause.said:
        return (2 if cause.proc.returncode == 2 else 1), cause.said
    others = len(workers) - 1
    return 1, (f"mgd-train: training failed: process {cause.rank} of {len(workers)} {_how(cause)}; "
               f"the other process{'es were' if others > 1 else ' was'} stopped")


def run_workers(command: list[str], nproc: int, env: dict | None = None) -> tuple[int, str | None]:
    """Run ``nproc`` copies of ``command`` as the ranks of one process group; returns (0, None)
    when they all ended well, else (exit status, the one line that says which failed and why).
    A SIGTERM to this process reaches every worker (Ctrl-C reaches them directly)."""
    base = {**(env or os.environ), "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    linux = sys.platform.startswith("linux")
    workers: list[Worker] = []
    failed, lock = threading.Event(), threading.Lock()
    for rank in range(nproc):
        # standard error goes to a file the launcher reads (not a pipe): a worker that outlives
        # its launcher for a moment (the parent-death signal) can still write, and stop cleanly
        fd, name = tempfile.mkstemp(prefix=f"mgd-rank{rank}-", suffix=".stderr")
        stream = open(name, "rb")
        try:
            os.unlink(name)  # gone with its last reader and writer, however they end
        except OSError:  # Windows: an open file stays; removed when the run ends
            pass
        try:
            proc = subprocess.Popen(command, env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                    stderr=fd, preexec_fn=_die_with(os.getpid()) if linux else None)
        finally:
            os.close(fd)
        worker = Worker(rank, proc)
        worker.reader = threading.Thread(target=_forward, args=(worker, stream, failed, lock), daemon=True)
        worker.reader.start()
        workers.append(worker)

    def forward(signum, frame):
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    deadline, watch = None, 0
    try:
        while any(w.ended is None for w in workers):
            watch += 1
            try:
                for w in workers:
                    if w.ended is None and w.proc.poll() is not None:
                        w.ended = watch
                        if w.proc.returncode != 0 and not failed.is_set():
                            failed.set()
                            forward(signal.SIGTERM, None)
                            deadline = time.monotonic() + GRACE_S
                if deadline is not None and time.monotonic() > deadline:
                    for w in workers:
                        if w.proc.poll() is None:
                            w.proc.kill()
                time.sleep(0.05)
            except KeyboardInterrupt:  # the workers got the Ctrl-C too and stop cleanly
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)
        for w in workers:
            w.reader.join(timeout=5)
    if not failed.is_set():
        return 0, None
    return describe_failure(workers)
