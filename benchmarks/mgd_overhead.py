"""MGD overhead: the engine's student step with MGD stable against the same baseline with MGD off.

Every configuration is a real ``StudentTask`` driven by ``Trainer.fit`` on one fixed batch;
the configurations share the frozen teacher. The configurations compared train step by
step in turn (``_common.TakeTurns``: off, stable, stable, off, ...), so step ``i`` of one is
measured right next to step ``i`` of the other, and the ratio is the median of the per-pair
ratios with its 95 % bootstrap interval and quartiles (``_common.paired_ratio``), in wall
time and in process CPU time (which depends less on what else runs on the machine):

* KD: off against stable with the paper's two heads (target: stable / off <= 1.08);
* a feature-based baseline (``--feature``, AT by default): off against stable;
* KD stable with 1, 2, 4 and 8 heads (the paper's (64, 2) and (256, 8), repeated) against KD off.

    .venv/bin/python benchmarks/mgd_overhead.py [--quick] [--device cuda] [--pairs 60]
"""

from __future__ import annotations

import time

from _common import (EngineHarness, TakeTurns, base_parser, build, emit_json, environment, fixed_batch, format_ratio,
                     freeze, paired_ratio, paper_heads, setup, student_parts, summary, sync, table, tiny_test_loader)

import torch  # noqa: E402

TARGET = 1.08


