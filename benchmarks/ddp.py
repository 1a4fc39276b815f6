"""Several processes against one: images per second of the student stage with ``--nproc N``.

The student stage of resnet32x4 -> resnet8x4 (KD with MGD stable) trains for ``--steps``
batches of ``--batch`` images (the global batch) on random CIFAR-size data, through the
engine's own ``Trainer.fit``: in one process, then in N processes started by torchrun (each
trains on its 1/N shard of every batch and the gradients are averaged, as ``mgd-train
--nproc N`` does). The script prints the images per second of each and the scaling
(N-process rate / one-process rate; N is ideal). On the CPU (gloo) it only checks the code
path: the processes share the same cores.

    .venv/bin/python benchmarks/ddp.py [--device cuda] [--nproc 2] [--steps 200] [--quick]

Run plainly it launches the workers itself (``--worker`` marks a worker); the last line is
one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, base_parser, emit_json, environment, random_bundle, setup, student_parts, sync, table

PAIR = ("resnet32x4", "resnet8x4")


def worker(args) -> None:
    """One process of the measured run (torchrun sets RANK and WORLD_SIZE): warm up, then time
    ``--steps`` steps of the student stage; process 0 prints one JSON line."""
    import torch

    from engine import distributed
    from engine.control import RunControl
    from engine.data import make_loader
    from engine.events import EventBus
    from engine.trainer import Trainer

    device = setup(args)
    if device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank())
        torch.cuda.set_device(device)
    distributed.init(cuda=device.type == "cuda")
    rank, size = distributed.world()
    bundle = random_bundle(args.steps * args.batch, 64, num_classes=100)
    loader = make_loader(bundle, "train", batch_size=args.batch, device=device, train=True, crop_padding=4,
                         flip=True, seed=0)
    test_loader = make_loader(bundle, "test", batch_size=64, device=device, train=False)
    task = student_parts(*PAIR, num_classes=100, device=device, mode="stable", test_loader=test_loader)["task"]
    schedule = dict(lr=0.05, momentum=0.9, weight_decay=5e-4, milestones=[], gamma=0.1, seed=0)

    def fit(epochs: int) -> float:
        with tempfile.TemporaryDirectory(prefix="mgd-ddp-") as folder:
            trainer = Trainer(bus=EventBus(), control=RunControl(), checkpoint_dir=Path(folder),
                              train_loader=loader, classes=["c"])
            sync(device)
            t0 = time.perf_counter()
            trainer.fit(task, epochs=epochs, **schedule)
            sync(device)
            return time.perf_counter() - t0

    fit(1)  # warm-up: kernels chosen, memory allocated
    seconds = fit(1)
    if rank == 0:
        print("RESULT " + json.dumps({"processes": size, "seconds": seconds, "steps": args.steps,
                                      "images": args.steps * args.batch,
                                      "images_per_s": args.steps * args.batch / seconds}), flush=True)
    distributed.finish()


def launch(args, processes: int) -> dict:
    """Run the workers (torchrun for several) and return process 0's figures."""
    common = ["--device", args.device, "--steps", str(args.steps), "--batch", str(args.batch), "--worker"]
    if args.threads:
        common += ["--threads", str(args.threads)]
    script = str(Path(__file__).resolve())
    if processes == 1:
        command = [sys.executable, script, *common]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   script, *common]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"ddp.py: {processes} process(es) failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=0, help="processes to compare with one (0: every GPU, or 2)")
    parser.add_argument("--steps", type=int, default=100, help="timed batches")
    parser.add_argument("--batch", type=int, default=64, help="the global batch (split over the processes)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds allowed to each launch")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps = 6
    if args.worker:
        worker(args)
        return
    device = setup(args)
    import torch

    processes = args.nproc or (torch.cuda.device_count() if device.type == "cuda" else 2)
    if processes < 2:
        print(f"ddp.py: {processes} GPU(s): nothing to compare with one process; skipped")
        emit_json({"benchmark": "ddp", "environment": environment(device), "skipped": "fewer than 2 devices"})
        return
    if args.batch % processes:
        raise SystemExit(f"ddp.py: --batch {args.batch} does not split into {processes} equal parts")
    one = launch(args, 1)
    many = launch(args, processes)
    scaling = many["images_per_s"] / one["images_per_s"]
    rows = [[1, f"{one['seconds']:.2f}", f"{one['images_per_s']:.0f}", "1.00"],
            [processes, f"{many['seconds']:.2f}", f"{many['images_per_s']:.0f}", f"{scaling:.2f}"]]
    print(f"student stage {PAIR[0]} -> {PAIR[1]} (KD + MGD stable), {args.steps} batches of {args.batch} "
          f"(the global batch); {environment(device)['device']}")
    print(table(["processes", "seconds", "images/s", "scaling"], rows))
    emit_json({"benchmark": "ddp", "environment": environment(device), "pair": list(PAIR),
               "results": [one, many], "scaling": scaling})


if __name__ == "__main__":
    main()
