"""Run folders as a collection: list them, read their metrics, export their student.

A run folder (written by :func:`engine.run.run_experiment`) holds ``config.yaml``,
``metrics.jsonl``, ``summary.json``, ``checkpoints/`` and ``export/``. A comparison folder
(written by :class:`engine.comparison.Comparison`) holds the comparison's ``config.yaml``, its
job list and one run folder per job, each with its job record (``job.json``: pair, seed,
baseline, mode); folder names are for people and are never parsed. This module reads them without
Qt, for the GUI's runs panel and for scripts. Listing runs imports no torch;
:func:`export_run` does (it rebuilds the student).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from engine.errors import CheckpointError, InputError
from engine.jobs import JOB_FILE, Job, read_job
from engine.runfolder import (ANNOTATION_FILE, CARD_FILE, CHECKPOINT_DIR, CONFIG_FILE, EXPORT_DIR, METRICS_FILE,
                              SUMMARY_FILE, checkpoint_path, load_checkpoint, read_json)

#: statuses after which ``run_experiment(resume=True)`` can continue the run
RESUMABLE = ("stopped", "failed", "running", "unknown")


@dataclass
class RunInfo:
    """Key figures of one run folder (``None`` where the run has not got that far)."""

    path: Path
    name: str
    status: str  # running (or killed while running), finished, stopped, failed, unknown (no summary yet)
    started: str = ""
    mode: str = ""
    distiller: str = ""
    dataset: str = ""
    teacher_arch: str = ""
    teacher_acc: float | None = None
    student_arch: str = ""
    student_acc: float | None = None  # best test accuracy of the student
    best_epoch: int | None = None
    heads: list[dict] = field(default_factory=list)
    total_seconds: float | None = None
    error: str = ""
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    comparison: str = ""  # the name of the comparison the run belongs to ("" for a run of its own)
    comparison_dir: Path | None = None  # that comparison's folder
    seed: int | None = None
    experiment: str = ""  # the experiment's own name (``name`` is the user's name for the run, if given)
    note: str = ""  # the user's note about the run
    renamed: bool = False  # the user gave the run a name of its own
    job: Job | None = None  # which job of its comparison the run is (its job.json record)

    @property
    def label(self) -> str:
        """The run's name, the one every view shows (the studio's runs list, plots, Export, Inspect,
        Review, log): the user's name for a renamed run; else a comparison's run as
        ``<comparison> › <job folder>``; else the experiment's name."""
        return f"{self.comparison} › {self.path.name}" if self.comparison and not self.renamed else self.name

    @property
    def has_student(self) -> bool:
        return student_checkpoint(self.path) is not None

    @property
    def resumable(self) -> bool:
        return self.status in RESUMABLE and (self.path / CONFIG_FILE).is_file()


_read_json = read_json


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_info(run_dir: str | Path) -> RunInfo:
    """The key figures of one run folder (tolerates a missing or partial summary)."""
    return _run_info(Path(run_dir), None)


def _run_info(path: Path, comparison: dict[str, Any] | None) -> RunInfo:
    if comparison is None:
        comparison = _comparison_of(path)
    config = _read_yaml(path / CONFIG_FILE)
    summary = _read_json(path / SUMMARY_FILE)
    teacher = summary.get("teacher") or {}
    student = summary.get("student") or {}
    cfg_teacher = config.get("teacher") or {}
    cfg_student = config.get("student") or {}
    best_epoch = student.get("best_epoch")
    annotation = read_annotation(path)
    experiment = str(summary.get("name") or config.get("name") or path.name)
    seed = summary.get("seed", config.get("seed"))
    return RunInfo(
        path=path,
        name=annotation.get("name") or experiment,
        experiment=experiment,
        renamed=bool(annotation.get("name")),
        note=annotation.get("note", ""),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        status=str(summary.get("status") or "unknown"),
        started=str(summary.get("started") or ""),
        mode=str(summary.get("mode") or (config.get("granularity") or {}).get("mode") or ""),
        distiller=str(summary.get("distiller") or (config.get("distiller") or {}).get("name") or ""),
        dataset=str((summary.get("data") or {}).get("dataset") or (config.get("data") or {}).get("dataset") or ""),
        # a run without a teacher (the student alone, online MGD) says so with "arch": null
        teacher_arch="" if "arch" in teacher and teacher["arch"] is None else
        str(teacher.get("arch") or cfg_teacher.get("arch") or ""),
        teacher_acc=_number(teacher.get("test_acc")),
        student_arch=str(student.get("arch") or cfg_student.get("arch") or ""),
        student_acc=_number(student.get("best_acc")),
        best_epoch=best_epoch if isinstance(best_epoch, int) else None,
        heads=list(summary.get("heads") or []),
        total_seconds=_number(summary.get("total_seconds")),
        error=str(summary.get("error") or ""),
        summary=summary,
        config=config,
        **comparison,
    )


