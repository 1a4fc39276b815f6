"""Engine overhead: a step of the engine's student stage against a hand-written PyTorch loop.

The engine side is the real thing: ``Trainer.fit`` (events on: a metrics.jsonl writer and a
list subscriber, logging as often as in a real epoch, control checks, loss windows, the
epoch-end checkpoint) driving a ``StudentTask`` with the KD baseline, a frozen teacher and
its trained-style heads, MGD mode stable. The hand-written side does the same forward
passes, losses (CE, KD against the stable target, one code term per head), backward and
SGD step in a plain loop. Both train their own copy of the same student from the same
weights on the same batch. The two sides alternate step by step (engine, hand, engine, ...:
the hand step runs inside the engine's data loader, outside the engine's timed step), so
that a busy neighbour slows both alike; the first step of each round (fresh optimisers) is
left out. The script reports the median step times, their ratio and the median of the
paired ratios, and checks that both sides compute the same loss and the same weights.

    .venv/bin/python benchmarks/engine_overhead.py [--quick] [--device cuda]
"""

from __future__ import annotations

import copy
import statistics
import time

from _common import (base_parser, emit_json, environment, fixed_batch, setup, student_parts, summary, sync, table,
                     EngineHarness, tiny_test_loader)

import torch  # noqa: E402  (after _common, which puts the repository on the path)
import torch.nn.functional as F  # noqa: E402

TARGET = 1.03


class PairedLoader:
    """The engine's train loader for this benchmark: hands ``Trainer.fit`` the fixed batch
    ``steps`` times and, between two engine steps, runs one hand-written step, so that every
    engine step is timed right next to a hand step (a busy neighbour slows both alike).
    ``pairs`` holds (engine wall, engine CPU, hand wall, hand CPU, step index)."""

    def __init__(self, batch, steps: int, device, hand_step, new_round):
        self.batch, self.steps, self.device = batch, steps, device
        self.hand_step, self.new_round = hand_step, new_round
        self.pairs: list[tuple[float, float, float, float, int]] = []

    def __len__(self) -> int:
        return 782  # the steps of a CIFAR epoch at batch 64: the trainer logs as often as in a real run

    def epoch(self, epoch: int, start_step: int = 0):
        self.new_round()
        prev = None
        for i in range(self.steps + 1):
            if prev is not None:  # the engine's step i - 1 is done
                sync(self.device)
                engine = (time.perf_counter() - prev[0], time.process_time() - prev[1])
                self.pairs.append((*engine, *self.hand_step(), i - 1))
            if i == self.steps:
                return
            sync(self.device)
            prev = (time.perf_counter(), time.process_time())
            yield self.batch


