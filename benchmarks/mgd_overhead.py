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

from _common import (EngineHarness, TakeTurns, base_parser, build, emit_json, environment, fixed_batch, format_ratio,
                     freeze, paired_ratio, paper_heads, setup, student_parts, summary, table, tiny_test_loader)

import torch  # noqa: E402

TARGET = 1.08


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--feature", default="at", help="the feature-based baseline to compare (at, fitnet, ...)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=60, help="timed steps of each configuration (KD off / stable)")
    parser.add_argument("--scaling-pairs", type=int, default=30,
                        help="timed steps of each configuration in the feature and head-count comparisons")
    parser.add_argument("--warmup", type=int, default=3, help="steps of each configuration before timing starts")
    parser.add_argument("--heads", default="1,2,4,8", help="head counts of the scaling table ('' : none)")
    parser.add_argument("--raw", action="store_true", help="add every step's times to the JSON line")
    args = parser.parse_args()
    if args.quick:
        args.teacher, args.student = "resnet56", "resnet20"
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

    env = environment(device)
    print(f"MGD overhead: {args.teacher} -> {args.student}, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.classes} classes; device {env['device']}, torch {env['torch']}, {env['torch_threads']} threads "
          f"({env['cpu_count']} CPUs, load {env['load_average_1min']}); paired steps through Trainer.fit")
    print(table(["comparison", "configuration", "median ms", "CPU ms", "steps", "/ off: wall time (median of pairs)",
                 "/ off: process CPU time"], rows))
    kd = ratios["KD: kd stable 2h"]
    verdict = "met" if kd["wall"]["median"] <= TARGET else "missed"
    scaling = {k: ratios[f"heads: kd stable {k}h"] for k in counts if f"heads: kd stable {k}h" in ratios}
    if scaling:
        print("step time / KD off as heads grow (wall, CPU): " + "; ".join(
            f"{k} heads {r['wall']['median']:.3f}, {r['cpu']['median']:.3f}" for k, r in scaling.items()))
    print(f"KD: stable / off = {format_ratio(kd['wall'])} wall time; {format_ratio(kd['cpu'])} process CPU time "
          f"(target <= {TARGET}: {verdict})")
    emit_json({"benchmark": "mgd_overhead", "teacher": args.teacher, "student": args.student, "batch": args.batch,
               "feature_baseline": f, "pairs": args.pairs, "kd_ratio": kd["wall"]["median"],
               "kd_ratio_cpu_time": kd["cpu"]["median"], "ratios": ratios, "stats": stats,
               "heads_ratio": {str(k): r["wall"]["median"] for k, r in scaling.items()},
               "heads_ratio_cpu_time": {str(k): r["cpu"]["median"] for k, r in scaling.items()},
               "target": TARGET, "met": kd["wall"]["median"] <= TARGET, "env": env})


if __name__ == "__main__":
    main()