def _comparison_of(path: Path) -> dict[str, Any]:
    """``comparison``, ``comparison_dir`` and ``job`` of a run folder inside a comparison folder."""
    parent = path.parent
    job = read_job(path)
    if job is None and not _is_comparison(parent):
        return {}
    name = job.comparison if job is not None and job.comparison else None
    return {"comparison": str(name or _read_yaml(parent / CONFIG_FILE).get("name") or parent.name),
            "comparison_dir": parent, "job": job}


def _is_comparison(folder: Path) -> bool:
    return bool((_read_yaml(folder / CONFIG_FILE).get("comparison") or {}).get("baselines"))


def _comparison_jobs(folder: Path) -> list[Path]:
    """The run folders of a comparison folder that have begun (none for an ordinary run folder): those
    with a job record; in a comparison folder written before job records, every run folder in it."""
    try:
        children = [c for c in folder.iterdir() if c.is_dir() and (c / CONFIG_FILE).is_file()]
    except OSError:
        return []
    recorded = [c for c in children if (c / JOB_FILE).is_file()]
    if recorded or not children:
        return recorded
    return children if _is_comparison(folder) else []


def list_runs(root: str | Path) -> list[RunInfo]:
    """Every run folder under ``root``, newest first: the folders directly under it with a
    ``config.yaml``, and the runs of each comparison folder there (``mgd-train`` with
    ``comparison.baselines``), whose :attr:`RunInfo.comparison` names the comparison.
    A comparison folder itself is no run and is not listed."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for child in root.iterdir():
        if not (child.is_dir() and (child / CONFIG_FILE).is_file()):
            continue
        jobs = _comparison_jobs(child)
        if jobs:
            name = _read_yaml(child / CONFIG_FILE).get("name") or child.name
            for job in jobs:
                runs.append(_run_info(job, {"comparison": str(name), "comparison_dir": child, "job": read_job(job)}))
            continue
        info = _run_info(child, {})
        if not (info.config.get("comparison") or {}).get("baselines"):  # else a comparison with no run yet
            runs.append(info)

    def started(info: RunInfo) -> tuple[str, float]:
        try:
            mtime = (info.path / CONFIG_FILE).stat().st_mtime
        except OSError:
            mtime = 0.0
        return info.started, mtime

    runs.sort(key=started, reverse=True)
    return runs


# ----------------------------------------------------------------------------- managing runs


def read_annotation(run_dir: str | Path) -> dict[str, str]:
    """The user's ``name`` and ``note`` for a run (``{}`` when there are none)."""
    data = read_json(Path(run_dir) / ANNOTATION_FILE)
    return {k: str(v) for k, v in data.items() if k in ("name", "note") and isinstance(v, str) and v.strip()}