def hand_loss(student, student_heads, teacher, teacher_heads, x, y, temperature=4.0, w_ce=0.2, w_div=0.8):
    """KD + MGD stable written out by hand (METHOD.md, "Stage 3 loss")."""
    s_logits, s_feats = student(x)
    with torch.no_grad():
        t_logits, t_feats = teacher(x)
        t_codes = [h.encoder(t_feats[-1]) for h in teacher_heads.heads]
        decoded = [h.decoder(c) for h, c in zip(teacher_heads.heads, t_codes)]
        target = torch.stack([t_logits, *decoded]).mean(dim=0)
    t = temperature
    loss = w_ce * F.cross_entropy(s_logits, y)
    loss = loss + w_div * F.kl_div(F.log_softmax(s_logits / t, dim=1), F.softmax(target / t, dim=1),
                                   reduction="batchmean") * (t * t)
    for head, t_code in zip(student_heads.heads, t_codes):
        tg = head.temperature
        s_code = head.encoder(s_feats[-1])
        loss = loss + F.kl_div(F.log_softmax(s_code / tg, dim=1), F.softmax(t_code / tg, dim=1),
                               reduction="batchmean") * (tg * tg)
    return loss


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="step pairs per round (one Trainer.fit)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off", help="autocast on both sides")
    parser.add_argument("--channels-last", action="store_true", help="channels-last on both sides")
    args = parser.parse_args()
    if args.quick:
        args.teacher, args.student = "resnet56", "resnet20"
        args.steps, args.rounds = 10, 3
    device = setup(args)
    precision = {"off": "fp32"}.get(args.amp, args.amp)
    cl = args.channels_last
    batch = fixed_batch(args.batch, args.classes, args.size, device, seed=args.seed)
    x, y, idx = batch
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
        batch = (x, y, idx)

    parts = student_parts(args.teacher, args.student, num_classes=args.classes, device=device, mode="stable",
                          size=args.size, channels_last=cl, seed=args.seed,
                          test_loader=tiny_test_loader(device, args.classes, args.size))
    task = parts["task"]
    teacher, teacher_heads = parts["teacher"], parts["teacher_heads"]
    h_student = copy.deepcopy(parts["student"])
    h_heads = copy.deepcopy(parts["student_heads"])
    h_params = list(h_student.parameters()) + h_heads.encoder_parameters()
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    # the same loss on the same batch from the same weights
    task.train_mode()
    h_student.train()
    h_heads.train()
    with torch.no_grad():
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            engine_total = float(task.step(x, y, idx).total)
            hand_total = float(hand_loss(h_student, h_heads, teacher, teacher_heads, x, y))

    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    hand_opt: list = []

    def hand_step() -> tuple[float, float]:
        """One hand-written step; (wall, process CPU) seconds."""
        sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = hand_loss(h_student, h_heads, teacher, teacher_heads, x, y)
        optimizer = hand_opt[-1]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sync(device)
        return time.perf_counter() - w0, time.process_time() - c0

    def new_round():
        # a fresh optimiser on the hand side whenever Trainer.fit makes one on the engine side
        hand_opt[:] = [torch.optim.SGD(h_params, lr=0.05, momentum=0.9, weight_decay=5e-4)]
        h_student.train()
        h_heads.train()

    loader = PairedLoader(batch, args.steps, device, hand_step, new_round)
    harness = EngineHarness(loader, precision=precision, channels_last=cl)
    harness.fit(task)  # warm-up round (not timed), after which the weights of both sides must agree
    loader.pairs.clear()
    with torch.no_grad():
        weight_diff = max(float((a - b).abs().max()) for a, b in zip(parts["student"].parameters(),
                                                                    h_student.parameters()))
    for _ in range(args.rounds):
        harness.fit(task)
    harness.close()
    pairs = [p for p in loader.pairs if p[4] > 0]  # the first step of a round (fresh optimisers) left out
    eng, hand = summary([p[0] for p in pairs]), summary([p[2] for p in pairs])
    eng_cpu, hand_cpu_s = summary([p[1] for p in pairs]), summary([p[3] for p in pairs])
    ratio = eng["median"] / hand["median"]
    paired = statistics.median(p[0] / p[2] for p in pairs)  # each engine step against the hand step next to it
    ratio_cpu = eng_cpu["median"] / hand_cpu_s["median"]
    env = environment(device)
    print(f"engine overhead: {args.teacher} -> {args.student}, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.classes} classes, KD + MGD stable (2 heads), {precision}{', channels-last' if cl else ''}")
    print(f"device {env['device']}, torch {env['torch']}, {env['torch_threads']} threads "
          f"({env['cpu_count']} CPUs, load {env['load_average_1min']})")
    print(table(["side", "median ms", "p25 ms", "p75 ms", "CPU ms (median)", "steps"],
                [[name, s["median"] * 1e3, s["p25"] * 1e3, s["p75"] * 1e3, c["median"] * 1e3, s["n"]]
                 for name, s, c in (("engine (Trainer.fit)", eng, eng_cpu), ("hand-written loop", hand, hand_cpu_s))]))
    verdict = "met" if ratio <= TARGET else "missed"
    print(f"ratio engine/hand = {ratio:.3f} (target <= {TARGET}: {verdict}); median of paired ratios {paired:.3f}; "
          f"process CPU time {ratio_cpu:.3f}; "
          f"same loss: |engine - hand| = {abs(engine_total - hand_total):.2e}, "
          f"weights after a round: max |diff| = {weight_diff:.2e}")
    emit_json({"benchmark": "engine_overhead", "teacher": args.teacher, "student": args.student,
               "batch": args.batch, "classes": args.classes, "size": args.size, "precision": precision,
               "channels_last": cl, "engine_ms": eng["median"] * 1e3, "hand_ms": hand["median"] * 1e3,
               "engine": eng, "hand": hand, "ratio": ratio, "paired_ratio": paired, "ratio_cpu_time": ratio_cpu,
               "engine_cpu": eng_cpu, "hand_cpu": hand_cpu_s, "target": TARGET, "met": ratio <= TARGET,
               "loss_diff": abs(engine_total - hand_total), "weight_diff": weight_diff, "env": env})


if __name__ == "__main__":
    main()
