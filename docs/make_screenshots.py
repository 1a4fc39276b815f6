"""Take the README's screenshots of the studio's panels (queue, overlay, runs, review).

Run it under an X server (``xvfb-run -a -s "-screen 0 1920x1080x24"``) from the repository:

    PYTHONPATH=. .venv/bin/python docs/make_screenshots.py OUT_DIR [--size 1280x800] [--home DIR]

It queues a small real comparison of the demo (KD with MGD off, granularity and stable, plus the
student alone, two seeds: eight runs) in a studio home of its own, grabs the Queue panel while a
seed's runs train together (their students in lockstep), then the overlay of the eight runs, the runs panel with a renamed and noted run, the
Review window of a confusion cell and Try with a test image. A home that already holds the
finished comparison is reused (the runs are trained once).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

SCHEDULE = {  # a few seconds a run on two CPU cores, enough for curves with a shape
    "teacher.arch": "resnet20", "student.arch": "resnet8",
    "teacher.schedule.epochs": 8, "teacher.schedule.milestones": [5, 7],
    "granularity.schedule.epochs": 4, "granularity.schedule.milestones": [3],
    "student.schedule.epochs": 8, "student.schedule.milestones": [5, 7],
    "export.formats": ["weights"], "device": "cpu",
    "comparison.baselines": ["kd"], "comparison.modes": ["off", "granularity", "stable"],
    "comparison.seeds": [0, 1], "comparison.student_alone": True,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="1280x800")
    parser.add_argument("--home", type=Path, default=Path("/tmp/mgd-screens-home"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    os.environ["MGD_STUDIO_HOME"] = str(args.home)
    args.out.mkdir(parents=True, exist_ok=True)

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    app.setStyle("Fusion")
    from mgd_gui.main_window import MainWindow

    window = MainWindow(probe=False)
    window.ask_unsaved = lambda: "discard"
    window.ask_queue_on_launch = lambda: "later"
    window.resize(width, height)
    window.move(0, 0)
    window.show()
    suffix = f"-{width}x{height}"

    def pump(seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            app.processEvents()
            time.sleep(0.02)

    def shot(widget, name: str) -> None:
        pump(0.5)
        path = args.out / f"{name}{suffix}.png"
        widget.grab().save(str(path))
        print("saved", path)

    pump(0.5)
    folder = window.runs_root / "comparison-demo"
    finished = folder.is_dir() and len(list(folder.glob("s*/summary.json"))) == 8 and all(
        '"finished"' in p.read_text() for p in folder.glob("s*/summary.json"))
    if not finished:  # the eight runs, trained once
        for key, value in SCHEDULE.items():
            window.form.set_field(key, value)
        window.start_run()
        while window.queue.state != "idle" or window.runner.active:
            pump(0.5)
        window.queue.clear_finished()
        window.queue_panel.refresh()

    # the queue at work: a second comparison (seed 2) queued, its KD runs training together
    import shutil

    shutil.rmtree(window.runs_root / "comparison-queue-demo", ignore_errors=True)
    window.queue.clear_finished()
    for key, value in {**SCHEDULE, "name": "queue-demo", "comparison.seeds": [2]}.items():
        window.form.set_field(key, value)
    window.start_run()

    def student_epochs(record) -> int:  # a run's student epochs so far
        return len(record.accuracy.get("student", {}).get("test", []))

    def together() -> list:  # the KD runs of the seed, their students training in lockstep
        return [r for r in window.live_list() if "-kd-" in r.label]

    while len(together()) < 3 or min(student_epochs(r) for r in together()) < 5:
        pump(0.2)
    window.queue_dock.raise_()
    window.plots.tabs.setCurrentIndex(0)
    window.queue_panel.select([window.queue.jobs[2].id])
    shot(window, "screenshot-queue")
    window.cancel_jobs([j.id for j in window.queue.jobs])
    while window.runner.active:
        pump(0.2)
    window.queue.clear_finished()
    window.queue_panel.refresh()
    shutil.rmtree(window.runs_root / "comparison-queue-demo", ignore_errors=True)
    window.load_preset(str(Path("resources/presets/demo.yaml").resolve()))

    # the eight runs overlaid
    window.runs.refresh()
    runs = sorted(p for p in window.runs.infos if p.parent == folder)
    window.plots.tabs.setCurrentIndex(0)
    window.runs.select(runs)
    window.plots.refresh(force=True)
    shot(window, "screenshot-overlay")
    window.plots.set_x_axis("time")
    shot(window.plots, "screenshot-overlay-walltime")
    window.plots.set_x_axis("epoch")

    # run management: a renamed, noted run; the Manage menu
    from engine.runs import annotate_run

    stable = folder / "s0-kd-stable"
    annotate_run(stable, name="KD + MGD stable (seed 0)", note="the paper's setting, shortened schedule")
    window.runs.refresh()
    window.runs.filter_text.setText("kd")
    window.runs.select([stable])
    window.runs_dock.raise_()
    shot(window.runs_dock, "screenshot-runs")
    window.runs.filter_text.setText("")

    # review: a confusion cell of the student, and Try with a test image
    window.reopen_run(stable)
    window.plots.tabs.setCurrentIndex(1)
    window.plots.refresh(force=True)
    pump(0.5)
    import numpy as np

    panel = window.plots.confusion
    m = panel.matrix
    off = m - np.diag(np.diag(m))
    t, p = (int(v) for v in np.unravel_index(np.argmax(off), m.shape))
    record, model, evaluation = panel.shown
    window._confusion_clicked(record, model, t, p, evaluation)
    dialog = window.review_dialog
    dialog.resize(min(960, width - 80), min(640, height - 80))
    while dialog.cell_result is None and dialog.error is None:
        pump(0.2)
    shot(window, "screenshot-classes")
    shot(dialog, "screenshot-review")
    from PIL import Image

    from engine.review import run_predictions

    pred = run_predictions(stable)
    sample = args.out / "try-digit.png"
    Image.fromarray(pred.images[int(np.flatnonzero(pred.labels == 7)[0])].numpy()[0], mode="L").resize(
        (64, 64), Image.Resampling.NEAREST).save(sample)
    dialog.try_image(str(sample))
    while dialog.try_result is None and dialog.error is None:
        pump(0.2)
    shot(dialog, "screenshot-try")
    sample.unlink()
    dialog.close()
    window.close()


if __name__ == "__main__":
    main()
