"""The whole inspection of a run, as the CLI and the studio run it: load, predict, map, project, compare."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from engine.inspect.cam import CamResult, class_activation_maps, first_per_class
from engine.inspect.codes import Projection, code_projections
from engine.inspect.gain import Gain, student_gain, teacher_student_gap
from engine.inspect.load import RunModels, TestSet, load_run_models, load_test_set
from engine.inspect.outputs import RunOutputs, collect_outputs
from engine.inspect.progress import CancelledFn, Phases, ProgressFn, check


@dataclass
class Inspection:
    """Everything the Inspect view and the report show about one run (and, optionally, a second)."""

    models: RunModels
    test: TestSet
    outputs: RunOutputs
    cams: CamResult | None
    projections: list[Projection]
    gap: Gain | None  # the run's teacher against its student
    gain: Gain | None = None  # the other run's student against this run's student
    other: RunModels | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return self.test.classes


def run_label(models: RunModels) -> str:
    """A short name for a run in plots: ``<name> (<distiller>, MGD <mode>)``."""
    cfg = models.config
    return f"{models.name} ({cfg.distiller.name}, MGD {cfg.granularity.mode})"


def inspect_run(run_dir: str | Path, *, images_per_class: int = 1, indices: Sequence[int] | None = None,
                compare: str | Path | None = None, method: str = "pca", device: str = "cpu", stages_back: int = 0,
                progress: ProgressFn | None = None, cancelled: CancelledFn | None = None) -> Inspection:
    """Inspect a finished run: class-activation maps of the chosen test images (``indices``,
    or the first ``images_per_class`` of each class), code projections, the teacher-student
    gap, and, with ``compare``, where this run's student gains over another run's.
    ``stages_back`` takes the maps that many stages before the last (finer maps)."""
    weights = {"load": 1, "outputs": 4, "cams": 3, "codes": 1}
    if compare is not None:
        weights.update({"load other": 1, "outputs other": 4})
    phases = Phases(progress, weights)
    phases.part("load")(0, 1)
    models = load_run_models(run_dir)
    test = load_test_set(models)
    other = load_run_models(compare) if compare is not None else None
    check(cancelled)
    phases.part("load")(1, 1)
    outputs = collect_outputs(models, test, device=device, progress=phases.part("outputs"), cancelled=cancelled)
    chosen = list(indices) if indices is not None else first_per_class(test.labels, images_per_class)
    cams = class_activation_maps(models, test, chosen, stages_back=stages_back, progress=phases.part("cams"),
                                 cancelled=cancelled)
    projections = code_projections(outputs, method=method, seed=int(models.config.seed),
                                   progress=phases.part("codes"), cancelled=cancelled)
    result = Inspection(models=models, test=test, outputs=outputs, cams=cams, projections=projections,
                        gap=teacher_student_gap(outputs, test.classes), notes=list(models.notes))
    if other is not None:
        phases.part("load other")(1, 1)
        result.gain = compare_runs(result, other, device=device, progress=phases.part("outputs other"),
                                   cancelled=cancelled)
        result.other = other
    phases.finish()
    return result


def compare_runs(inspection: Inspection, other: RunModels | str | Path, *, device: str = "cpu",
                 progress: ProgressFn | None = None, cancelled: CancelledFn | None = None) -> Gain:
    """Where ``inspection``'s student gains over ``other``'s: a = the other run, b = this run."""
    if not isinstance(other, RunModels):
        other = load_run_models(other)
    other_test = load_test_set(other)
    other_outputs = collect_outputs(other, other_test, device=device, progress=progress, cancelled=cancelled)
    names = (run_label(other), run_label(inspection.models))
    if names[0] == names[1]:  # two runs of the same experiment: tell them apart by folder
        names = (f"{names[0]} [{other.run_dir.name}]", f"{names[1]} [{inspection.models.run_dir.name}]")
    return student_gain(other_outputs, inspection.outputs, inspection.classes, names)