def annotate_run(run_dir: str | Path, *, name: str | None = None, note: str | None = None) -> dict[str, str]:
    """Give a run a name of its own and/or a note (``""`` removes it; ``None`` leaves it as it is).

    Written atomically to ``annotation.json`` in the run folder, apart from everything the
    engine writes, so a run being trained can be annotated too. Returns the annotation."""
    from engine.runfolder import write_json

    path = Path(run_dir)
    if not (path / CONFIG_FILE).is_file():
        raise InputError(f"{path}: not a run folder (no {CONFIG_FILE})")
    data = read_annotation(path)
    for key, value in (("name", name), ("note", note)):
        if value is None:
            continue
        value = " ".join(value.split()) if key == "name" else value.strip()
        if value:
            data[key] = value
        else:
            data.pop(key, None)
    write_json(path / ANNOTATION_FILE, data)
    return data


def duplicate_config(run_dir: str | Path):
    """The config of a run as a new experiment: the same resolved settings, named ``<name>-copy``
    (a run of a comparison comes out as one ordinary run)."""
    from engine.config import load_config, set_value

    path = Path(run_dir)
    if not (path / CONFIG_FILE).is_file():
        raise InputError(f"{path}: not a run folder (no {CONFIG_FILE})")
    cfg = load_config(path / CONFIG_FILE)
    return set_value(cfg, "name", f"{cfg.name or 'experiment'}-copy")


