"""How long a run (or a comparison of many) will take on this machine, before it starts.

Each architecture of a plan is timed once on one batch of the run's input size, on the
run's device: a forward pass (for frozen models and evaluation) and a forward plus backward
pass (for trained ones). A training stage's step then costs the trained models' training
passes plus the frozen models' forward passes; each epoch adds an evaluation of the test
set. The granularity heads and the baselines' own modules are small next to the networks
and are left out, so the figure is an estimate (within about half on a quiet machine; small
models, whose steps are mostly overhead, are the hardest), shown as such.
"""

from __future__ import annotations

import time

#: seconds an export takes per format (tracing, ONNX conversion and its check)
EXPORT_SECONDS_PER_FORMAT = 2.0
#: seconds each training step costs beside the networks (batch augmentation, losses, logging)
STEP_OVERHEAD = 0.01

#: the batch timed on the CPU (the result is scaled to the run's batch)
TIMED_CPU_BATCH = 16

_TIMINGS: dict[tuple, tuple[float, float]] = {}


def model_timings(arch: str, num_classes: int, input_shape, batch: int, device) -> tuple[float, float]:
    """(forward seconds, forward + backward + SGD step seconds) of ``arch`` on one batch, measured
    once per (arch, classes, shape, batch, device) and cached.

    On the CPU, where a large batch is slow to time, two small batches are timed and the cost
    is extrapolated linearly (a fixed cost per call plus a cost per image), which holds both
    for tiny models (mostly fixed cost) and large ones (mostly per image)."""
    key = (arch, num_classes, tuple(input_shape), batch, str(device))
    if key in _TIMINGS:
        return _TIMINGS[key]
    import torch

    from engine.models import build_model

    sizes = [batch] if device.type != "cpu" or batch <= TIMED_CPU_BATCH else [TIMED_CPU_BATCH // 4, TIMED_CPU_BATCH]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(arch, num_classes, input_shape[0]).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def timed(fn, warmup: int = 1, repeats: int = 3) -> float:
            for _ in range(warmup):  # allocations, kernel choice, thread pools
                fn()
            times = []
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                times.append(time.perf_counter() - t0)
            return min(times)  # the machine's speed, not its other jobs'

        measured = []
        for size in sizes:
            x = torch.randn(size, *input_shape, device=device)
            model.eval()
            with torch.no_grad():
                forward = timed(lambda: model(x))
            model.train()

            def train_step() -> None:
                logits, _ = model(x)
                optimizer.zero_grad(set_to_none=True)
                logits.float().sum().backward()
                optimizer.step()
            measured.append((size, forward, timed(train_step)))
    if len(measured) == 1:
        result = measured[0][1:]
    else:
        (b1, f1, t1), (b2, f2, t2) = measured

        def extrapolate(y1: float, y2: float) -> float:
            per_image = max(0.0, (y2 - y1) / (b2 - b1))
            return max(y2, y2 + per_image * (batch - b2))
        result = (extrapolate(f1, f2), extrapolate(t1, t2))
    _TIMINGS[key] = result
    return result


def estimate_stages(plan, device) -> dict[str, float]:
    """Seconds per stage of a :class:`engine.plan.Plan` (and ``"total"``)."""
    data = plan.data
    shape, classes = data["input_shape"], data["classes"]
    batch, eval_batch = data["batch_size"], data["eval_batch_size"]
    test_batches = max(1, -(-data["test_size"] // eval_batch))
    archs = {role: m["arch"] for role, m in plan.models.items() if "granularity heads" not in m["arch"]
             and not m["arch"].endswith(" modules")}

    def cost(role: str, train: bool, size: int) -> float:
        arch = archs.get(role.split()[0])  # "student backbone" is the student's network
        if arch is None:
            return 0.0
        forward, step = model_timings(arch, classes, shape, batch, device)  # timed at the training batch
        return step if train else forward * size / batch

    out: dict[str, float] = {}
    evaluated = [role for role in ("student", "teacher") if role in archs] or list(archs)[:1]
    for s in plan.stages:
        if s.action == "train":
            trained = [r for r in s.trains if r.split()[0] in archs]
            frozen = [r for r in s.frozen if r.split()[0] in archs]
            step = STEP_OVERHEAD + sum(cost(r, True, batch) for r in trained) + \
                sum(cost(r, False, batch) for r in frozen)
            per_epoch_eval = test_batches * sum(cost(r, False, eval_batch) for r in (trained or frozen)[:1])
            out[s.name] = s.epochs * (s.steps_per_epoch * step + per_epoch_eval)
        elif s.action in ("evaluate", "load"):
            models = s.frozen or evaluated
            per_batch = sum(cost(r, False, eval_batch) for r in models) / max(1, len(models))
            out[s.name] = s.units * per_batch
        else:
            out[s.name] = EXPORT_SECONDS_PER_FORMAT * max(1, s.units - 1)
    out["total"] = sum(out.values())
    return out
