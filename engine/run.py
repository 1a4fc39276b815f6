"""Run a whole experiment: teacher -> self-analysis -> student -> evaluation -> export.

This is the engine's one entry point (the CLI and the GUI both call it)::

    summary = run_experiment(config, run_dir="runs/demo", subscribers=[print], control=RunControl())

Config in, events out, control (pause/resume/stop) from any thread. Every stage
finishes by writing a checkpoint in ``run_dir/checkpoints``; a run started again with
``resume=True`` on the same folder skips finished stages and continues the interrupted
one from its last checkpoint.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from engine.config import ExperimentConfig, load_config, resolve, save_config, to_dict, validate
from engine.control import RunControl
from engine.errors import CheckpointError, InputError, MGDError, StopRequested, TrainingError
from engine.events import (DatasetInfo, Event, EventBus, Evaluation, Exported, HeadAccuracies, Log, NoiseCurve,
                           RunFailed, RunFinished, RunStarted, StageFinished, Subscriber)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"


# ----------------------------------------------------------------------------- small helpers


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


class MetricsWriter:
    """Subscriber that appends every event to ``metrics.jsonl`` as one JSON object per line."""

    def __init__(self, path: Path):
        self._fh = open(path, "a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        self._fh.write(json.dumps(event.to_dict()) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def default_run_dir(cfg: ExperimentConfig, runs_root: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in cfg.name) or "run"
    path = Path(runs_root) / f"{stamp}-{safe}"
    n = 1
    while path.exists():
        n += 1
        path = Path(runs_root) / f"{stamp}-{safe}-{n}"
    return path


def select_device(name: str):
    """The torch device for a config's ``device`` and a description of it."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device: {name!r} was asked for but no CUDA GPU is available; use auto or cpu")
        device = torch.device(name)
        index = device.index if device.index is not None else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"device: {name!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
        props = torch.cuda.get_device_properties(index)
        return torch.device("cuda", index), f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise InputError("device: 'mps' was asked for but no Apple GPU is available; use auto or cpu")
        return torch.device("mps"), "mps (Apple GPU)"
    return torch.device("cpu"), f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def augmentation(mode: str, bundle) -> tuple[int, bool]:
    """(crop padding, flip) for a configured augmentation mode and this data set."""
    if mode == "auto":
        return bundle.crop_padding, bundle.natural
    return (bundle.crop_padding if "crop" in mode else 0), ("flip" in mode)


def load_data(d):
    """The data set a config's data section names (``~`` in ``root`` expanded)."""
    from engine.data import load_dataset

    root = str(Path(d.root).expanduser()) if d.root else None
    return load_dataset(d.dataset, root=root, download=d.download, image_size=d.image_size,
                        test_fraction=d.test_fraction, split_seed=0, in_memory=d.in_memory,
                        augment=d.augment, normalize=d.normalize)


def speed_settings(speed, device) -> tuple[str, bool]:
    """(precision, channels_last) for the config's speed options on this device."""
    import torch

    cuda = device.type == "cuda"
    if speed.amp == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    else:
        precision = {"off": "fp32"}.get(speed.amp, speed.amp)
    if precision == "fp16" and not cuda:
        raise InputError("speed.amp: fp16 needs a CUDA GPU (use bf16 or off on this device)")
    channels_last = cuda if speed.channels_last == "auto" else speed.channels_last == "on"
    return precision, channels_last


def peak_memory(device) -> dict[str, float]:
    """Peak memory so far: CUDA max allocated on a GPU, the process's peak resident set size otherwise."""
    import resource

    import torch

    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- the run


