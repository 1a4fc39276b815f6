"""A finished run's trained models and its test data, for inspection.

:func:`load_run_models` is the ONE place of the inspect package that reads checkpoint
files. It reads the stage checkpoints :mod:`engine.run` writes (format 2, one for every
stage: ``modules``, the best-weights ``tracker``, ``history``):

* ``checkpoints/teacher.pt``: ``modules["model"]`` (absent when the teacher came from
  ``teacher.checkpoint``: then that file is read);
* ``checkpoints/heads.pt``: ``modules["heads"]``, each head at its own best epoch;
* ``checkpoints/student.pt``: ``tracker["student"]`` and ``tracker["student_heads"]``, the
  student and its granularity heads at the student's best epoch;
* ``checkpoints/online.pt`` (online MGD): ``tracker["peer<k>"]`` and ``tracker["heads<k>"]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import CheckpointError, InputError
from engine.models import freeze

from engine.runfolder import CHECKPOINT_DIR, CONFIG_FILE


@dataclass
class RunModels:
    """The trained models of one run folder, in eval mode, frozen, on the CPU.

    ``teacher`` and ``teacher_heads`` are ``None`` for a run without them (a student trained
    alone, MGD off, online MGD). ``student_heads`` is ``None`` when the run folder does not
    hold them; ``code_student`` is the student backbone they were trained with (the last
    epoch's weights), ``student`` the best-epoch student used for predictions and maps.
    ``notes`` says, in words, what is missing and why.
    """

    run_dir: Path
    config: Any  # ExperimentConfig
    num_classes: int
    in_channels: int
    student: Any
    student_arch: str
    student_best_epoch: int | None = None
    teacher: Any = None
    teacher_arch: str = ""
    teacher_heads: Any = None
    student_heads: Any = None
    code_student: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def head_labels(self) -> list[str]:
        """One label per granularity, e.g. ``d64 T2``."""
        heads = self.teacher_heads if self.teacher_heads is not None else self.student_heads
        if heads is None:
            return []
        return [f"d{h.dim} T{h.temperature:g}" for h in heads.heads]

    @property
    def name(self) -> str:
        """The run's one name, as everything else shows it (:attr:`engine.runs.RunInfo.label`: a
        renamed run by its new name, a comparison's run as ``comparison › s0-kd-off``)."""
        from engine.runs import run_info

        try:
            return run_info(self.run_dir).label
        except (OSError, ValueError):  # a folder that cannot be listed: its config's name
            return str(getattr(self.config, "name", "") or self.run_dir.name)


@dataclass
class TestSet:
    """The run's test split: the raw images (for display), the labels and a batch loader."""

    name: str
    classes: list[str]
    images: Any  # uint8 N x C x H x W (or a file-backed equivalent with [i] and shape)
    labels: Any  # int64 N
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bundle: Any

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def image(self, index: int):
        """One test image as uint8 ``C x H x W``."""
        return self.images[int(index)]

    def normalised(self, indices) -> Any:
        """The test images ``indices`` as the models see them (float, normalised, no augmentation)."""
        import torch

        batch = torch.stack([self.image(i) for i in indices]).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (batch - mean) / std

    def loader(self, batch_size: int = 256, device: str = "cpu"):
        """Batches ``(x, y, idx)`` of the whole test split in order (``loader.epoch(0)``)."""
        from engine.data import make_loader

        return make_loader(self.bundle, "test", batch_size=batch_size, device=device, train=False)


def check_run_dir(run_dir: str | Path) -> Path:
    """The run folder as a path; :class:`InputError` when it is not a run folder."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise InputError(f"{path}: no such folder")
    if not (path / CONFIG_FILE).is_file():
        raise InputError(f"{path}: not a run folder (no {CONFIG_FILE})")
    return path


def _from_run(run_dir: Path, setting: str) -> Path:
    """A checkpoint a run's config names (``teacher.checkpoint``, ``granularity.checkpoint``): as
    written, or relative to the run folder when it is relative and not found as written."""
    source = Path(setting).expanduser()
    return run_dir / source if not source.is_absolute() and not source.is_file() else source


def _state(path: Path, what: str) -> dict:
    from engine.runfolder import load_checkpoint

    state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a {what} checkpoint of MGD Studio")
    return state


def load_run_models(run_dir: str | Path) -> RunModels:
    """Every trained model of a run folder (all checkpoint reading of the inspection is here).

    Raises :class:`InputError` when the folder is not a run folder or has no trained
    student, :class:`CheckpointError` (an InputError) when a checkpoint does not fit.
    """
    from engine.config import load_config
    from engine.mgd import GranularityHeads
    from engine.models import build_model
    from engine.runfolder import read_summary
    from engine.runs import student_checkpoint

    path = check_run_dir(run_dir)
    cfg = load_config(path / CONFIG_FILE)
    ckpt = path / CHECKPOINT_DIR
    notes: list[str] = []
    pairs = [(h.dim, h.temperature) for h in cfg.granularity.heads]

    # -- the student and its granularity heads, at the student's best epoch ----------------
    student_file = student_checkpoint(path)
    if student_file is None:
        raise InputError(f"{path}: the run has no trained student yet ({CHECKPOINT_DIR}/student.pt is missing); "
                         "finish or resume the run first")
    state = _state(student_file, "student")
    try:
        tracker = state["tracker"]
        if state["stage"] == "online":
            peers = [k for k in tracker if k.startswith("peer")]
            key = max(peers, key=lambda k: -1.0 if tracker[k]["metric"] is None else tracker[k]["metric"])
            index = int(key[len("peer"):])
            student_arch = (cfg.online.peers or [cfg.student.arch, cfg.student.arch])[index - 1]
            heads_key = f"heads{index}"
            notes.append(f"online MGD: the student is peer {index} ({student_arch}), the best at its best epoch; "
                         "there is no teacher")
        else:
            key, heads_key, student_arch = "student", "student_heads", cfg.student.arch
        best = tracker[key]
        weights = best["state"] if best["state"] is not None else state["modules"][key]
        best_epoch = best["epoch"]
        head_state = tracker.get(heads_key)
        heads_weights = None
        if head_state is not None:
            heads_weights = head_state["state"] if head_state["state"] is not None else state["modules"].get(
                "student_heads" if heads_key == "student_heads" else f"heads{heads_key[5:]}")
    except (KeyError, TypeError, ValueError, IndexError):
        raise CheckpointError(f"{student_file}: not a stage checkpoint of MGD Studio (format 2: stage, modules, "
                              "tracker)") from None
    data = read_summary(path).get("data") or {}
    if data.get("classes") and data.get("input_shape"):
        num_classes, in_channels = int(data["classes"]), int(data["input_shape"][0])
    else:
        num_classes, in_channels = _classes_and_channels(weights, student_file)
    student = build_model(student_arch, num_classes, in_channels)
    _load(student, weights, student_file)
    models = RunModels(run_dir=path, config=cfg, num_classes=num_classes, in_channels=in_channels,
                       student=freeze(student), student_arch=student_arch,
                       student_best_epoch=int(best_epoch) if best_epoch else None, notes=notes)
    if heads_weights is not None:
        heads = GranularityHeads(student.feature_dim, num_classes, pairs)
        _load(heads, heads_weights, student_file)
        models.student_heads, models.code_student = freeze(heads), models.student
    elif cfg.granularity.mode != "off":
        notes.append("student codes: the student checkpoint holds no granularity heads")
    if cfg.online.enabled:
        return models

    # -- the teacher ---------------------------------------------------------------------
    teacher_file = ckpt / "teacher.pt"
    if teacher_file.is_file():
        state = _state(teacher_file, "teacher")
        try:
            teacher_weights = state["modules"]["model"]
        except (KeyError, TypeError):
            raise CheckpointError(f"{teacher_file}: not a teacher checkpoint of MGD Studio") from None
        teacher = build_model(cfg.teacher.arch, num_classes, in_channels)
        _load(teacher, teacher_weights, teacher_file)
        models.teacher, models.teacher_arch = freeze(teacher), cfg.teacher.arch
    elif cfg.teacher.checkpoint:
        from engine.models.checkpoint import load_weights

        source = _from_run(path, cfg.teacher.checkpoint)
        teacher = build_model(cfg.teacher.arch, num_classes, in_channels)
        try:
            load_weights(teacher, str(source), cfg.teacher.arch)
        except CheckpointError as exc:
            notes.append(f"teacher: the run loaded it from {cfg.teacher.checkpoint}, which cannot be read now ({exc})")
        else:
            models.teacher, models.teacher_arch = freeze(teacher), cfg.teacher.arch
    else:
        notes.append("teacher: none in this run (the student was trained without one)")

    # -- the teacher's granularity heads (each at its best epoch) ---------------------------
    # its own heads.pt, or the heads the run loaded (trained by another run of its comparison)
    heads_file = ckpt / "heads.pt"
    borrowed = not heads_file.is_file() and bool(cfg.granularity.checkpoint)
    if borrowed:
        heads_file = _from_run(path, cfg.granularity.checkpoint)
    if models.teacher is not None and cfg.granularity.mode != "off" and heads_file.is_file():
        try:
            state = _state(heads_file, "heads")
            try:
                heads_weights = state["modules"]["heads"]
            except (KeyError, TypeError):
                raise CheckpointError(f"{heads_file}: not a heads checkpoint of MGD Studio") from None
            heads = GranularityHeads(models.teacher.feature_dim, num_classes, pairs)
            _load(heads, heads_weights, heads_file)
        except CheckpointError as exc:
            if not borrowed:
                raise
            notes.append(f"granularity heads: the run loaded them from {cfg.granularity.checkpoint}, which "
                         f"cannot be read now ({exc})")
        else:
            models.teacher_heads = freeze(heads)
    elif borrowed and models.teacher is not None and cfg.granularity.mode != "off":
        notes.append(f"granularity heads: the run loaded them from {cfg.granularity.checkpoint}, which is gone")
    elif cfg.granularity.mode == "off":
        notes.append("granularity heads: none (MGD off in this run)")
    return models


def _classes_and_channels(weights: dict, source: Path) -> tuple[int, int]:
    """(classes, input channels) of a zoo state dict: the last 2-D weight's rows, the first 4-D weight's input."""
    matrices = [v for k, v in weights.items() if k.endswith("weight") and v.dim() == 2]
    kernels = [v for k, v in weights.items() if k.endswith("weight") and v.dim() == 4]
    if not matrices or not kernels:
        raise CheckpointError(f"{source}: holds no classifier weights")
    return int(matrices[-1].shape[0]), int(kernels[0].shape[1])


def _load(module, weights, source: Path) -> None:
    import torch

    if isinstance(weights, dict):  # NaN weights would only fail later, deep in the analysis (PCA)
        broken = [k for k, v in weights.items()
                  if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if broken:
            raise CheckpointError(f"{source}: holds NaN or infinite weights in {len(broken)} tensor(s) "
                                  f"(e.g. {broken[0]!r}): it was saved from a diverged run")
    try:
        module.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source}: does not fit the run's models ({first[:300]})") from None


def load_test_set(models_or_config) -> TestSet:
    """The test split of the run's data set (never downloading), as the run used it."""
    from engine.runtime import load_data

    cfg = getattr(models_or_config, "config", models_or_config)
    bundle = load_data(dataclasses.replace(cfg.data, download=False))
    return TestSet(name=bundle.name, classes=list(bundle.classes), images=bundle.test_images,
                   labels=bundle.test_labels, mean=tuple(bundle.mean), std=tuple(bundle.std), bundle=bundle)
