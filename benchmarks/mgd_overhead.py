"""MGD overhead: the engine's student step with MGD stable against the same baseline with MGD off.

Every configuration is a real ``StudentTask`` driven by ``Trainer.fit`` (as
``engine_overhead.py`` does) on one fixed batch; the configurations share the frozen
teacher and take turns in every round (the order reversed every other round), and the
script reports median step times and ratios to the baseline with MGD off:

* KD: off against stable with the paper's two heads (target: stable / off <= 1.08);
* a feature-based baseline (``--feature``, AT by default): off against stable;
* KD stable with 1, 2, 4 and 8 heads (the paper's (64, 2) and (256, 8), repeated).

    .venv/bin/python benchmarks/mgd_overhead.py [--quick] [--device cuda]
"""

from __future__ import annotations

from _common import (base_parser, emit_json, environment, fixed_batch, freeze, interleave, paper_heads, setup,
                     student_parts, summary, table, TimedLoader, EngineHarness, tiny_test_loader, build)

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
    parser.add_argument("--steps", type=int, default=5, help="steps per round and configuration")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--heads", default="1,2,4,8", help="head counts of the scaling table")
    args = parser.parse_args()
    if args.quick:
        args.teacher, args.student = "resnet56", "resnet20"
        args.steps, args.rounds = 4, 3
    device = setup(args)
    from engine.distillers import distiller_names
    from engine.mgd import GranularityHeads

    if args.feature not in distiller_names():
        raise SystemExit(f"--feature {args.feature}: no such baseline (have: {', '.join(distiller_names())})")
    batch = fixed_batch(args.batch, args.classes, args.size, device, seed=args.seed)
    test_loader = tiny_test_loader(device, args.classes, args.size)
    teacher = freeze(build(args.teacher, args.classes, device, seed=args.seed))
    counts = sorted({int(c) for c in args.heads.split(",")} | {2})
    teacher_heads = {}
    for k in counts:
        torch.manual_seed(args.seed + 1)
        teacher_heads[k] = freeze(GranularityHeads(teacher.feature_dim, args.classes, paper_heads(k)).to(device))

    configs = {"kd off": ("kd", "off", 2)}
    configs.update({f"kd stable {k}h": ("kd", "stable", k) for k in counts})
    configs[f"{args.feature} off"] = (args.feature, "off", 2)
    configs[f"{args.feature} stable 2h"] = (args.feature, "stable", 2)
    tasks, loaders, harnesses = {}, {}, {}
    for name, (dist, mode, k) in configs.items():
        parts = student_parts(args.teacher, args.student, num_classes=args.classes, device=device, distiller=dist,
                              mode=mode, heads=paper_heads(k), size=args.size, seed=args.seed, teacher=teacher,
                              teacher_heads=teacher_heads[k] if mode != "off" else None, test_loader=test_loader)
        loader = TimedLoader(batch, args.steps, device, epoch_len=782)
        tasks[name], loaders[name], harnesses[name] = parts["task"], loader, EngineHarness(loader)

    def runner(name):
        return lambda: harnesses[name].fit(tasks[name])

    for name in configs:  # warm-up round, not timed
        runner(name)()
        loaders[name].clear()
    interleave({name: runner(name) for name in configs}, args.rounds)
    for h in harnesses.values():
        h.close()
    stats = {name: summary(loaders[name].step_times(drop_first=1)) for name in configs}
    med = {name: s["median"] for name, s in stats.items()}
    off = {"kd": med["kd off"], args.feature: med[f"{args.feature} off"]}
    # the process's CPU time per step hardly depends on the neighbours: a steadier second view
    cpu_stats = {name: summary(loaders[name].step_times(drop_first=1, cpu=True)) for name in configs}
    q1 = {name: s["median"] for name, s in cpu_stats.items()}
    off_q1 = {"kd": q1["kd off"], args.feature: q1[f"{args.feature} off"]}

    env = environment(device)
    print(f"MGD overhead: {args.teacher} -> {args.student}, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.classes} classes; device {env['device']}, torch {env['torch']}, {env['torch_threads']} threads "
          f"({env['cpu_count']} CPUs, load {env['load_average_1min']})")
    rows = []
    for name, (dist, mode, k) in configs.items():
        s = stats[name]
        rows.append([name, s["median"] * 1e3, s["p25"] * 1e3, s["p75"] * 1e3, q1[name] * 1e3, s["n"],
                     med[name] / off[dist], q1[name] / off_q1[dist]])
    print(table(["configuration", "median ms", "p25 ms", "p75 ms", "CPU ms (median)", "steps", "/ off",
                 "/ off (CPU time)"], rows))
    kd_ratio = med["kd stable 2h"] / off["kd"]
    feat_ratio = med[f"{args.feature} stable 2h"] / off[args.feature]
    scaling = {k: med[f"kd stable {k}h"] / off["kd"] for k in counts}
    print("step time / KD off as heads grow: " + ", ".join(f"{k} heads {r:.3f}" for k, r in scaling.items()))
    kd_q1 = q1["kd stable 2h"] / off_q1["kd"]
    print(f"KD: stable / off = {kd_ratio:.3f}, process CPU time {kd_q1:.3f} (target <= {TARGET}: {'met' if kd_ratio <= TARGET else 'missed'}); "
          f"{args.feature}: stable / off = {feat_ratio:.3f}")
    emit_json({"benchmark": "mgd_overhead", "teacher": args.teacher, "student": args.student, "batch": args.batch,
               "feature_baseline": args.feature, "median_ms": {n: v * 1e3 for n, v in med.items()},
               "stats": stats, "kd_ratio": kd_ratio, "kd_ratio_cpu_time": kd_q1, "cpu_stats": cpu_stats, "feature_ratio": feat_ratio,
               "heads_ratio": {str(k): v for k, v in scaling.items()}, "target": TARGET,
               "met": kd_ratio <= TARGET, "env": env})


if __name__ == "__main__":
    main()
