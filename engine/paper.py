"""The numbers the MGD paper reports, to show beside a user's own (METHOD.md's table).

B. Shao and Y. Chen, "Multi-granularity for knowledge distillation", Image and Vision
Computing 116 (2021) 104286: CIFAR-100 top-1 accuracy (%), 240 epochs. Only the entries
METHOD.md lists are here; the comparison table shows "-" for the others.
"""

from __future__ import annotations

#: (teacher, student) -> {"teacher", "student" (alone), (baseline, MGD mode): accuracy}
PAPER_CIFAR100: dict[tuple[str, str], dict] = {
    ("resnet32x4", "resnet8x4"): {"teacher": 79.42, "student": 72.50, ("kd", "off"): 73.27,
                                  ("kd", "stable"): 74.20, ("crd", "off"): 75.32, ("crd", "granularity"): 75.89},
    ("wrn_40_2", "wrn_16_2"): {"teacher": 75.61, "student": 73.26, ("kd", "off"): 73.59,
                               ("kd", "stable"): 75.35, ("crd", "off"): 75.52, ("crd", "granularity"): 75.84},
    ("resnet56", "resnet20"): {"teacher": 72.34, "student": 69.06, ("kd", "off"): 71.05,
                               ("kd", "stable"): 71.08, ("crd", "off"): 71.38, ("crd", "granularity"): 71.77},
    ("vgg13", "vgg8"): {"teacher": 74.64, "student": 70.36, ("kd", "off"): 73.18,
                        ("kd", "stable"): 74.18, ("crd", "off"): 73.90, ("crd", "granularity"): 74.29},
}

#: the paper's pairs (teacher -> student), METHOD.md "CIFAR-100 model zoo used in the paper"
PAPER_PAIRS = (("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"),
               ("resnet110", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"), ("vgg13", "vgg8"))


def paper_accuracy(dataset: str, teacher: str | None, student: str | None, baseline: str, mode: str) -> float | None:
    """The paper's accuracy for a (pair, baseline, MGD mode) on CIFAR-100, or None when it reports none.
    ``baseline`` "none" is the student trained alone."""
    if dataset != "cifar100":
        return None
    entry = PAPER_CIFAR100.get((teacher or "", student or ""))
    if entry is None:
        return None
    if baseline == "none":
        return entry["student"] if mode == "off" else None
    return entry.get((baseline, mode))


def paper_teacher(dataset: str, teacher: str | None, student: str | None) -> float | None:
    entry = PAPER_CIFAR100.get((teacher or "", student or "")) if dataset == "cifar100" else None
    return entry["teacher"] if entry else None