class ExperimentRun:
    """State of one run; :func:`run_experiment` is the public way to use it."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, bus: EventBus, control: RunControl, resumed: bool):
        self.cfg = cfg
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / CHECKPOINT_DIR
        self.bus = bus
        self.control = control
        self.resumed = resumed
        self.stage = "setup"
        self.summary: dict[str, Any] = {
            "name": cfg.name,
            "status": "running",
            "run_dir": str(run_dir),
            "started": datetime.now().isoformat(timespec="seconds"),
            "mode": cfg.granularity.mode,
            "distiller": cfg.distiller.name,
            "seed": cfg.seed,
            "teacher": {"arch": cfg.teacher.arch},
            "heads": [],
            "student": {"arch": cfg.student.arch},
            "stages": {},
        }

    def save_summary(self) -> None:
        write_json(self.run_dir / SUMMARY_FILE, self.summary)

    # -- setup -------------------------------------------------------------------
    def setup(self) -> None:
        """Check every input before anything is trained: device, data, teacher checkpoint."""
        import torch

        cfg = self.cfg
        self.device, device_text = select_device(cfg.device)
        self.summary["device"] = device_text
        self.precision, self.channels_last = speed_settings(cfg.speed, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        self.summary["speed"] = {"precision": self.precision, "channels_last": self.channels_last,
                                 "compile": cfg.speed.compile}
        d = cfg.data
        self.bundle = load_data(d)
        b = self.bundle
        self.num_classes = b.num_classes
        self.classes = list(b.classes)
        self.input_shape = (b.in_channels, *b.image_size)
        self.transfer_bundle = None
        t = cfg.transfer
        if t.enabled:  # the second data set is checked now, not after hours of training
            self.transfer_bundle = load_data(t.data)
            if self.transfer_bundle.in_channels != b.in_channels:
                raise InputError(f"transfer.data: {self.transfer_bundle.name} has {self.transfer_bundle.in_channels} "
                                 f"channel(s) but the student is trained on {b.in_channels}; choose a data set "
                                 "with the same number of channels")
        from engine.preflight import check_models

        check_models(cfg, self.num_classes, self.input_shape, len(b.train_labels), log=self.bus.log)
        self.loaded_teacher = None
        if cfg.teacher.checkpoint and not cfg.online.enabled:  # refuse a checkpoint of another architecture before any training
            from engine.models.checkpoint import load_weights

            teacher = self.build(cfg.teacher.arch, 0)
            load_weights(teacher, str(Path(cfg.teacher.checkpoint).expanduser()), cfg.teacher.arch)
            self.loaded_teacher = teacher

        self.bus.emit(RunStarted(str(self.run_dir), to_dict(cfg), device_text, resumed=self.resumed))
        self.bus.emit(DatasetInfo(b.name, self.classes, len(b.train_labels), len(b.test_labels), list(self.input_shape)))
        streamed = bool(getattr(b, "streamed", False))
        self.summary["data"] = {"dataset": b.name, "classes": len(self.classes), "train_size": len(b.train_labels),
                                "test_size": len(b.test_labels), "input_shape": list(self.input_shape),
                                "streamed": streamed}
        if streamed:
            self.bus.log(f"data: {b.name} is too large for memory (or in_memory: off): streaming it from disk "
                         f"with {d.workers} worker(s)")
        self.train_loader, self.test_loader = self.loaders(d, b)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)

    def loaders(self, d, bundle):
        """(train, test) batch loaders of a data set on the run's device."""
        from engine.data import make_loader

        padding, flip = augmentation(d.augment, bundle)
        n = len(bundle.train_labels)
        # A last batch of one sample breaks batch norm on 1x1 feature maps: drop it then.
        drop_last = n > d.batch_size and n % d.batch_size == 1
        train = make_loader(bundle, "train", batch_size=d.batch_size, device=self.device, train=True,
                            crop_padding=padding, flip=flip, seed=self.cfg.seed, drop_last=drop_last,
                            workers=d.workers)
        test = make_loader(bundle, "test", batch_size=d.eval_batch_size, device=self.device, train=False,
                           workers=d.workers)
        return train, test

    def trainer(self, train_loader=None, classes=None):
        from engine.trainer import Trainer

        return Trainer(bus=self.bus, control=self.control, checkpoint_dir=self.ckpt_dir,
                       train_loader=train_loader or self.train_loader, classes=classes or self.classes,
                       precision=self.precision, channels_last=self.channels_last)

    def fit(self, task, schedule, train_loader=None, classes=None) -> list[dict]:
        return self.trainer(train_loader, classes).fit(
            task, epochs=schedule.epochs, lr=schedule.lr, momentum=schedule.momentum,
            weight_decay=schedule.weight_decay, milestones=schedule.milestones, gamma=schedule.gamma)

    def build(self, arch: str, seed_offset: int, init=None):
        """A model on the run's device; ``init`` (the teacher or student section) names its starting weights."""
        import torch

        from engine.models import build_model

        torch.manual_seed(self.cfg.seed + seed_offset)  # each model's init depends on the seed alone
        model = build_model(arch, self.num_classes, self.input_shape[0],
                            pretrained=bool(getattr(init, "pretrained", False)),
                            weights=getattr(init, "weights", None)).to(self.device)
        for note in getattr(model, "init_notes", ()):
            self.bus.log(note)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.cfg.speed.compile:
            # compiles on first call; the module keeps its state-dict names (checkpoints stay plain)
            model.compile()
        return model

    def evaluate_and_report(self, model, role: str, epoch: int) -> dict[str, Any]:
        from engine.evaluate import evaluate_model, expected_calibration_error, noise_robustness, output_noise

        model.eval()
        forward = lambda x: model(x)[0]  # noqa: E731
        acc, confusion = evaluate_model(forward, self.test_loader, self.num_classes)
        self.bus.emit(Evaluation(role, role, epoch, acc, self.classes, confusion))
        ev = self.cfg.evaluation
        curve = noise_robustness(forward, self.test_loader, self.num_classes, ev.noise_levels, ev.noise_seed)
        spread = output_noise(forward, self.test_loader)
        self.bus.emit(NoiseCurve(role, [c[0] for c in curve], [c[1] for c in curve], output_noise=spread))
        return {"test_acc": acc, "noise_curve": curve, "output_noise": spread,
                "ece": expected_calibration_error(forward, self.test_loader)}

    def finish_stage(self, name: str, seconds: float, result: dict) -> None:
        self.summary["stages"][name] = {"seconds": round(seconds, 3), **peak_memory(self.device)}
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        self.save_summary()
        self.bus.emit(StageFinished(name, seconds, result))

    # -- stage 1 -------------------------------------------------------------------
    def teacher_stage(self):
        from engine.stages import TeacherTask
        from engine.trainer import atomic_save, safe_load

        cfg = self.cfg
        self.stage = "teacher"
        t0 = time.perf_counter()
        final = self.ckpt_dir / "teacher.pt"
        seconds_before = 0.0
        if self.loaded_teacher is not None:
            teacher = self.loaded_teacher
            source = f"checkpoint {cfg.teacher.checkpoint}"
            self.bus.log(f"teacher: loaded {cfg.teacher.arch} from {cfg.teacher.checkpoint}")
        elif final.exists():
            teacher = self.build(cfg.teacher.arch, 0)
            state = safe_load(final)
            teacher.load_state_dict(state["model"])
            seconds_before = float(state.get("seconds", 0.0))
            source = "trained (this run)"
            self.bus.log("teacher: already trained in this run, loaded its weights")
        else:
            teacher = self.build(cfg.teacher.arch, 0, init=cfg.teacher)
            history = self.fit(TeacherTask(teacher, self.test_loader, self.num_classes,
                                           backbone_lr_scale=cfg.teacher.backbone_lr_scale), cfg.teacher.schedule)
            seconds_before = time.perf_counter() - t0
            atomic_save({"arch": cfg.teacher.arch, "num_classes": self.num_classes,
                         "in_channels": self.input_shape[0], "model": teacher.state_dict(),
                         "test_acc": history[-1]["test_acc"] if history else None,
                         "seconds": seconds_before}, final)
            source = "trained"
            t0 = time.perf_counter()
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        report = self.evaluate_and_report(teacher, "teacher", cfg.teacher.schedule.epochs)
        seconds = seconds_before + time.perf_counter() - t0
        self.summary["teacher"] = {"arch": cfg.teacher.arch, "params": count_parameters(teacher),
                                   "source": source, **report}
        self.finish_stage("teacher", seconds, {"test_acc": report["test_acc"]})
        return teacher

    # -- stage 2 -------------------------------------------------------------------
    def heads_stage(self, teacher):
        from engine.mgd import GranularityHeads
        from engine.stages import HeadsTask
        from engine.trainer import atomic_save, safe_load

        cfg = self.cfg
        self.stage = "heads"
        t0 = time.perf_counter()
        import torch

        torch.manual_seed(cfg.seed + 1)
        heads = GranularityHeads(teacher.feature_dim, self.num_classes, cfg.granularity.heads).to(self.device)
        final = self.ckpt_dir / "heads.pt"
        task = HeadsTask(teacher, heads, self.test_loader, self.num_classes)
        if final.exists():
            state = safe_load(final)
            heads.load_state_dict(state["heads"])
            task.best_acc, task.best_epoch = list(state["best_acc"]), list(state["best_epoch"])
            seconds = float(state.get("seconds", 0.0))
            self.bus.log("heads: already trained in this run, loaded their weights")
        else:
            self.fit(task, cfg.granularity.schedule)
            task.restore_best()
            seconds = time.perf_counter() - t0
            atomic_save({"heads": heads.state_dict(), "dims": heads.dims, "temperatures": heads.temperatures,
                         "best_acc": task.best_acc, "best_epoch": task.best_epoch, "seconds": seconds}, final)
        heads.eval()
        for p in heads.parameters():
            p.requires_grad_(False)
        results = [{"dim": h.dim, "temperature": h.temperature, "test_acc": acc, "epoch": ep}
                   for h, acc, ep in zip(heads.heads, task.best_acc, task.best_epoch)]
        self.summary["heads"] = results
        self.bus.emit(HeadAccuracies(results, self.summary["teacher"]["test_acc"]))
        self.finish_stage("heads", seconds, {"heads": results})
        return heads

    # -- stage 3 -------------------------------------------------------------------
    def student_stage(self, teacher, teacher_heads):
        import torch

        from engine.distillers import distiller_class
        from engine.distillers.base import DistillerContext
        from engine.mgd import GranularityHeads
        from engine.stages import StudentTask
        from engine.trainer import atomic_save, safe_load

        cfg = self.cfg
        self.stage = "student"
        t0 = time.perf_counter()
        student = self.build(cfg.student.arch, 2, init=cfg.student)
        mode = cfg.granularity.mode
        student_heads = None
        if mode != "off":
            torch.manual_seed(cfg.seed + 3)
            student_heads = GranularityHeads(student.feature_dim, self.num_classes, cfg.granularity.heads).to(self.device)

        cls = distiller_class(cfg.distiller.name)
        with torch.no_grad():
            probe = next(iter(self.test_loader.epoch(0)))[0][:2]
            student.eval()
            s_feats = student(probe, preact=cls.needs_preact)[1]
            t_feats = teacher(probe, preact=cls.needs_preact)[1] if teacher is not None else []
        context = DistillerContext(
            student_shapes=[tuple(f.shape[1:]) for f in s_feats], teacher_shapes=[tuple(f.shape[1:]) for f in t_feats],
            num_classes=self.num_classes, train_size=len(self.bundle.train_labels), student_arch=cfg.student.arch,
            teacher_arch=cfg.teacher.arch, options=cfg.distiller.options)
        torch.manual_seed(cfg.seed + 4)
        distiller = cls(context).to(self.device)
        d = cfg.distiller
        task = StudentTask(student=student, teacher=teacher, distiller=distiller, mode=mode,
                           teacher_heads=teacher_heads, student_heads=student_heads,
                           weights=(d.w_ce, d.w_div, d.w_kd), temperature=d.temperature,
                           test_loader=self.test_loader, num_classes=self.num_classes)
        final = self.ckpt_dir / "student.pt"
        if distiller.pretrain_epochs() > 0 and not final.exists():
            self.pretrain_stage(student, teacher, distiller)
            self.stage = "student"
            t0 = time.perf_counter()
        if final.exists():
            state = safe_load(final)
            final_acc, seconds = state["final_acc"], float(state.get("seconds", 0.0))
            task.best_acc, task.best_epoch, task.best_state = state["best_acc"], state["best_epoch"], state["best"]
            self.bus.log("student: already trained in this run, loaded its weights")
        else:
            history = self.fit(task, cfg.student.schedule)
            final_acc = history[-1]["test_acc"] if history else None
            seconds = time.perf_counter() - t0
            if task.best_state is None:  # no epoch: the initial weights are the best we have
                task.best_state = {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}
            atomic_save({"arch": cfg.student.arch, "num_classes": self.num_classes,
                         "in_channels": self.input_shape[0], "final": student.state_dict(), "best": task.best_state,
                         "final_acc": final_acc, "best_acc": task.best_acc, "best_epoch": task.best_epoch,
                         "seconds": seconds}, final)
        t1 = time.perf_counter()
        student.load_state_dict(task.best_state)
        report = self.evaluate_and_report(student, "student", task.best_epoch)
        seconds += time.perf_counter() - t1
        self.summary["student"] = {"arch": cfg.student.arch, "params": count_parameters(student),
                                   "test_acc": final_acc, "best_acc": report["test_acc"], "best_epoch": task.best_epoch,
                                   "noise_curve": report["noise_curve"], "output_noise": report["output_noise"],
                                   "ece": report["ece"]}
        self.finish_stage("student", seconds, {"test_acc": final_acc, "best_acc": report["test_acc"]})
        return student

    # -- online variant --------------------------------------------------------------
    def online_stage(self):
        """Peers trained together from scratch (no teacher); returns the best peer at its best epoch."""
        import torch

        from engine.mgd import GranularityHeads
        from engine.stages import OnlineTask
        from engine.trainer import atomic_save, safe_load

        cfg = self.cfg
        self.stage = "online"
        t0 = time.perf_counter()
        peers = [self.build(arch, 10 + i) for i, arch in enumerate(cfg.online.peers)]
        heads = None
        if cfg.granularity.mode != "off":
            torch.manual_seed(cfg.seed + 3)
            heads = [GranularityHeads(p.feature_dim, self.num_classes, cfg.granularity.heads).to(self.device)
                     for p in peers]
        task = OnlineTask(peers=peers, heads=heads, test_loader=self.test_loader, num_classes=self.num_classes)
        final = self.ckpt_dir / "online.pt"
        if final.exists():
            state = safe_load(final)
            task.load_extra_state(state)
            final_accs, seconds = state["final_acc"], float(state.get("seconds", 0.0))
            self.bus.log("online: already trained in this run, loaded the peers")
        else:
            history = self.fit(task, cfg.student.schedule)
            final_accs = [history[-1]["metrics"][f"peer{i + 1}"] for i in range(len(peers))] if history else \
                [None] * len(peers)
            seconds = time.perf_counter() - t0
            for i, peer in enumerate(peers):
                if task.best_state[i] is None:
                    task.best_state[i] = {k: v.detach().cpu().clone() for k, v in peer.state_dict().items()}
            atomic_save({**task.extra_state(), "final_acc": final_accs, "seconds": seconds}, final)
        best = max(range(len(peers)), key=lambda i: task.best_acc[i])
        t1 = time.perf_counter()
        peers[best].load_state_dict(task.best_state[best])
        report = self.evaluate_and_report(peers[best], "student", task.best_epoch[best])
        seconds += time.perf_counter() - t1
        self.summary["teacher"] = {"arch": None, "source": "none (online MGD)"}
        self.summary["peers"] = [{"arch": a, "test_acc": f, "best_acc": b, "best_epoch": e}
                                 for a, f, b, e in zip(cfg.online.peers, final_accs, task.best_acc, task.best_epoch)]
        self.summary["student"] = {"arch": cfg.online.peers[best], "peer": best + 1,
                                   "params": count_parameters(peers[best]), "test_acc": final_accs[best],
                                   "best_acc": report["test_acc"], "best_epoch": task.best_epoch[best],
                                   "noise_curve": report["noise_curve"], "output_noise": report["output_noise"],
                                   "ece": report["ece"]}
        self.finish_stage("online", seconds, {"peers": self.summary["peers"]})
        return peers[best]

    def pretrain_stage(self, student, teacher, distiller) -> None:
        """The baseline's own pre-training (AB, FT, FSP), as a stage with events and checkpoints."""
        from engine.stages import PretrainTask
        from engine.trainer import atomic_save, safe_load

        self.stage = "pretrain"
        t0 = time.perf_counter()
        final = self.ckpt_dir / "pretrain.pt"
        if final.exists():
            state = safe_load(final)
            student.load_state_dict(state["student"])
            distiller.load_state_dict(state["distiller"])
            seconds = float(state.get("seconds", 0.0))
            self.bus.log("pretrain: already done in this run, loaded its weights")
        else:
            sched = self.cfg.student.schedule
            task = PretrainTask(student=student, teacher=teacher, distiller=distiller, test_loader=self.test_loader,
                                num_classes=self.num_classes)
            self.trainer().fit(task, epochs=distiller.pretrain_epochs(), lr=distiller.pretrain_lr(sched.lr),
                               momentum=sched.momentum,
                               weight_decay=sched.weight_decay, milestones=[], gamma=sched.gamma)
            seconds = time.perf_counter() - t0
            atomic_save({"student": student.state_dict(), "distiller": distiller.state_dict(), "seconds": seconds},
                        final)
        self.finish_stage("pretrain", seconds, {})

    # -- fine-tuning ability ---------------------------------------------------------
    def transfer_stage(self, student) -> None:
        """Linear probe of the distilled student on a second data set (METHOD.md, "Fine-tuning ability")."""
        import torch
        from torch import nn

        from engine.stages import TransferTask
        from engine.trainer import atomic_save, safe_load

        t = self.cfg.transfer
        self.stage = "transfer"
        t0 = time.perf_counter()
        bundle = self.transfer_bundle
        train_loader, test_loader = self.loaders(t.data, bundle)
        model = copy.deepcopy(student)
        torch.manual_seed(self.cfg.seed + 5)
        model.replace_classifier(nn.Linear(model.feature_dim, bundle.num_classes).to(self.device))
        task = TransferTask(model, test_loader, bundle.num_classes, adapt_batchnorm=t.adapt_batchnorm)
        final = self.ckpt_dir / "transfer.pt"
        if final.exists():
            task.load_extra_state(safe_load(final))
        else:
            self.fit(task, t.schedule, train_loader=train_loader, classes=list(bundle.classes))
            atomic_save(task.extra_state(), final)
        seconds = time.perf_counter() - t0
        self.summary["transfer"] = {"dataset": bundle.name, "classes": bundle.num_classes, "best_acc": task.best_acc,
                                    "best_epoch": task.best_epoch, "adapt_batchnorm": t.adapt_batchnorm}
        self.finish_stage("transfer", seconds, dict(self.summary["transfer"]))

    # -- export --------------------------------------------------------------------
    def export(self, student) -> None:
        from engine.export import export_model

        cfg = self.cfg
        if not cfg.export.enabled or not cfg.export.formats:
            return
        self.stage = "export"
        out = Path(cfg.export.dir) if cfg.export.dir else self.run_dir / "export"
        card = {
            "teacher": {"arch": self.summary["teacher"].get("arch"), "test_acc": self.summary["teacher"].get("test_acc")},
            "accuracy": {"test_acc": self.summary["student"]["best_acc"],
                         "final_test_acc": self.summary["student"]["test_acc"],
                         "best_epoch": self.summary["student"]["best_epoch"]},
            "noise_curve": self.summary["student"]["noise_curve"],
            "mgd": {"mode": cfg.granularity.mode, "distiller": cfg.distiller.name,
                    "heads": [{"dim": h.dim, "temperature": h.temperature} for h in cfg.granularity.heads]},
            "config": to_dict(cfg),
        }
        failed: dict[str, str] = {}
        try:
            files = export_model(student, out, arch=self.summary["student"]["arch"], input_shape=self.input_shape,
                                 classes=self.classes, mean=self.bundle.mean, std=self.bundle.std,
                                 formats=cfg.export.formats, card_extra=card, failures=failed)
        except Exception as exc:  # training is done and saved: report, do not lose the run
            self.summary["export"] = {"error": f"{type(exc).__name__}: {exc}"}
            self.bus.emit(Log(f"export failed: {exc}", "error"))
            return
        self.summary["export"] = {k: str(v) for k, v in files.items()}
        self.summary["export"]["bytes"] = {k: Path(v).stat().st_size for k, v in files.items()}
        for fmt, reason in failed.items():  # the other formats were written
            self.bus.emit(Log(f"export: {fmt} skipped: {reason}", "warning"))
        if failed:
            self.summary["export"]["failed"] = dict(failed)
        self.bus.emit(Exported({k: str(v) for k, v in files.items()}))

    # -- all -----------------------------------------------------------------------
    def execute(self) -> dict:
        t_start = time.perf_counter()
        self.setup()
        if self.cfg.online.enabled:
            student = self.online_stage()
        else:
            from engine.distillers import distiller_class

            teacher = None
            if distiller_class(self.cfg.distiller.name).uses_teacher or self.cfg.granularity.mode != "off":
                teacher = self.teacher_stage()
            else:
                self.summary["teacher"] = {"arch": None, "source": "none (student trained alone)"}
            self.check_stop()
            heads = None
            if self.cfg.granularity.mode != "off":
                heads = self.heads_stage(teacher)
                self.check_stop()
            student = self.student_stage(teacher, heads)
        from engine.evaluate import cpu_latency_ms

        self.summary["student"]["cpu_latency_ms"] = cpu_latency_ms(student, self.input_shape)
        self.export(student)
        if self.cfg.transfer.enabled:
            self.check_stop()
            self.transfer_stage(student)
        self.summary["status"] = "finished"
        self.summary["total_seconds"] = round(time.perf_counter() - t_start + self.summary.get("previous_seconds", 0), 3)
        self.summary["finished"] = datetime.now().isoformat(timespec="seconds")
        self.save_summary()
        return self.summary

    def check_stop(self) -> None:
        if self.control.stop_requested:
            raise StopRequested(f"stopped after the {self.stage} stage")


