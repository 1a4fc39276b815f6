"""Peak memory of each stage (teacher, heads, student) for two paper pairs.

Each stage runs in a fresh Python process (so that the peak resident set size is that
stage's alone): a CIFAR-size random data set held as the engine holds it (BatchLoader,
uint8 on the device), the stage's models built as ``engine/run.py`` builds them, and
``Trainer.fit`` for a few training steps at batch 64 plus one evaluation batch (the
evaluation batch size of a run, 256). Reported: the process's peak RSS (``ru_maxrss``), its
RSS before the models were built (imports and data), and on a GPU the CUDA max allocated,
the figures ``summary.json`` gives per stage (``stages.<name>.peak_rss_mib`` /
``cuda_max_allocated_mib``).

    .venv/bin/python benchmarks/memory.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _common import (PAPER_PAIRS, REPO, LimitedLoader, EngineHarness, TimedLoader, base_parser, emit_json,
                     environment, random_bundle, rss_mib, setup, stage_task, table)

import torch  # noqa: E402

STAGES = ("teacher", "heads", "student")


def child(args) -> None:
    """One stage in this process; prints one JSON line."""
    from engine.data import make_loader
    from engine.runtime import peak_memory

    device = setup(args)
    teacher_arch, student_arch = args.pair.split(":")
    bundle = random_bundle(args.train, args.test, args.classes, seed=args.seed)
    train = make_loader(bundle, "train", batch_size=args.batch, device=device, train=True, crop_padding=4, flip=True,
                        seed=args.seed)
    test = LimitedLoader(make_loader(bundle, "test", batch_size=args.eval_batch, device=device, train=False),
                         args.eval_batches)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = rss_mib()
    data_cuda = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None
    task = stage_task(args.stage, teacher_arch, student_arch, num_classes=args.classes, device=device,
                      test_loader=test)
    loader = TimedLoader(train, args.steps, device, epoch_len=len(train))
    t0 = time.perf_counter()
    harness = EngineHarness(loader)
    harness.fit(task)
    harness.close()
    peak = peak_memory(device)
    print(json.dumps({"stage": args.stage, "pair": args.pair, "rss_before_models_mib": before,
                      "cuda_data_mib": data_cuda, "seconds": time.perf_counter() - t0, **peak}))


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=",".join(f"{t}:{s}" for t, s in PAPER_PAIRS))
    parser.add_argument("--train", type=int, default=50000, help="training images (CIFAR: 50000)")
    parser.add_argument("--test", type=int, default=10000, help="test images (CIFAR: 10000)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--eval-batches", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="training steps per stage")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--pair", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps = 2
    if args.child:
        child(args)
        return
    device = setup(args)
    results = []
    for pair in args.pairs.split(","):
        for stage in STAGES:
            cmd = [sys.executable, __file__, "--child", "--stage", stage, "--pair", pair, "--device", args.device,
                   "--threads", str(args.threads), "--seed", str(args.seed), "--train", str(args.train),
                   "--test", str(args.test), "--classes", str(args.classes), "--batch", str(args.batch),
                   "--eval-batch", str(args.eval_batch), "--eval-batches", str(args.eval_batches),
                   "--steps", str(args.steps)]
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{pair} {stage}: the child process failed:\n{out.stderr[-3000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  measured {pair} {stage}", flush=True)
    env = environment(device)
    print(f"peak memory per stage: {args.train} + {args.test} random 32x32 images in memory, batch {args.batch}, "
          f"{args.steps} steps + {args.eval_batches} evaluation batch(es) of {args.eval_batch}; device {env['device']}, "
          f"torch {env['torch']}, {env['torch_threads']} threads")
    headers = ["pair", "stage", "peak RSS MiB", "RSS before models MiB", "peak - before MiB"]
    if device.type == "cuda":
        headers += ["CUDA max allocated MiB", "CUDA data MiB"]
    rows = []
    for r in results:
        row = [r["pair"].replace(":", " -> "), r["stage"], r["peak_rss_mib"], r["rss_before_models_mib"],
               r["peak_rss_mib"] - r["rss_before_models_mib"]]
        if device.type == "cuda":
            row += [r.get("cuda_max_allocated_mib"), r.get("cuda_data_mib")]
        rows.append(row)
    print(table(headers, rows))
    emit_json({"benchmark": "memory", "train_images": args.train, "test_images": args.test, "batch": args.batch,
               "steps": args.steps, "results": results, "env": env})


if __name__ == "__main__":
    main()
