"""Images per second of the engine's three stages, with and without AMP and channels-last,
and the projected time of the paper's schedule (teacher 240, heads 60, student 240 epochs
of 50,000 images, an evaluation of 10,000 test images after every epoch).

Run through ``benchmarks/gpu.sh`` on a GPU machine; ``--device cpu --tiny`` checks the
code path on a CPU in seconds. Every measurement is the real engine: ``make_loader``'s
in-memory batches resident on the device, the stage's task as ``engine/run.py`` builds it,
``Trainer.fit`` with events on, the speed settings resolved by ``engine.runtime.speed_settings``.
Throughput is timed from the first step after ``--warmup`` steps to the end of
``--steps`` more (the device synchronised only there); evaluation is timed separately.

    PYTHONPATH=. python benchmarks/gpu_throughput.py --device cuda
    .venv/bin/python benchmarks/gpu_throughput.py --device cpu --tiny
"""

from __future__ import annotations

import time

from _common import (PAPER_PAIRS, EngineHarness, TimedLoader, base_parser, emit_json, environment, random_bundle,
                     setup, stage_task, sync, table)

import torch  # noqa: E402

STAGES = ("teacher", "heads", "student")
SCHEDULE = {"teacher": 240, "heads": 60, "student": 240}  # epochs (METHOD.md)
TRAIN_IMAGES, TEST_IMAGES = 50000, 10000


def combos(device: torch.device, cudnn_benchmark_row: bool, compile_row: bool):
    """(label, amp setting, channels-last setting, cudnn.benchmark, torch.compile) to measure."""
    amp_on = "auto" if device.type == "cuda" else "bf16"
    out = [("fp32", "off", "off", False, False), ("fp32 + channels-last", "off", "on", False, False),
           ("amp", amp_on, "off", False, False), ("amp + channels-last", amp_on, "on", False, False)]
    if cudnn_benchmark_row and device.type == "cuda":
        out.append(("amp + channels-last + cudnn.benchmark", amp_on, "on", True, False))
    if compile_row:
        out.append(("amp + channels-last + compile", amp_on, "on", device.type == "cuda", True))
    return out


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few steps on a few images (checks the code path)")
    parser.add_argument("--pairs", default=",".join(f"{t}:{s}" for t, s in PAPER_PAIRS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before them")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="start no new measurement after this many seconds (the rest is reported as skipped)")
    parser.add_argument("--no-cudnn-benchmark-row", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="add a row with torch.compile (speed.compile; costs ~30-60 s of compilation per model)")
    args = parser.parse_args()
    if args.quick or args.tiny:
        args.steps, args.warmup = (2, 1) if args.tiny else (10, 3)
    if args.tiny:
        args.batch, args.eval_batch = 16, 32
    device = setup(args)
    from engine.config import SpeedConfig
    from engine.data import make_loader
    from engine.runtime import speed_settings

    start = time.perf_counter()
    n_train, n_test = (64, 32) if args.tiny else (TRAIN_IMAGES, TEST_IMAGES)
    bundle = random_bundle(n_train, n_test, 100, seed=args.seed)
    train = make_loader(bundle, "train", batch_size=args.batch, device=device, train=True, crop_padding=4, flip=True,
                        seed=args.seed)
    test = make_loader(bundle, "test", batch_size=args.eval_batch, device=device, train=False)
    epoch_steps = -(-TRAIN_IMAGES // args.batch)
    results, skipped = [], []
    for pair in args.pairs.split(","):
        teacher_arch, student_arch = pair.split(":")
        for label, amp, cl, cudnn_bench, compiled in combos(device, not args.no_cudnn_benchmark_row, args.compile):
            precision, channels_last = speed_settings(SpeedConfig(amp=amp, channels_last=cl), device)
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = cudnn_bench
            for stage in STAGES:
                if time.perf_counter() - start > args.budget_s:
                    skipped.append(f"{pair} {label} {stage}")
                    continue
                task = stage_task(stage, teacher_arch, student_arch, num_classes=100, device=device,
                                  test_loader=test, channels_last=channels_last, compile=compiled)
                loader = TimedLoader(train, args.steps, device, epoch_len=epoch_steps, sync_each=False,
                                     skip=args.warmup + (5 if compiled else 0))
                harness = EngineHarness(loader, precision=precision, channels_last=channels_last)
                harness.fit(task)  # one "epoch" of warmup + timed steps, then the task's own evaluation
                ips = loader.last_throughput(args.batch)
                sync(device)
                t0 = time.perf_counter()
                task.evaluate(1)  # as Trainer.fit runs it after every epoch: outside autocast
                sync(device)
                eval_s = (time.perf_counter() - t0) * (TEST_IMAGES / n_test)
                harness.close()
                epoch_s = TRAIN_IMAGES / ips + eval_s
                results.append({"pair": pair, "setting": label, "precision": precision,
                                "channels_last": channels_last, "cudnn_benchmark": cudnn_bench, "compile": compiled,
                                "stage": stage,
                                "images_per_s": ips, "eval_s": eval_s, "epoch_s": epoch_s,
                                "schedule_min": SCHEDULE[stage] * epoch_s / 60})
                print(f"  {pair} {label} {stage}: {ips:.0f} images/s", flush=True)
                del task, harness
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    env = environment(device)
    print(f"stage throughput, batch {args.batch}, {'tiny check' if args.tiny else 'CIFAR-size random data'} "
          f"resident on {env.get('gpu', env['device'])}; torch {env['torch']}, {env['torch_threads']} CPU threads")
    print(table(["pair", "setting", "stage", "images/s", "eval s/epoch", "epoch s", "schedule min"],
                [[r["pair"].replace(":", " -> "), r["setting"], r["stage"], r["images_per_s"], r["eval_s"], r["epoch_s"],
                  r["schedule_min"]] for r in results]))
    projected = {}
    for r in results:
        key = f"{r['pair']}|{r['setting']}"
        projected.setdefault(key, {})[r["stage"]] = r["schedule_min"]
    rows = []
    for key, stages in projected.items():
        if len(stages) == len(STAGES):
            pair, label = key.split("|")
            total = sum(stages.values())
            rows.append([pair.replace(":", " -> "), label, stages["teacher"], stages["heads"], stages["student"], total])
    print(f"projected paper schedule ({SCHEDULE['teacher']}/{SCHEDULE['heads']}/{SCHEDULE['student']} epochs of "
          f"{TRAIN_IMAGES} images, evaluation every epoch), minutes:")
    print(table(["pair", "setting", "teacher", "heads", "student", "total"], rows))
    if skipped:
        print(f"skipped (over the --budget-s of {args.budget_s:.0f} s): {', '.join(skipped)}")
    emit_json({"benchmark": "gpu_throughput", "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
               "tiny": args.tiny, "results": results,
               "projected_total_min": {k: sum(v.values()) for k, v in projected.items() if len(v) == len(STAGES)},
               "skipped": skipped, "seconds": time.perf_counter() - start, "env": env})


if __name__ == "__main__":
    main()