def _oom_error(exc: BaseException) -> TrainingError | None:
    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return TrainingError(f"out of memory on the device ({text.splitlines()[0][:200]}); "
                             "lower data.batch_size or use a smaller model", kind="oom")
    return None


def prepare_run(config: ExperimentConfig | None, run_dir: str | Path | None, runs_root: str | Path,
                resume: bool) -> tuple[ExperimentConfig, Path]:
    """Validate, resolve and place a run; returns the resolved config and the run folder."""
    if resume:
        if run_dir is None:
            raise InputError("resume needs the run folder")
        run_dir = Path(run_dir)
        if not (run_dir / CONFIG_FILE).is_file():
            raise InputError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")
        cfg = load_config(run_dir / CONFIG_FILE)
        validate(cfg)
        return cfg, run_dir
    if config is None:
        raise InputError("no experiment config given")
    validate(config)
    cfg = resolve(config)
    validate(cfg)
    path = Path(run_dir) if run_dir else default_run_dir(cfg, runs_root)
    if path.exists() and any(path.iterdir()):
        raise InputError(f"{path}: the run folder exists and is not empty; choose another or resume it")
    path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path / CONFIG_FILE)
    return cfg, path


def run_experiment(config: ExperimentConfig | None = None, *, run_dir: str | Path | None = None,
                   runs_root: str | Path = "runs", subscribers: Iterable[Subscriber] = (),
                   control: RunControl | None = None, resume: bool = False) -> dict:
    """Run (or resume) an experiment and return its summary.

    Raises :class:`InputError` for bad input (before or during the run),
    :class:`TrainingError` for a failure in training, and returns normally with
    ``summary["status"] == "stopped"`` when ``control.stop()`` ended the run early.
    Every outcome is also announced as an event (RunFinished or RunFailed).
    """
    bus = EventBus(list(subscribers))
    control = control or RunControl()
    cfg, path = prepare_run(config, run_dir, runs_root, resume)
    writer = MetricsWriter(path / METRICS_FILE)
    bus.subscribe(writer)
    run = ExperimentRun(cfg, path, bus, control, resumed=resume)
    if resume and (path / SUMMARY_FILE).exists():
        try:
            old = json.loads((path / SUMMARY_FILE).read_text())
            run.summary["previous_seconds"] = float(old.get("total_seconds", 0) or 0)
        except (ValueError, OSError):
            pass
    try:
        summary = run.execute()
        bus.emit(RunFinished(str(path), copy.deepcopy(summary)))
        return summary
    except StopRequested as exc:
        run.summary["status"] = "stopped"
        run.summary["stopped_in"] = run.stage
        run.save_summary()
        bus.log(f"{exc}; resume with: mgd-train --resume {path}")
        bus.emit(RunFinished(str(path), copy.deepcopy(run.summary), stopped=True))
        return run.summary
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, then re-raised
        error: BaseException = _oom_error(exc) or exc
        if isinstance(error, InputError):
            kind = "input"
        elif isinstance(error, TrainingError):
            kind = error.kind
        elif isinstance(error, KeyboardInterrupt):
            kind = "interrupted"
        else:
            kind = "error"
        message = str(error) if isinstance(error, MGDError) else f"{type(error).__name__}: {error}"
        run.summary["status"] = "failed"
        run.summary["failed_in"] = run.stage
        run.summary["error"] = message
        details = traceback.format_exc()
        try:
            run.save_summary()
            (path / "error.log").write_text(details, encoding="utf-8")
        finally:
            bus.emit(RunFailed(str(path), run.stage, message, kind, details))
        if kind == "input" and run.stage == "setup" and not resume:
            writer.close()
            shutil.rmtree(path, ignore_errors=True)  # refused before it began: leave no half-made run behind
        if error is not exc:
            raise error from exc
        raise
    finally:
        writer.close()


__all__ = ["run_experiment", "prepare_run", "select_device", "RunControl", "CheckpointError"]
