"""Image-level review of a finished run: the test images behind one cell of the confusion
matrix, and the top classes of the teacher and the student for an image file of the user's.

Both go through the run's own models (the student at its best epoch, the teacher as the run
trained or loaded it; :func:`engine.inspect.load.load_run_models` reads the checkpoints) and
the run's own preprocessing: test images come through the engine's test loader; an image
file is converted to the data set's channels, resized to its image size as the image-folder
reader does (bilinear), scaled to [0, 1] and normalised with the run's mean and std.

No Qt here: the studio calls these functions in a background thread and shows the results.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.errors import DataError, InputError

ProgressFn = Callable[[int, int], None]


@dataclass
class RunPredictions:
    """Class probabilities of the run's teacher and student for every test image (in order)."""

    run_dir: Path
    classes: list[str]
    labels: np.ndarray  # int64, N
    student: np.ndarray  # float32, N x K
    teacher: np.ndarray | None  # None for a run without a teacher
    images: Any  # uint8 N x C x H x W (tensor or file-backed), for display
    student_epoch: int | None = None
    notes: list[str] = field(default_factory=list)

    def predicted(self, model: str) -> np.ndarray:
        probs = self.student if model == "student" else self.teacher
        if probs is None:
            raise InputError(f"{self.run_dir}: this run has no teacher")
        return probs.argmax(1)


_cache: dict[tuple[str, float], RunPredictions] = {}
_lock = threading.Lock()


def _stamp(run_dir: Path) -> float:
    """Changes when the run's checkpoints change (a resumed run trains on): the cache key."""
    folder = run_dir / "checkpoints"
    try:
        return max((p.stat().st_mtime for p in folder.glob("*.pt")), default=0.0)
    except OSError:
        return 0.0


def top_k(probs: np.ndarray, classes: list[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable classes with their probabilities (percent), most probable first."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(classes[i], float(100.0 * probs[i])) for i in order]


def run_predictions(run_dir: str | Path, *, batch_size: int = 256, progress: ProgressFn | None = None
                    ) -> RunPredictions:
    """The teacher's and the student's class probabilities for every test image of a finished run
    (computed once per run and kept while its checkpoints do not change)."""
    import torch

    from engine.inspect.load import load_test_set

    path = Path(run_dir).expanduser()
    key = (str(path.resolve()), _stamp(path))
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    models = _models(path)
    test = load_test_set(models)
    loader = test.loader(batch_size=batch_size)
    total = len(loader)
    student, teacher, labels = [], [], []
    with torch.no_grad():
        for step, (x, y, _idx) in enumerate(loader.epoch(0), start=1):
            labels.append(y.numpy())
            student.append(torch.softmax(models.student(x)[0].float(), 1).numpy())
            if models.teacher is not None:
                teacher.append(torch.softmax(models.teacher(x)[0].float(), 1).numpy())
            if progress is not None:
                progress(step, total)
    result = RunPredictions(run_dir=path, classes=list(test.classes), labels=np.concatenate(labels),
                            student=np.concatenate(student), teacher=np.concatenate(teacher) if teacher else None,
                            images=test.images, student_epoch=models.student_best_epoch, notes=list(models.notes))
    with _lock:
        _cache.clear()  # one run at a time is reviewed: keep memory small
        _cache[key] = result
    return result


def _image_array(image) -> np.ndarray:
    """A uint8 ``C x H x W`` tensor as a ``H x W x C`` numpy array, for display."""
    array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    return np.ascontiguousarray(array.transpose(1, 2, 0))


def confusion_cell(run_dir: str | Path, true_class: int, predicted_class: int, *, model: str = "student",
                   k: int = 3, limit: int = 60, progress: ProgressFn | None = None) -> dict[str, Any]:
    """The test images of one confusion cell of ``model`` (``"student"`` or ``"teacher"``): true
    class ``true_class``, predicted ``predicted_class``.

    Returns ``{"classes", "true", "predicted", "model", "count", "items", "notes", "student_epoch"}``;
    ``items`` (at most ``limit``, in test-set order) holds for each image its ``index``, ``image``
    (uint8 H x W x C), and the ``student``'s and ``teacher``'s top ``k`` as ``[(class, percent)]``
    (``teacher`` is None for a run without one)."""
    if model not in ("student", "teacher"):
        raise InputError(f"model: expected student or teacher, got {model!r}")
    pred = run_predictions(run_dir, progress=progress)
    n = len(pred.classes)
    for name, value in (("true class", true_class), ("predicted class", predicted_class)):
        if not 0 <= int(value) < n:
            raise InputError(f"{name}: {value} is not a class of this run (0 to {n - 1})")
    chosen = pred.predicted(model)
    cell = np.flatnonzero((pred.labels == true_class) & (chosen == predicted_class))
    items = []
    for index in cell[:limit].tolist():
        items.append({
            "index": index,
            "image": _image_array(pred.images[index]),
            "student": top_k(pred.student[index], pred.classes, k),
            "teacher": top_k(pred.teacher[index], pred.classes, k) if pred.teacher is not None else None,
        })
    return {"classes": pred.classes, "true": int(true_class), "predicted": int(predicted_class), "model": model,
            "count": int(len(cell)), "items": items, "notes": pred.notes, "student_epoch": pred.student_epoch}


@dataclass
class Preprocessing:
    """How a run's models see an image: channels, size, normalisation, class names."""

    classes: list[str]
    channels: int
    size: tuple[int, int]  # (height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]


def run_preprocessing(run_dir: str | Path) -> Preprocessing:
    """The run's input description: from its model card when it wrote one, else from its data set
    (the same statistics the run used; never downloading)."""
    from engine.config import load_config
    from engine.runfolder import CONFIG_FILE, read_summary
    from engine.runs import _data_description

    path = Path(run_dir).expanduser()
    if not (path / CONFIG_FILE).is_file():
        raise InputError(f"{path}: not a run folder (no {CONFIG_FILE})")
    classes, mean, std, shape = _data_description(path, load_config(path / CONFIG_FILE), read_summary(path))
    channels, height, width = (int(v) for v in shape)
    return Preprocessing(classes=list(classes), channels=channels, size=(height, width),
                         mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


def prepare_image(image_path: str | Path, prep: Preprocessing) -> np.ndarray:
    """An image file as the run's models see it before normalisation: uint8 ``H x W x C`` with the
    data set's channels (gray or RGB) and size (bilinear resize, as the image-folder reader does)."""
    from PIL import Image

    from engine.data.images import open_image

    path = Path(image_path).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    try:
        with open_image(path) as img:
            img.load()
            if img.mode.startswith("I;16"):  # 16-bit gray: down to 8 bits as the data reader does
                arr = np.asarray(img, dtype=np.float32) / 257.0
                img = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), mode="L")
            img = img.convert("L" if prep.channels == 1 else "RGB")
            height, width = prep.size
            if img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8).copy()
    except DataError:
        raise
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, ValueError, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read the image ({reason})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] != prep.channels:
        raise DataError(f"{path}: the run's models take {prep.channels} channel(s), the image has {array.shape[2]}")
    return array


