"""How late does a 10 ms timer on the GUI thread fire while a demo run trains?

Starts MGD Studio's main window (offscreen unless a display is set), starts the demo
preset from it, and records every tick of a 10 ms QTimer until the run ends (or
``--seconds`` pass). Lateness = time between ticks - 10 ms. Prints a table and one JSON
line. Also measures the idle window first, as the baseline.

    python benchmarks/gui_latency.py [--epochs N] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

INTERVAL_MS = 10


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure(app, seconds: float, until=None) -> list[float]:
    from PySide6.QtCore import QEventLoop, QTimer

    late: list[float] = []
    last = [time.perf_counter()]
    loop = QEventLoop()

    def tick() -> None:
        now = time.perf_counter()
        late.append(max(0.0, (now - last[0]) * 1000 - INTERVAL_MS))
        last[0] = now
        if until is not None and until():
            loop.quit()

    timer = QTimer()
    timer.setTimerType(timer.timerType().PreciseTimer)
    timer.setInterval(INTERVAL_MS)
    timer.timeout.connect(tick)
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    timer.start()
    loop.exec()
    timer.stop()
    return late


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="override every stage's epochs (default: the preset's)")
    parser.add_argument("--seconds", type=float, default=90.0, help="longest time to measure during the run")
    args = parser.parse_args()
    os.environ.setdefault("MGD_STUDIO_HOME", tempfile.mkdtemp(prefix="mgd-latency-"))

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    from mgd_gui.main_window import MainWindow

    window = MainWindow()
    window.resize(1280, 800)
    window.show()
    if args.epochs is not None:
        for key in ("teacher.schedule.epochs", "granularity.schedule.epochs", "student.schedule.epochs"):
            window.form.set_field(key, args.epochs)
            window.form.set_field(key.replace("epochs", "milestones"), [])  # the preset's may lie past the end
    window.form.set_field("export.enabled", False)
    # start-up: the background look-ups import torch and the engine (the interpreter lock
    # is held during parts of an import); then the idle window
    startup = measure(app, 60.0, until=lambda: window.lookups.warm and window.devices.probed)
    idle = measure(app, 2.0)

    events = [0]
    window.runner.event.connect(lambda *_: events.__setitem__(0, events[0] + 1))
    started = time.perf_counter()
    window.start_run()
    busy = measure(app, args.seconds, until=lambda: not window.runner.active)
    seconds = time.perf_counter() - started
    if window.runner.active:
        window.runner.stop()
        window.runner.wait(60)
    app.processEvents()

    rows = []
    for name, data in (("start-up look-ups", startup), ("idle window", idle), ("during the demo run", busy)):
        rows.append({"phase": name, "ticks": len(data), "median_ms": statistics.median(data) if data else float("nan"),
                     "p99_ms": percentile(data, 99), "max_ms": max(data) if data else float("nan")})
    print(f"{'phase':<22}{'ticks':>7}{'median late (ms)':>18}{'p99 late (ms)':>15}{'max late (ms)':>15}")
    for r in rows:
        print(f"{r['phase']:<22}{r['ticks']:>7}{r['median_ms']:>18.2f}{r['p99_ms']:>15.2f}{r['max_ms']:>15.2f}")
    result = {"benchmark": "gui_latency", "timer_ms": INTERVAL_MS, "run_seconds": round(seconds, 2),
              "events": events[0], "run_status": window.live.status if window.live else None,
              "cpu_count": os.cpu_count(),
              "startup": {k: round(v, 3) for k, v in rows[0].items() if k.endswith("_ms")},
              "idle": {k: round(v, 3) for k, v in rows[1].items() if k.endswith("_ms")},
              "run": {k: round(v, 3) for k, v in rows[2].items() if k.endswith("_ms")},
              "ticks": len(busy)}
    print(json.dumps(result))
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