def delete_run(run_dir: str | Path, *, trash: str | None = None) -> str:
    """Remove a run folder: to the system trash where there is one (the ``send2trash`` package),
    else moved into ``.trash/`` beside it (``trash`` = ``"folder"`` forces that). Never a run a
    process is writing (its lock is held): :class:`InputError` names the writer.

    Returns where the folder went, in words."""
    import shutil
    from datetime import datetime

    from engine.runfolder import RunLock

    path = Path(run_dir)
    if not (path / CONFIG_FILE).is_file():
        raise InputError(f"{path}: not a run folder (no {CONFIG_FILE})")
    lock = RunLock(path).acquire()  # refuses a folder being written
    lock.release()
    if trash != "folder":
        try:
            from send2trash import send2trash
        except ImportError:
            send2trash = None
        if send2trash is not None:
            try:
                send2trash(str(path))
                return "moved to the system trash"
            except Exception:  # no trash on this file system (a network drive, a container): keep it beside
                pass
    folder = path.parent / ".trash"
    folder.mkdir(exist_ok=True)
    target = folder / f"{path.name}-deleted-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    shutil.move(str(path), str(target))
    return f"moved to {target}"


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The events of ``metrics.jsonl`` as dicts, in order.

    A run killed while writing leaves a truncated last line: lines that are not a JSON
    object are skipped, so a partial file still gives every complete event.
    """
    path = Path(run_dir) / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "event" in item:
            events.append(item)
    return events


# ----------------------------------------------------------------------------- export


def _data_description(run_dir: Path, config, summary: dict) -> tuple[list[str], tuple, tuple, tuple]:
    """(classes, mean, std, input shape) of the run's data set: from the model card the run
    wrote if there is one, else by loading the data set named in its config (the same
    statistics the run used)."""
    card = _read_yaml(run_dir / EXPORT_DIR / CARD_FILE)
    norm = card.get("normalization") or {}
    shape = card.get("input_shape") or (summary.get("data") or {}).get("input_shape")
    if card.get("classes") and norm.get("mean") and norm.get("std") and shape and len(shape) == 3:
        return list(card["classes"]), tuple(norm["mean"]), tuple(norm["std"]), tuple(int(v) for v in shape)
    import dataclasses

    from engine.runtime import load_data

    # the run's own data settings (streamed sets take their statistics from a sample), never downloading
    bundle = load_data(dataclasses.replace(config.data, download=False))
    return (list(bundle.classes), tuple(bundle.mean), tuple(bundle.std),
            (bundle.in_channels, *bundle.image_size))


def student_checkpoint(run_dir: str | Path) -> Path | None:
    """The final checkpoint holding a run's trained student: ``student.pt``, or ``online.pt``
    (whose best peer is the student) for online MGD; None before that stage has finished."""
    for stage in ("student", "online"):
        path = checkpoint_path(run_dir, stage)
        if path.is_file():
            return path
    return None


def load_trained_student(run_dir: str | Path):
    """``(model, info)``: a run's student with its best weights, in eval mode on the CPU, and
    ``info`` = ``{"arch", "best_acc", "best_epoch", "final_acc", "config"}``.

    Raises :class:`InputError` when the folder is no run or has no trained student yet and
    :class:`CheckpointError` when the checkpoint is not MGD Studio's.
    """
    from engine.config import load_config
    from engine.models import build_model

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise InputError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")
    ckpt = student_checkpoint(run_dir)
    if ckpt is None:
        raise InputError(f"{run_dir}: the run has no trained student yet ({CHECKPOINT_DIR}/student.pt is missing); "
                         "finish or resume the run first")
    config = load_config(run_dir / CONFIG_FILE)
    state = load_checkpoint(ckpt)
    try:
        tracker = state["tracker"]
        if state["stage"] == "online":
            peers = [k for k in tracker if k.startswith("peer")]
            key = max(peers, key=lambda k: -1.0 if tracker[k]["metric"] is None else tracker[k]["metric"])
            arch = config.online.peers[int(key[len("peer"):]) - 1]
        else:
            key, arch = "student", config.student.arch
        best = tracker[key]
        weights = best["state"] if best["state"] is not None else state["modules"][key]
        history = state.get("history") or []
        final_acc = history[-1]["test_acc"] if history and state["stage"] == "student" else \
            (history[-1]["metrics"].get(key) if history else None)
    except (KeyError, TypeError, ValueError, IndexError):
        raise CheckpointError(f"{ckpt}: not a student checkpoint of MGD Studio (format 2: stage, modules, "
                              "tracker)") from None
    data = read_json(run_dir / SUMMARY_FILE).get("data") or {}
    if not (data.get("input_shape") and data.get("classes")):
        raise CheckpointError(f"{run_dir}: {SUMMARY_FILE} lacks the data set's shape and classes")
    model = build_model(arch, int(data["classes"]), int(data["input_shape"][0]))
    model.load_state_dict(weights)
    model.eval()
    return model, {"arch": arch, "best_acc": best["metric"], "best_epoch": best["epoch"], "final_acc": final_acc,
                   "config": config}


def export_run(run_dir: str | Path, out_dir: str | Path, formats: Iterable[str] | str = ("weights", "torchscript", "onnx")
               ) -> dict[str, Path]:
    """Export the best student of a run folder to ``out_dir`` in ``formats``, with its model card.

    Returns ``{format: path}`` (plus ``"card"``). Raises :class:`InputError` when the folder
    has no trained student, and the exporter's errors (``ExportError``) when a format fails.
    """
    from engine.config import to_dict
    from engine.export import export_model

    run_dir = Path(run_dir)
    model, trained = load_trained_student(run_dir)
    config = trained["config"]
    info = run_info(run_dir)
    classes, mean, std, input_shape = _data_description(run_dir, config, info.summary)
    student = info.summary.get("student") or {}
    card = {
        "teacher": {"arch": None if config.online.enabled else config.teacher.arch,
                    "test_acc": (info.summary.get("teacher") or {}).get("test_acc")},
        "accuracy": {"test_acc": trained["best_acc"] if trained["best_acc"] is not None else student.get("best_acc"),
                     "final_test_acc": trained["final_acc"], "best_epoch": trained["best_epoch"]},
        "noise_curve": student.get("noise_curve"),
        "mgd": {"mode": config.granularity.mode, "distiller": config.distiller.name,
                "heads": [{"dim": h.dim, "temperature": h.temperature} for h in config.granularity.heads]},
        "config": to_dict(config),
        "run_dir": str(run_dir),
    }
    return export_model(model, out_dir, arch=trained["arch"], input_shape=input_shape, classes=classes, mean=mean,
                        std=std, formats=formats, card_extra=card)


__all__ = ["RunInfo", "list_runs", "run_info", "read_metrics", "export_run", "load_trained_student",
           "student_checkpoint", "read_annotation", "annotate_run", "duplicate_config", "delete_run"]
