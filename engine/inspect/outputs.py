"""One pass of a run's models over its whole test set: the predictions and the granularity codes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine.inspect.progress import CancelledFn, ProgressFn, check, report


@dataclass
class RunOutputs:
    """What every model of a run says about every test image.

    ``predictions[name]`` (int64, N) for ``"teacher"``, each head (its decoded logits) and
    ``"student"`` (best epoch); ``teacher_codes`` / ``student_codes`` hold one ``N x d``
    float32 array per granularity (``student_codes`` is empty when the run folder does
    not hold the student's heads).
    """

    labels: np.ndarray
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    teacher_codes: list[np.ndarray] = field(default_factory=list)
    student_codes: list[np.ndarray] = field(default_factory=list)
    granularities: list[str] = field(default_factory=list)

    def accuracy(self, name: str) -> float:
        return float((self.predictions[name] == self.labels).mean() * 100.0) if len(self.labels) else 0.0


def collect_outputs(models, test, *, batch_size: int = 256, device: str = "cpu",
                    progress: ProgressFn | None = None, cancelled: CancelledFn | None = None) -> RunOutputs:
    """Run the teacher (and its heads), the best student and the code student over the test set."""
    from engine.runtime import select_device

    dev, _ = select_device(device)
    loader = test.loader(batch_size=batch_size, device=dev)
    labels: list[torch.Tensor] = []
    preds: dict[str, list[torch.Tensor]] = {}
    t_codes: list[list[torch.Tensor]] = []
    s_codes: list[list[torch.Tensor]] = []
    names = models.head_labels
    moved = {}

    def on(module):
        if module is None:
            return None
        if id(module) not in moved:
            moved[id(module)] = module.to(dev)
        return moved[id(module)]

    teacher, heads = on(models.teacher), on(models.teacher_heads)
    student, s_heads, code_student = on(models.student), on(models.student_heads), on(models.code_student)
    total = len(loader)
    report(progress, 0, total)
    try:
        with torch.no_grad():
            for step, (x, y, _idx) in enumerate(loader.epoch(0), start=1):
                check(cancelled)
                labels.append(y.cpu())
                if teacher is not None:
                    logits, feats = teacher(x)
                    preds.setdefault("teacher", []).append(logits.argmax(1).cpu())
                    if heads is not None:
                        codes, decoded = heads(feats[-1])
                        for name, code, dec in zip(names, codes, decoded):
                            preds.setdefault(name, []).append(dec.argmax(1).cpu())
                        if not t_codes:
                            t_codes = [[] for _ in codes]
                        for bucket, code in zip(t_codes, codes):
                            bucket.append(code.float().cpu())
                preds.setdefault("student", []).append(student(x)[0].argmax(1).cpu())
                if s_heads is not None and code_student is not None:
                    codes = s_heads.encode(code_student(x)[1][-1])
                    if not s_codes:
                        s_codes = [[] for _ in codes]
                    for bucket, code in zip(s_codes, codes):
                        bucket.append(code.float().cpu())
                report(progress, step, total)
    finally:
        if dev.type != "cpu":  # the models stay where RunModels keeps them
            for module in moved.values():
                module.to("cpu")
    return RunOutputs(labels=torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64),
                      predictions={k: torch.cat(v).numpy() for k, v in preds.items()},
                      teacher_codes=[torch.cat(b).numpy() for b in t_codes],
                      student_codes=[torch.cat(b).numpy() for b in s_codes],
                      granularities=names if names else [f"d{h.dim} T{h.temperature:g}" for h in
                                                         (models.student_heads.heads if models.student_heads
                                                          is not None else [])])
