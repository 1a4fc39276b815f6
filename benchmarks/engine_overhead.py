"""Engine overhead: a step of the engine's student stage against a hand-written PyTorch loop.

The engine side is the real thing: ``Trainer.fit`` (events on: a metrics.jsonl writer and a
list subscriber, logging as often as in a real epoch, control checks, loss windows, the
epoch-end checkpoint) driving a ``StudentTask`` with the KD baseline, a frozen teacher and
its trained-style heads, MGD mode stable. The hand-written side does the same forward
passes, losses (CE, KD against the stable target, one code term per head), backward and
SGD step in a plain loop. Both train their own copy of the same student from the same
weights on the same batch. The two sides alternate step by step (engine, hand, engine, ...:
``_common.TakeTurns``), so that a busy neighbour slows both alike; the first step of each
round (fresh optimisers) is left out. The figure is the median of the per-pair ratios engine / hand with its 95 %
bootstrap interval and quartiles (``_common.paired_ratio``), in process CPU time on a CPU
(which a neighbour's load moves least) and wall time on a GPU; the script also checks that
both sides compute the same loss and the same weights.

    .venv/bin/python benchmarks/engine_overhead.py [--quick] [--device cuda]
"""

from __future__ import annotations

import copy

from _common import (EngineHarness, TakeTurns, base_parser, emit_json, environment, fixed_batch, format_ratio,
                     paired_ratio, setup, student_parts, summary, table, tiny_test_loader)

import torch  # noqa: E402  (after _common, which puts the repository on the path)
import torch.nn.functional as F  # noqa: E402

TARGET = 1.03


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
        args.steps, args.rounds = 20, 3
        if args.threads == 0:  # one thread: no spinning at barriers while a neighbour holds the other core
            args.threads = 1
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

    def hand_fit(loader) -> None:
        """The hand-written loop over ``loader``: a fresh optimiser, as Trainer.fit makes one."""
        optimizer = torch.optim.SGD(h_params, lr=0.05, momentum=0.9, weight_decay=5e-4)
        h_student.train()
        h_heads.train()
        for bx, by, _ in loader.epoch(0):
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                loss = hand_loss(h_student, h_heads, teacher, teacher_heads, bx, by)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    def round_(steps: int, skip: int) -> TakeTurns:
        """One Trainer.fit and one hand-written loop over ``skip + steps`` batches, step by step in turn."""
        turns = TakeTurns(batch, steps, device, skip=skip)
        harness = EngineHarness(turns.loader("engine"), precision=precision, channels_last=cl)
        hand_loader = turns.loader("hand")
        try:
            turns.run({"engine": lambda: harness.fit(task), "hand": lambda: hand_fit(hand_loader)})
        finally:
            harness.close()
        return turns

    round_(args.steps, 0)  # warm-up round (not timed), after which the weights of both sides must agree
    with torch.no_grad():
        weight_diff = max(float((a - b).abs().max()) for a, b in zip(parts["student"].parameters(),
                                                                    h_student.parameters()))
    pairs = []  # (engine wall, engine CPU, hand wall, hand CPU) of each step
    for _ in range(args.rounds):
        turns = round_(args.steps - 1, 1)  # the first step of a round (fresh optimisers) left out
        pairs += zip(turns.wall["engine"], turns.cpu["engine"], turns.wall["hand"], turns.cpu["hand"])
    eng, hand = summary([p[0] for p in pairs]), summary([p[2] for p in pairs])
    eng_cpu, hand_cpu_s = summary([p[1] for p in pairs]), summary([p[3] for p in pairs])
    r_wall = paired_ratio([p[0] for p in pairs], [p[2] for p in pairs])  # each engine step against the hand
    r_cpu = paired_ratio([p[1] for p in pairs], [p[3] for p in pairs])   # step next to it
    clock = "cpu" if device.type == "cpu" else "wall"
    ratio = (r_cpu if clock == "cpu" else r_wall)["median"]
    env = environment(device)
    print(f"engine overhead: {args.teacher} -> {args.student}, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.classes} classes, KD + MGD stable (2 heads), {precision}{', channels-last' if cl else ''}")
    print(f"device {env['device']}, torch {env['torch']}, {env['torch_threads']} threads "
          f"({env['cpu_count']} CPUs, load {env['load_average_1min']})")
    print(table(["side", "median ms", "p25 ms", "p75 ms", "CPU ms (median)", "steps"],
                [[name, s["median"] * 1e3, s["p25"] * 1e3, s["p75"] * 1e3, c["median"] * 1e3, s["n"]]
                 for name, s, c in (("engine (Trainer.fit)", eng, eng_cpu), ("hand-written loop", hand, hand_cpu_s))]))
    verdict = "met" if ratio <= TARGET else "missed"
    print(f"engine / hand (median of {r_cpu['n']} pairs): process CPU time {format_ratio(r_cpu)}; "
          f"wall time {format_ratio(r_wall)} (target <= {TARGET} in {'process CPU' if clock == 'cpu' else 'wall'} "
          f"time: {verdict})")
    print(f"same loss: |engine - hand| = {abs(engine_total - hand_total):.2e}, "
          f"weights after a round: max |diff| = {weight_diff:.2e}")
    emit_json({"benchmark": "engine_overhead", "teacher": args.teacher, "student": args.student,
               "batch": args.batch, "classes": args.classes, "size": args.size, "precision": precision,
               "channels_last": cl, "engine_ms": eng["median"] * 1e3, "hand_ms": hand["median"] * 1e3,
               "engine": eng, "hand": hand, "clock": clock, "ratio": ratio, "ratio_wall": r_wall, "ratio_cpu_time": r_cpu,
               "engine_cpu": eng_cpu, "hand_cpu": hand_cpu_s, "target": TARGET, "met": ratio <= TARGET,
               "loss_diff": abs(engine_total - hand_total), "weight_diff": weight_diff, "env": env})


if __name__ == "__main__":
    main()
