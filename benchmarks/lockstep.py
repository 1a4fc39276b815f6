"""Students in lockstep against separate runs: the student stage of K students sharing one teacher.

For each pair (resnet56 -> resnet8, resnet32x4 -> resnet8x4) three students of KD with MGD
off, granularity and stable train one epoch over the same random CIFAR-size batches: once
as three separate runs (``Trainer.fit`` each, every run paying the teacher's forward pass)
and once in lockstep (``engine.trainer.fit_sessions``, the engine's one batch loop: one teacher pass per batch). The two
sides take turns in every round (the order reversed every other round); the figure is the
median of the per-round ratios lockstep / separate with its bootstrap interval and quartiles
(``_common.paired_ratio``), in process CPU time on a CPU (which a neighbour's load moves
least) and wall time on a GPU. Targets on 2 CPU cores: <= 0.55 for resnet56 -> resnet8 and
<= 0.75 for resnet32x4 -> resnet8x4 (the teacher's share of a step is what lockstep saves).

    .venv/bin/python benchmarks/lockstep.py [--quick] [--device cuda] [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import (base_parser, emit_json, environment, format_ratio, paired_ratio, random_bundle, setup,
                     student_parts, summary, sync, table)


PAIRS = (("resnet56", "resnet8", 0.55), ("resnet32x4", "resnet8x4", 0.75))
MODES = ("off", "granularity", "stable")


def students(teacher_arch, student_arch, device, classes, test_loader):
    """Three students of KD (MGD off, granularity, stable) sharing one frozen teacher and its heads."""
    first = student_parts(teacher_arch, student_arch, num_classes=classes, device=device, mode="stable",
                          test_loader=test_loader)
    tasks = [student_parts(teacher_arch, student_arch, num_classes=classes, device=device, mode=mode,
                           test_loader=test_loader, teacher=first["teacher"],
                           teacher_heads=first["teacher_heads"])["task"] for mode in MODES]
    return tasks


def trainers(loader, count, device):
    from engine.control import RunControl
    from engine.events import EventBus
    from engine.trainer import Trainer

    folders = [tempfile.mkdtemp(prefix="mgd-lockstep-") for _ in range(count)]
    return [Trainer(bus=EventBus(), control=RunControl(), checkpoint_dir=Path(f), train_loader=loader,
                    classes=["c"]) for f in folders]


SCHEDULE = dict(epochs=1, lr=0.05, momentum=0.9, weight_decay=5e-4, milestones=[], gamma=0.1, seed=0)


def separate(teacher_arch, student_arch, device, classes, loader, test_loader) -> tuple[float, float]:
    """(wall, process CPU) seconds of the three students trained one after the other."""
    tasks = students(teacher_arch, student_arch, device, classes, test_loader)
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for task, trainer in zip(tasks, trainers(loader, len(tasks), device)):
        trainer.fit(task, **SCHEDULE)
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def together(teacher_arch, student_arch, device, classes, loader, test_loader) -> tuple[float, float]:
    """(wall, process CPU) seconds of the three students trained in lockstep."""
    from engine.control import RunControl
    from engine.trainer import fit_sessions

    tasks = students(teacher_arch, student_arch, device, classes, test_loader)
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    sessions = [trainer.session(task, own_rng=True, **SCHEDULE)
                for task, trainer in zip(tasks, trainers(loader, len(tasks), device))]
    fit_sessions(sessions, loader, RunControl())
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20, help="batches in the epoch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 8, 3
        if args.threads == 0:  # one thread: no spinning at barriers while a neighbour holds the other core
            args.threads = 1
    device = setup(args)
    from engine.data import make_loader

    bundle = random_bundle(args.steps * args.batch, 16, num_classes=args.classes)
    loader = make_loader(bundle, "train", batch_size=args.batch, device=device, train=True, crop_padding=4,
                         flip=True, seed=0)
    test_loader = make_loader(bundle, "test", batch_size=16, device=device, train=False)
    clock = "cpu" if device.type == "cpu" else "wall"
    rows, results = [], []
    for teacher_arch, student_arch, target in PAIRS:
        times = {"separate": [], "lockstep": []}
        for r in range(args.rounds):  # take turns, the order reversed every other round
            order = ("separate", "lockstep") if r % 2 == 0 else ("lockstep", "separate")
            for side in order:
                fn = separate if side == "separate" else together
                times[side].append(fn(teacher_arch, student_arch, device, args.classes, loader, test_loader))
        r_wall = paired_ratio([t[0] for t in times["lockstep"]], [t[0] for t in times["separate"]])
        r_cpu = paired_ratio([t[1] for t in times["lockstep"]], [t[1] for t in times["separate"]])
        ratio = (r_cpu if clock == "cpu" else r_wall)["median"]
        sep = summary([t[0] for t in times["separate"]])["median"]
        lock = summary([t[0] for t in times["lockstep"]])["median"]
        rows.append([f"{teacher_arch} -> {student_arch}", f"{sep:.2f}", f"{lock:.2f}", format_ratio(r_cpu),
                     format_ratio(r_wall), f"<= {target}", "met" if ratio <= target else "missed"])
        results.append({"pair": [teacher_arch, student_arch], "separate_s": sep, "lockstep_s": lock, "clock": clock,
                        "ratio": ratio, "ratio_cpu_time": r_cpu, "ratio_wall": r_wall, "target": target,
                        "students": len(MODES), "steps": args.steps, "batch": args.batch})
    env = environment(device)
    print(f"3 students (KD with MGD {', '.join(MODES)}), one epoch of {args.steps} batches of {args.batch}, "
          f"{args.rounds} rounds; {env['device']}, {env['torch_threads']} threads ({env['cpu_count']} CPUs, "
          f"load {env['load_average_1min']}); ratios: median of the rounds [95% bootstrap interval, quartiles], "
          f"the target in {'process CPU' if clock == 'cpu' else 'wall'} time")
    print(table(["pair", "separate (s)", "lockstep (s)", "lockstep / separate (CPU time)", "(wall time)", "target",
                 ""], rows))
    emit_json({"benchmark": "lockstep", "environment": env, "results": results})


if __name__ == "__main__":
    main()
