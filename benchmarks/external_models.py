"""Library models at 224 px: images per second of the teacher's forward pass and of the student's step.

Measures, for a teacher / student pair of library models (by default the preset's
``torchvision:resnet50`` -> ``torchvision:mobilenet_v3_small``, built without pretrained
weights: the speed is the same), at ``--size`` pixels and batch ``--batch``:

* **teacher forward**: the frozen teacher in eval mode without autograd, as the heads and
  student stages run it;
* **student step**: one step of the engine's ``StudentTask`` (KD + MGD stable with the
  paper's two heads): the teacher's forward, the student's forward and backward, SGD;
* **teacher step**: one fine-tuning step of the teacher (forward, backward, SGD), as the
  teacher stage runs it;
* **augmentation**: the random resized crop + flip + normalisation of a uint8 batch stored
  at ``size / 0.875`` (what the loaders do on the device for every training batch).

After one warm-up step each, the four measures take turns for ``--steps`` rounds (the
order reversed every other round, so a busy neighbour on a shared machine weighs on all of
them alike); the table gives medians.

    .venv/bin/python benchmarks/external_models.py [--quick] [--device cuda] [--threads 2]
"""

from __future__ import annotations

import time

from _common import (base_parser, build, emit_json, environment, interleave, setup, student_parts, summary, sync,
                     table)

import torch  # noqa: E402


def timer(fn, device):
    """``fn`` as a side of :func:`interleave`: runs it once and returns the seconds it took."""

    def run() -> float:
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    return run


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="torchvision:resnet50")
    parser.add_argument("--student", default="torchvision:mobilenet_v3_small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.steps = 3
    device = setup(args)
    from engine.data.load import CENTRE_CROP_FRACTION
    from engine.data.loader import BatchAugment
    from engine.models import parameter_count
    from engine.models.sources import IMAGENET_MEAN, IMAGENET_STD
    from engine.stages import TeacherTask

    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)
    y = torch.randint(0, args.classes, (args.batch,), generator=g).to(device)
    idx = torch.arange(args.batch, device=device)

    parts = student_parts(args.teacher, args.student, num_classes=args.classes, device=device, size=args.size,
                          seed=args.seed)
    teacher, task = parts["teacher"], parts["task"]
    params = task.parameters()
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)

    def teacher_forward():
        with torch.no_grad():
            teacher(x)

    def student_step():
        task.train_mode()
        result = task.step(x, y, idx)
        opt.zero_grad(set_to_none=True)
        result.total.backward()
        opt.step()

    rows, result = [], {"environment": environment(device), "teacher": args.teacher, "student": args.student,
                        "batch": args.batch, "size": args.size, "steps": args.steps,
                        "teacher_params": parameter_count(args.teacher, args.classes, 3),
                        "student_params": parameter_count(args.student, args.classes, 3)}

    def record(name: str, times: list[float]) -> None:
        s = summary(times)
        per_second = args.batch / s["median"]
        rows.append([name, s["median"] * 1000, per_second])
        result[name.replace(" ", "_") + "_images_per_s"] = per_second
        result[name.replace(" ", "_") + "_ms"] = s["median"] * 1000

    # fine-tuning the teacher (its own, trainable copy: the student stage's teacher stays frozen)
    trainable = build(args.teacher, args.classes, device, seed=args.seed)
    fine_tune = TeacherTask(trainable, None, args.classes, backbone_lr_scale=0.1)
    from engine.trainer import param_groups

    t_opt = torch.optim.SGD(param_groups(fine_tune.parameters()), lr=0.01, momentum=0.9)

    def teacher_step():
        fine_tune.train_mode()
        loss = fine_tune.step(x, y, idx).total
        t_opt.zero_grad(set_to_none=True)
        loss.backward()
        t_opt.step()

    stored = round(args.size / CENTRE_CROP_FRACTION)
    images = torch.randint(0, 256, (args.batch, 3, stored, stored), generator=g, dtype=torch.uint8).to(device)
    augment = BatchAugment(3, device, mean=IMAGENET_MEAN, std=IMAGENET_STD, train=True, flip=True,
                           resized_crop=True, output_size=args.size, seed=args.seed)
    step = iter(range(10**9))
    sides = {"teacher forward": timer(teacher_forward, device), "student step": timer(student_step, device),
             "teacher step": timer(teacher_step, device),
             "augmentation": timer(lambda: augment(images, 0, next(step)), device)}
    for run in sides.values():
        run()  # warm-up (allocations, lazy initialisation)
    for name, times in interleave(sides, args.steps).items():
        record(name, times)

    print(f"{args.teacher} ({result['teacher_params'] / 1e6:.1f} M) -> {args.student} "
          f"({result['student_params'] / 1e6:.1f} M), {args.size} px, batch {args.batch}, {device}, "
          f"{torch.get_num_threads()} threads")
    print(table(["measure", "ms per batch", "images/s"], rows))
    emit_json(result)


if __name__ == "__main__":
    main()