def heads_work_ms(task, batch: int, classes: int, device, clock, repeats: int = 60) -> float:
    """Median milliseconds of MGD's own work in a student step, measured alone: the teacher
    heads on the teacher's pooled feature vector (no grad), the stable target, the student's
    encoders and the code terms, and their backward pass (``clock``: time.process_time or
    time.perf_counter; the device synchronised)."""
    from engine.mgd import code_losses, stable_target

    g = torch.Generator().manual_seed(0)
    f_t = torch.randn(batch, task.teacher.feature_dim, generator=g).to(device)
    f_s = torch.randn(batch, task.student.feature_dim, generator=g).to(device).requires_grad_()
    t_logits = torch.randn(batch, classes, generator=g).to(device)

    def once():
        with torch.no_grad():
            t_codes, t_decoded = task.teacher_heads(f_t)
        target = stable_target(t_logits, t_decoded)
        codes = code_losses(task.student_heads.encode(f_s), t_codes, task.student_heads.temperatures)
        (torch.stack(codes).sum() + target.sum()).backward()

    times = []
    for i in range(repeats + 5):
        sync(device)
        t0 = clock()
        once()
        sync(device)
        if i >= 5:
            times.append(clock() - t0)
    return summary(times)["median"] * 1e3


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--feature", default="at", help="the feature-based baseline to compare (at, fitnet, ...)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=100, help="timed steps of each configuration (KD off / stable)")
    parser.add_argument("--scaling-pairs", type=int, default=20,
                        help="timed steps of each configuration in the feature and head-count comparisons")
    parser.add_argument("--warmup", type=int, default=3, help="steps of each configuration before timing starts")
    parser.add_argument("--heads", default="1,2,4,8", help="head counts of the scaling table ('' : none)")
    parser.add_argument("--raw", action="store_true", help="add every step's times to the JSON line")
    args = parser.parse_args()
    if args.quick:
        args.teacher, args.student = "resnet56", "resnet20"
        if args.threads == 0:  # one thread: no spinning at barriers while a neighbour holds the other core
            args.threads = 1
    device = setup(args)
    from engine.distillers import distiller_names
    from engine.mgd import GranularityHeads

    if args.feature not in distiller_names():
        raise SystemExit(f"--feature {args.feature}: no such baseline (have: {', '.join(distiller_names())})")
    batch = fixed_batch(args.batch, args.classes, args.size, device, seed=args.seed)
    test_loader = tiny_test_loader(device, args.classes, args.size)
    teacher = freeze(build(args.teacher, args.classes, device, seed=args.seed))
    counts = sorted({int(c) for c in args.heads.split(",") if c.strip()} | {2})
    teacher_heads = {}
    for k in counts:
        torch.manual_seed(args.seed + 1)
        teacher_heads[k] = freeze(GranularityHeads(teacher.feature_dim, args.classes, paper_heads(k)).to(device))

    def task(dist: str, mode: str, k: int = 2):
        return student_parts(args.teacher, args.student, num_classes=args.classes, device=device, distiller=dist,
                             mode=mode, heads=paper_heads(k), size=args.size, seed=args.seed, teacher=teacher,
                             teacher_heads=teacher_heads[k] if mode != "off" else None,
                             test_loader=test_loader)["task"]

    def compare(configs: dict, pairs: int) -> TakeTurns:
        """Train ``configs`` (name -> task) step by step in turn through ``Trainer.fit``."""
        turns = TakeTurns(batch, pairs, device, skip=args.warmup)
        harnesses = {name: EngineHarness(turns.loader(name)) for name in configs}
        try:
            turns.run({name: (lambda n=name: harnesses[n].fit(configs[n])) for name in configs})
        finally:
            for h in harnesses.values():
                h.close()
        return turns

    f = args.feature
    phases = [("KD", {"kd off": task("kd", "off"), "kd stable 2h": task("kd", "stable")}, args.pairs)]
    if f != "kd":
        phases.append((f.upper(), {f"{f} off": task(f, "off"), f"{f} stable 2h": task(f, "stable")},
                       args.scaling_pairs))
    if counts != [2]:
        phases.append(("heads", {"kd off": task("kd", "off"), **{f"kd stable {k}h": task("kd", "stable", k)
                                                                  for k in counts}}, args.scaling_pairs))
    rows, ratios, stats = [], {}, {}
    configs_of = {phase: configs for phase, configs, _ in phases}
    configs_of.setdefault("heads", {})
    for phase, configs, pairs in phases:
        turns = compare(configs, pairs)
        base = next(iter(configs))  # the configuration with MGD off
        for name in configs:
            wall, cpu = summary(turns.wall[name]), summary(turns.cpu[name])
            stats[f"{phase}: {name}"] = {"wall": wall, "cpu": cpu}
            if args.raw:
                stats[f"{phase}: {name}"].update(wall_steps=turns.wall[name], cpu_steps=turns.cpu[name])
            if name == base:
                rows.append([phase, name, wall["median"] * 1e3, cpu["median"] * 1e3, wall["n"], "1", "1"])
                continue
            r_wall = paired_ratio(turns.wall[name], turns.wall[base])
            r_cpu = paired_ratio(turns.cpu[name], turns.cpu[base])
            ratios[f"{phase}: {name}"] = {"wall": r_wall, "cpu": r_cpu}
            rows.append([phase, name, wall["median"] * 1e3, cpu["median"] * 1e3, wall["n"], format_ratio(r_wall),
                         format_ratio(r_cpu)])

    # on a CPU the process's CPU time is the figure (a neighbour's load moves it least); on a GPU, wall time
    clock = "cpu" if device.type == "cpu" else "wall"
    # what the heads themselves cost, measured alone (far below the noise of a whole step on a busy machine)
    off_ms = stats["KD: kd off"][clock]["median"] * 1e3
    heads_ms = {}
    for k in counts:
        heads_ms[k] = heads_work_ms(configs_of["heads"].get(f"kd stable {k}h") or configs_of["KD"]["kd stable 2h"],
                                    args.batch, args.classes, device,
                                    time.process_time if clock == "cpu" else time.perf_counter)

    env = environment(device)
    print(f"MGD overhead: {args.teacher} -> {args.student}, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.classes} classes; device {env['device']}, torch {env['torch']}, {env['torch_threads']} threads "
          f"({env['cpu_count']} CPUs, load {env['load_average_1min']}); steps of each configuration in turn "
          f"through Trainer.fit, ratios: median of the pairs [95% bootstrap interval, quartiles]")
    print(table(["comparison", "configuration", "median ms", "CPU ms", "steps", "/ off: wall time",
                 "/ off: process CPU time"], rows))
    print(table(["heads", f"MGD's own work ms (alone, {clock})", "expected / off", "measured / off (wall)",
                 "measured / off (CPU)"],
                [[k, heads_ms[k], 1 + heads_ms[k] / off_ms,
                  *((ratios[f"heads: kd stable {k}h"]["wall"]["median"], ratios[f"heads: kd stable {k}h"]["cpu"]["median"])
                    if f"heads: kd stable {k}h" in ratios else (None, None))] for k in counts]))
    kd = ratios["KD: kd stable 2h"]
    figure = kd[clock]["median"]
    verdict = "met" if figure <= TARGET else "missed"
    scaling = {k: ratios[f"heads: kd stable {k}h"] for k in counts if f"heads: kd stable {k}h" in ratios}
    print(f"KD: stable / off = {format_ratio(kd['cpu'])} process CPU time; {format_ratio(kd['wall'])} wall time "
          f"(target <= {TARGET} in {'process CPU' if clock == 'cpu' else 'wall'} time: {verdict})")
    emit_json({"benchmark": "mgd_overhead", "teacher": args.teacher, "student": args.student, "batch": args.batch,
               "feature_baseline": f, "pairs": args.pairs, "clock": clock, "kd_ratio": figure,
               "kd_ratio_wall": kd["wall"]["median"], "kd_ratio_cpu_time": kd["cpu"]["median"], "ratios": ratios,
               "stats": stats, "heads_work_ms": {str(k): v for k, v in heads_ms.items()},
               "heads_ratio": {str(k): r[clock]["median"] for k, r in scaling.items()},
               "target": TARGET, "met": figure <= TARGET, "env": env})


if __name__ == "__main__":
    main()
