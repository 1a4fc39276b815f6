"""How long MGD Studio takes to end after its window closes with nothing running (target: 2 s).

Starts ``mgd-studio --demo`` offscreen in a fresh studio home, closes the window after
``--after`` seconds (early: a background look-up may still be importing torch; later: idle),
and prints the seconds from the close to the end of the process, with its exit code, for each
try; then the median per delay and a JSON line.

    .venv/bin/python benchmarks/studio_exit.py [--after 1 6] [--tries 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import os, sys, time
from PySide6.QtCore import QTimer
import mgd_gui.main_window as mw
from mgd_gui import app

shown = mw.MainWindow.show
def show(self):
    shown(self)
    QTimer.singleShot(int(float(os.environ["CLOSE_AFTER"]) * 1000), self.close)
mw.MainWindow.show = show
closing = mw.MainWindow.closeEvent
def close_event(self, event):
    closing(self, event)
    if event.isAccepted():
        print("CLOSED", time.time(), flush=True)
mw.MainWindow.closeEvent = close_event
sys.exit(app.main(["--demo"]))
"""


def one_try(after: float) -> tuple[float | None, int, str]:
    with tempfile.TemporaryDirectory(prefix="mgd-exit-") as home:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", MGD_STUDIO_HOME=home, CLOSE_AFTER=str(after),
                   PYTHONPATH=str(REPO))
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env, cwd=str(REPO))
        closed = None
        for line in child.stdout:
            if line.startswith("CLOSED"):
                closed = float(line.split()[1])
        child.wait()
        end = time.time()
        return (end - closed if closed else None), child.returncode, child.stderr.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", type=float, nargs="+", default=[1.0, 6.0],
                        help="seconds after the window shows at which it closes")
    parser.add_argument("--tries", type=int, default=3)
    args = parser.parse_args()
    result = {}
    for after in args.after:
        times = []
        for n in range(args.tries):
            seconds, code, errors = one_try(after)
            aborted = "terminate called" in errors
            print(f"close after {after:g} s, try {n + 1}: exit {code} "
                  + (f"{seconds:.2f} s after the close" if seconds is not None else "(no close seen)")
                  + ("; aborted in a destructor" if aborted else ""))
            if seconds is not None:
                times.append(seconds)
        if times:
            result[f"after_{after:g}s"] = round(statistics.median(times), 3)
            print(f"median after {after:g} s: {statistics.median(times):.2f} s (target 2 s)")
    print(json.dumps({"benchmark": "studio_exit", **result}))


if __name__ == "__main__":
    main()
