"""How right the engine's ETA is: a comparison on the bundled demo data (a loaded teacher, three
students in lockstep per seed, two seeds), each Progress event's ETA against the time that then
really remained. Prints, at every epoch end, the ETA, the truth and the error.

    python benchmarks/eta.py [--epochs 6] [--seeds 2] [--arch resnet8]

Target (issue 17): from the first epoch on, within 25 % of the time that then remains.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--teacher", default="resnet20")
    p.add_argument("--student", default="resnet8")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from engine.comparison import run_comparison
    from engine.config import load_config, set_value
    from engine.plan import format_duration
    from engine.run import run_experiment

    root = Path(tempfile.mkdtemp(prefix="mgd-eta-"))
    base = load_config(Path(__file__).resolve().parents[1] / "resources" / "presets" / "demo.yaml")
    for key, value in {"teacher.arch": args.teacher, "student.arch": args.student, "export.enabled": False,
                       "teacher.schedule.epochs": 2, "teacher.schedule.milestones": [],
                       "granularity.schedule.epochs": 2, "granularity.schedule.milestones": [],
                       "student.schedule.epochs": args.epochs, "student.schedule.milestones": [],
                       "evaluation.noise_levels": [0.0, 0.2]}.items():
        base = set_value(base, key, value)
    run_experiment(set_value(set_value(base, "granularity.mode", "off"), "student.schedule.epochs", 0),
                   run_dir=root / "teacher")
    cfg = set_value(base, "teacher.checkpoint", str(root / "teacher" / "checkpoints" / "teacher.pt"))
    for key, value in {"comparison.baselines": ["kd"], "comparison.modes": ["off", "granularity", "stable"],
                       "comparison.student_alone": False, "comparison.seeds": list(range(args.seeds))}.items():
        cfg = set_value(cfg, key, value)
    seen: list[tuple[float, float | None, str]] = []
    latest = {"epoch": None}

    def on_progress(event):  # the figures the engine sends right after an epoch's end
        if latest["epoch"] is not None:
            seen.append((time.monotonic(), event.eta, latest["epoch"]))
            latest["epoch"] = None

    def on_event(event):
        if event.type == "EpochEnd":
            latest["epoch"] = f"{event.stage} epoch {event.epoch}/{event.epochs}"

    t0 = time.monotonic()
    run_comparison(cfg, root / "cmp", subscribers=[on_event], on_progress=on_progress)
    end = time.monotonic()
    print(f"comparison: {args.seeds} seeds x 3 students in lockstep, loaded {args.teacher} teacher, "
          f"{args.student} students, {args.epochs} epochs; {format_duration(end - t0)} in all")
    worst = 0.0
    for at, eta, what in seen:
        truth = end - at
        if eta is None or truth < 1.0:
            continue
        error = (eta - truth) / truth
        worst = max(worst, abs(error))
        print(f"  {what:<22} ETA {format_duration(eta):>8}  truth {format_duration(truth):>8}  {100 * error:+6.1f} %")
    print(f"worst ETA error: {100 * worst:.1f} % (target: 25 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