def normalise(array: np.ndarray, prep: Preprocessing):
    """``H x W x C`` uint8 -> a normalised ``1 x C x H x W`` float tensor (the test loader's transform)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0).unsqueeze(0)
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def classify_image(run_dir: str | Path, image_path: str | Path, *, k: int = 5) -> dict[str, Any]:
    """The top ``k`` classes, with probabilities in percent, of the run's student and teacher for
    an image file, through the run's preprocessing.

    Returns ``{"image" (uint8 H x W x C as the models see it), "size", "channels", "student",
    "teacher" ([(class, percent)], None without a teacher), "notes", "file"}``."""
    import torch

    prep = run_preprocessing(run_dir)
    array = prepare_image(image_path, prep)
    models = _models(run_dir)
    x = normalise(array, prep)
    with torch.no_grad():
        student = torch.softmax(models.student(x)[0].float(), 1)[0].numpy()
        teacher = torch.softmax(models.teacher(x)[0].float(), 1)[0].numpy() if models.teacher is not None else None
    return {"file": str(image_path), "image": array, "size": prep.size, "channels": prep.channels,
            "student": top_k(student, prep.classes, k),
            "teacher": top_k(teacher, prep.classes, k) if teacher is not None else None,
            "notes": list(models.notes), "student_epoch": models.student_best_epoch}


_models_cache: dict[tuple[str, float], Any] = {}


def _models(run_dir: str | Path):
    """The run's models, kept while its checkpoints do not change (several images are tried in a row)."""
    from engine.inspect.load import load_run_models

    path = Path(run_dir).expanduser()
    key = (str(path.resolve()), _stamp(path))
    with _lock:
        found = _models_cache.get(key)
    if found is None:
        found = load_run_models(path)
        with _lock:
            _models_cache.clear()
            _models_cache[key] = found
    return found


__all__ = ["RunPredictions", "run_predictions", "confusion_cell", "Preprocessing", "run_preprocessing",
           "prepare_image", "normalise", "classify_image", "top_k"]
