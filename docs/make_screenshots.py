"""Take the README's screenshots of the studio's panels (queue, overlay, runs, review).

Run it under an X server (``xvfb-run -a -s "-screen 0 1920x1080x24"``) from the repository:

    PYTHONPATH=. .venv/bin/python docs/make_screenshots.py OUT_DIR [--size 1280x800] [--home DIR]
    PYTHONPATH=. .venv/bin/python docs/make_screenshots.py docs/screens --screens [--sizes 1024x700,1280x800]

It queues a small real comparison of the demo (KD with MGD off, granularity and stable, plus the
student alone, two seeds: eight runs) in a studio home of its own, grabs the Queue panel while a
seed's runs train together (their students in lockstep), then the overlay of the eight runs, the runs panel with a renamed and noted run, the
Review window of a confusion cell and Try with a test image. A home that already holds the
finished comparison is reused (the runs are trained once).

``--screens`` takes instead the main window and each dialog (Compare, Inspect, Review, Export,
the run error, the model search list) on screens of each of ``--sizes`` (1024x700, 1280x800 and
1920x1080 by default): ``OUT_DIR/<name>-<W>x<H>.png`` is the whole screen, the main window and
the dialog where the studio placed them (:func:`mgd_gui.screen.simulate` makes the studio size
its windows for that screen; it also runs offscreen, ``QT_QPA_PLATFORM=offscreen``, without X).
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


SCREENS = "1024x700,1280x800,1920x1080"


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="1280x800", help="the README screenshots' window size")
    parser.add_argument("--screens", action="store_true",
                        help="the main window and each dialog on screens of each of --sizes")
    parser.add_argument("--sizes", default=SCREENS, help=f"comma-separated screen sizes for --screens ({SCREENS})")
    parser.add_argument("--home", type=Path, default=Path("/tmp/mgd-screens-home"))
    args = parser.parse_args()
    width, height = _size(args.size)
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
    if args.screens:
        screens(window, folder, [_size(s) for s in args.sizes.split(",")], args.out, pump)
        window.close()
        return
    readme_shots(window, folder, args, width, height, shot, pump)


def readme_shots(window, folder: Path, args, width: int, height: int, shot, pump) -> None:
    """The README's screenshots (the queue at work, the overlay, the runs panel, Review and Try)."""
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


def screens(window, folder: Path, sizes: list[tuple[int, int]], out: Path, pump) -> None:
    """The main window and each dialog on a screen of each size: ``out/<name>-<W>x<H>.png``."""
    import traceback

    from PySide6.QtCore import QRect
    from PySide6.QtGui import QColor, QPainter, QPixmap

    from mgd_gui import screen
    from mgd_gui.run.error_dialog import error_dialog

    window.runs.refresh()
    runs = sorted(p for p in window.runs.infos if p.parent == folder)
    stable = folder / "s0-kd-stable"
    other = folder / "s0-kd-off"
    try:
        from engine.config import load_config

        load_config(folder / "no-such-experiment.yaml")
    except Exception as exc:  # a real failure's message and traceback, for the error dialog
        failure = {"message": str(exc), "kind": "input", "stage": "setup", "details": traceback.format_exc(),
                   "run_dir": str(stable)}

    for width, height in sizes:
        screen.simulate((width, height))
        area = QRect(0, 0, width, height)

        def save(name: str, *windows) -> None:
            """The screen: each window's contents where its frame is (the frame itself is not drawn)."""
            pump(0.5)
            canvas = QPixmap(width, height)
            canvas.fill(QColor("#3b4252"))
            painter = QPainter(canvas)
            for w in windows:
                painter.drawPixmap(w.geometry().topLeft(), w.grab())
                frame = w.frameGeometry()
                if not area.contains(frame):
                    print(f"  ! {name}: {w.windowTitle()!r} at {frame.x()},{frame.y()} {frame.width()}x"
                          f"{frame.height()} leaves the {width}x{height} screen")
            painter.end()
            path = out / f"{name}-{width}x{height}.png"
            canvas.save(str(path))
            print("saved", path, " ".join(f"{w.windowTitle() or 'window'}: {w.width()}x{w.height()}"
                                          for w in windows))

        window.resize(screen.room(window))
        window.move(0, 0)
        window.runs.select(runs)
        window.plots.refresh(force=True)
        window.log_dock.raise_()
        save("main", window)
        window.queue_dock.raise_()
        save("main-queue", window)
        window.log_dock.raise_()

        window.show_compare(runs[:4])
        save("compare", window, window.compare_dialog)
        window.compare_dialog.close()

        window.show_inspect(stable)
        dialog = window.inspect_dialog
        while dialog.running:
            pump(0.2)
        index = dialog.other.findData(str(other))
        if index >= 0:
            dialog.other.setCurrentIndex(index)
        save("inspect", window, dialog)
        dialog.close()

        review = window.show_review(stable)
        review.show_cell(1, 7, "student")
        while review.cell_result is None and review.error is None:
            pump(0.2)
        save("review", window, review)
        review.close()

        window.show_export(stable)
        save("export", window, window.export_dialog)
        window.export_dialog.close()

        box = error_dialog(window, failure)
        box.open()
        box.show_details(True)
        save("error", window, box)
        box.close()

        window.form.show_section("student")
        picker = window.form.editor("student.arch")
        if picker.combo.findData("timm:mobilenetv3_small_100") < 0:
            from engine.models.sources import catalog

            picker.set_catalog(catalog())
        picker.search.setFocus()
        picker.search.clear()
        from PySide6.QtTest import QTest

        QTest.keyClicks(picker.search, "timm:mobilenet")
        pump(0.8)
        save("model-search", window, picker.completer.popup())
        picker.completer.popup().hide()
        picker.search.clear()
    screen.simulate(None)


if __name__ == "__main__":
    main()
