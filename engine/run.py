"""Run a whole experiment: plan, then teacher -> self-analysis -> student -> evaluation -> export.

This is the engine's one entry point (the CLI and the GUI both call it)::

    summary = run_experiment(config, run_dir="runs/demo", subscribers=[print], control=RunControl())

Config in, events out, control (pause/resume/stop) from any thread. Before anything is
trained, :meth:`ExperimentRun.prepare` checks everything it can and declares the stages
(:class:`Stage`); the plan is the run's first event (``PlanReady``) and
:func:`plan_experiment` returns it without training (``mgd-train --plan``). One loop then
runs every stage: a training stage resumes from its per-epoch checkpoint or trains, and
ends by writing its final checkpoint; a run started again with ``resume=True`` skips
finished stages. The run folder's layout belongs to :mod:`engine.runfolder`.
"""

from __future__ import annotations

import copy
import platform
from contextlib import contextmanager
import shutil
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

from engine.config import ExperimentConfig, load_config, resolve, save_config, to_dict, validate
from engine.control import RunControl
from engine.errors import CheckpointError, InputError, MGDError, StopRequested, TrainingError
from engine.events import (DatasetInfo, EventBus, Evaluation, Exported, HeadAccuracies, NoiseCurve, PlanReady,
                           RunFailed, RunFinished, RunStarted, StageFinished, StageProgress, StageStarted, Subscriber)
from engine.plan import Plan, StagePlan
from engine.runfolder import (CHECKPOINT_DIR, CONFIG_FILE, ERROR_FILE, EXPORT_DIR, METRICS_FILE, SUMMARY_FILE,
                              MetricsWriter, RunLock, atomic_write, check_writable_dir, checkpoint_path,
                              last_checkpoint_path, load_checkpoint, now_iso, read_summary, remove_orphans,
                              save_checkpoint, write_summary)

#: Seed offsets. Every module's initialisation and every stage's random draws depend on the
#: experiment's seed and their role alone, so skipping or adding a stage (a loaded teacher,
#: MGD off) changes nothing else. The numbers are arbitrary but fixed: changing one changes
#: the results of that role for every existing config.
SEED_OFFSETS = {"teacher": 0, "teacher_heads": 1, "student": 2, "student_heads": 3, "distiller": 4,
                "transfer": 5, "pretrain": 6, "peer": 10}

__all__ = ["run_experiment", "plan_experiment", "prepare_run", "select_device", "RunControl", "CheckpointError",
           "CONFIG_FILE", "METRICS_FILE", "SUMMARY_FILE", "CHECKPOINT_DIR"]


# ----------------------------------------------------------------------------- small helpers


@contextmanager
def blame(field: str):
    """Attribute an InputError raised inside to ``field`` (unless it names one), so the studio
    can mark the field at fault."""
    try:
        yield
    except InputError as exc:
        raise exc.at(field)


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
                        test_fraction=d.test_fraction, split_seed=0, in_memory=d.in_memory)


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


def export_dir(cfg: ExperimentConfig, run_dir: Path | None) -> Path | None:
    if cfg.export.dir:
        return Path(cfg.export.dir).expanduser()
    return run_dir / EXPORT_DIR if run_dir is not None else None


# ----------------------------------------------------------------------------- stages


@dataclass
class Stage:
    """One stage, declared once: its plan entry (what it trains and freezes, its seed, its
    checkpoint), the task the training loop runs (training stages) or the work it does
    (others), and what it reports when it is done."""

    plan: StagePlan
    task: Any = None  # a StageTask for training stages
    work: Callable[[], None] | None = None  # the work of a stage that does not train
    report: Callable[[list[dict]], dict] = lambda history: {}  # summary bookkeeping; returns the stage's result
    train_loader: Any = None  # None: the run's own training data
    classes: list | None = None

    @property
    def name(self) -> str:
        return self.plan.name


class ExperimentRun:
    """State of one run; :func:`run_experiment` and :func:`plan_experiment` are the public ways to use it."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path | None, bus: EventBus | None = None,
                 control: RunControl | None = None, resumed: bool = False):
        self.cfg = cfg
        self.run_dir = run_dir
        self.bus = bus or EventBus()
        self.control = control or RunControl()
        self.resumed = resumed
        self.stage = "setup"
        self.stages: list[Stage] = []
        self.previous_seconds = 0.0
        self.t_session = time.perf_counter()
        self.summary: dict[str, Any] = {
            "name": cfg.name,
            "status": "running",
            "run_dir": str(run_dir),
            "started": now_iso(),
            "mode": cfg.granularity.mode,
            "distiller": cfg.distiller.name,
            "seed": cfg.seed,
            "teacher": {"arch": cfg.teacher.arch},
            "heads": [],
            "student": {"arch": cfg.student.arch},
            "stages": {},
        }

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    def save_summary(self) -> None:
        self.summary["total_seconds"] = round(self.previous_seconds + time.perf_counter() - self.t_session, 3)
        write_summary(self.run_dir, self.summary)

    def seed(self, role: str, index: int = 0) -> int:
        return self.cfg.seed + SEED_OFFSETS[role] + index

    # =========================================================================== planning
    def prepare(self) -> Plan:
        """Check every input and declare the stages, before anything is trained; returns the plan."""
        import torch

        cfg = self.cfg
        if self.run_dir is not None:
            check_writable_dir(self.run_dir, "run folder (--out)")
        out = export_dir(cfg, self.run_dir)
        if cfg.export.enabled and cfg.export.formats and out is not None:
            with blame("export.dir"):
                check_writable_dir(out, "export.dir")
        with blame("device"):
            self.device, self.device_text = select_device(cfg.device)
        with blame("speed.amp"):
            self.precision, self.channels_last = speed_settings(cfg.speed, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        self.summary["device"] = self.device_text
        self.summary["speed"] = {"precision": self.precision, "channels_last": self.channels_last,
                                 "compile": cfg.speed.compile}

        d = cfg.data
        with blame("data.root" if d.root else "data.dataset"):
            self.bundle = b = load_data(d)
        self.num_classes = b.num_classes
        self.classes = list(b.classes)
        self.input_shape = (b.in_channels, *b.image_size)
        self.transfer_bundle = None
        if cfg.transfer.enabled:  # the second data set is checked now, not after hours of training
            with blame("transfer.data.root"):
                self.transfer_bundle = load_data(cfg.transfer.data)
            if self.transfer_bundle.in_channels != b.in_channels:
                raise InputError(f"transfer.data: {self.transfer_bundle.name} has {self.transfer_bundle.in_channels} "
                                 f"channel(s) but the student is trained on {b.in_channels}; choose a data set "
                                 "with the same number of channels")
        self.train_loader, self.test_loader = self.loaders(d, b)
        self.summary["data"] = {"dataset": b.name, "classes": len(self.classes), "train_size": len(b.train_labels),
                                "test_size": len(b.test_labels), "input_shape": list(self.input_shape),
                                "streamed": bool(getattr(b, "streamed", False))}

        self.models: dict[str, dict] = {}
        self.teacher = self.teacher_heads = self.student = self.student_heads = self.distiller = None
        self.peers: list = []
        if cfg.online.enabled:
            self._declare_online()
        else:
            self._declare_offline()
        self._declare_evaluation()
        if cfg.export.enabled and cfg.export.formats:
            self._declare_export(out)
        if cfg.transfer.enabled:
            self._declare_transfer()
        if self.run_dir is not None:
            for stage in self.stages:
                stage.plan.done = bool(stage.plan.checkpoint) and (self.run_dir / stage.plan.checkpoint).is_file()

        heads = [{"dim": h.dim, "temperature": h.temperature} for h in cfg.granularity.heads] \
            if cfg.granularity.mode != "off" else []
        distiller = {"name": cfg.distiller.name, "mode": cfg.granularity.mode, "temperature": cfg.distiller.temperature,
                     "weights": {"w_ce": cfg.distiller.w_ce, "w_div": cfg.distiller.w_div, "w_kd": cfg.distiller.w_kd},
                     "options": dict(self.distiller.options) if self.distiller is not None else {},
                     "heads": heads}
        if cfg.online.enabled:
            distiller = {"name": "online (mutual learning)", "mode": cfg.granularity.mode, "temperature": 1.0,
                         "weights": {}, "options": {}, "heads": heads}
        self.plan = Plan(
            name=cfg.name, run_dir=str(self.run_dir) if self.run_dir else None, device=self.device_text,
            precision=self.precision, channels_last=self.channels_last,
            data={**self.summary["data"], "batch_size": d.batch_size, "eval_batch_size": d.eval_batch_size},
            models=self.models, distiller=distiller, stages=[s.plan for s in self.stages],
            export={"enabled": bool(cfg.export.enabled and cfg.export.formats), "formats": list(cfg.export.formats),
                    "dir": str(out) if out is not None else "export/ in the run folder"},
        )
        return self.plan

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

    def build(self, arch: str, role: str, index: int = 0):
        """A model of the zoo, initialised from the seed of its role, on the run's device."""
        import torch

        from engine.models import build_model

        torch.manual_seed(self.seed(role, index))
        model = build_model(arch, self.num_classes, self.input_shape[0]).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.cfg.speed.compile:
            # compiles on first call; the module keeps its state-dict names (checkpoints stay plain)
            model.compile()
        self.models[role if not index else f"{role}{index + 1}"] = {
            "arch": arch, "params": count_parameters(model), "feature_dim": int(model.feature_dim)}
        return model

    def build_heads(self, feature_dim: int, role: str):
        import torch

        from engine.mgd import GranularityHeads

        torch.manual_seed(self.seed(role))
        return GranularityHeads(feature_dim, self.num_classes, self.cfg.granularity.heads).to(self.device)

    @staticmethod
    def schedule(sched, **override) -> dict:
        out = {"lr": sched.lr, "momentum": sched.momentum, "weight_decay": sched.weight_decay,
               "milestones": list(sched.milestones), "gamma": sched.gamma, "epochs": sched.epochs}
        out.update(override)
        return out

    def training_plan(self, name: str, schedule: dict, seed: int, trains: list[str], frozen: list[str],
                      steps: int | None = None, note: str = "") -> StagePlan:
        steps = len(self.train_loader) if steps is None else steps
        return StagePlan(name=name, action="train", units=schedule["epochs"] * steps, epochs=schedule["epochs"],
                         steps_per_epoch=steps, trains=trains, frozen=frozen, seed=seed,
                         checkpoint=f"{CHECKPOINT_DIR}/{name}.pt", schedule=schedule, note=note)

    # -- teacher, heads, pre-training, student ------------------------------------
    def _declare_offline(self) -> None:
        from engine.distillers import distiller_class
        from engine.stages import HeadsTask, TeacherTask

        cfg = self.cfg
        mode = cfg.granularity.mode
        cls = distiller_class(cfg.distiller.name)
        if cls.uses_teacher or mode != "off":
            self.teacher = self.build(cfg.teacher.arch, "teacher")
            if cfg.teacher.checkpoint:  # refuse a checkpoint of another architecture before any training
                from engine.models.checkpoint import load_weights

                with blame("teacher.checkpoint"):
                    load_weights(self.teacher, str(Path(cfg.teacher.checkpoint).expanduser()), cfg.teacher.arch)
                plan = StagePlan(name="teacher", action="load", units=len(self.test_loader), frozen=["teacher"],
                                 note=f"from {cfg.teacher.checkpoint}")
                self.stages.append(Stage(plan, work=self._load_teacher, report=self._report_teacher))
            else:
                task = TeacherTask(self.teacher, self.test_loader, self.num_classes)
                plan = self.training_plan("teacher", self.schedule(cfg.teacher.schedule), self.seed("teacher"),
                                          ["teacher"], [])
                self.stages.append(Stage(plan, task=task, report=self._report_teacher))
        else:
            self.summary["teacher"] = {"arch": None, "source": "none (student trained alone)"}

        if mode != "off":
            self.teacher_heads = self.build_heads(self.teacher.feature_dim, "teacher_heads")
            self.models["teacher_heads"] = {"arch": f"{len(self.teacher_heads)} granularity heads",
                                            "params": count_parameters(self.teacher_heads),
                                            "feature_dim": int(self.teacher.feature_dim)}
            task = HeadsTask(self.teacher, self.teacher_heads, self.test_loader, self.num_classes)
            plan = self.training_plan("heads", self.schedule(cfg.granularity.schedule), self.seed("teacher_heads"),
                                      ["teacher_heads"], ["teacher"])
            self.stages.append(Stage(plan, task=task, report=self._report_heads))
        self._declare_student(cls)

    def _declare_student(self, cls) -> None:
        import torch

        from engine.distillers.base import DistillerContext
        from engine.stages import PretrainTask, StudentTask

        cfg = self.cfg
        mode = cfg.granularity.mode
        self.student = self.build(cfg.student.arch, "student")
        if mode != "off":
            self.student_heads = self.build_heads(self.student.feature_dim, "student_heads")
        with torch.no_grad():  # the feature shapes a baseline builds its own modules for
            probe = next(iter(self.test_loader.epoch(0)))[0][:2]
            self.student.eval()
            s_feats = self.student(probe, preact=cls.needs_preact)[1]
            t_feats = []
            if self.teacher is not None:
                self.teacher.eval()
                t_feats = self.teacher(probe, preact=cls.needs_preact)[1]
        context = DistillerContext(
            student_shapes=[tuple(f.shape[1:]) for f in s_feats], teacher_shapes=[tuple(f.shape[1:]) for f in t_feats],
            num_classes=self.num_classes, train_size=len(self.bundle.train_labels), student_arch=cfg.student.arch,
            teacher_arch=cfg.teacher.arch, options=cfg.distiller.options)
        torch.manual_seed(self.seed("distiller"))
        with blame("distiller.options"):
            self.distiller = cls(context).to(self.device)
        if count_parameters(self.distiller):
            self.models["distiller"] = {"arch": f"{cfg.distiller.name} modules",
                                        "params": count_parameters(self.distiller), "feature_dim": 0}
        uses_teacher = self.teacher is not None
        sched = self.schedule(cfg.student.schedule)
        if self.distiller.pretrain_epochs() > 0:
            task = PretrainTask(student=self.student, teacher=self.teacher, distiller=self.distiller,
                                test_loader=self.test_loader, num_classes=self.num_classes)
            pre = self.schedule(cfg.student.schedule, epochs=self.distiller.pretrain_epochs(), milestones=[],
                                lr=self.distiller.pretrain_lr(sched["lr"]))
            plan = self.training_plan("pretrain", pre, self.seed("pretrain"),
                                      [f"{cfg.distiller.name} pre-training parameters"], ["teacher"],
                                      note=f"{cfg.distiller.name}'s own pre-training")
            self.stages.append(Stage(plan, task=task))
        d = cfg.distiller
        task = StudentTask(student=self.student, teacher=self.teacher, distiller=self.distiller, mode=mode,
                           teacher_heads=self.teacher_heads, student_heads=self.student_heads,
                           weights=(d.w_ce, d.w_div, d.w_kd), temperature=d.temperature,
                           test_loader=self.test_loader, num_classes=self.num_classes)
        trains = ["student"] + (["student_heads (encoders)"] if mode != "off" else []) + \
            (["distiller"] if count_parameters(self.distiller) else [])
        frozen = (["teacher"] if uses_teacher else []) + (["teacher_heads"] if mode != "off" else [])
        plan = self.training_plan("student", sched, self.seed("student"), trains, frozen)
        self.stages.append(Stage(plan, task=task, report=self._report_student))

    def _declare_online(self) -> None:
        from engine.stages import OnlineTask

        cfg = self.cfg
        self.peers = [self.build(arch, "peer", i) for i, arch in enumerate(cfg.online.peers)]
        heads = None
        if cfg.granularity.mode != "off":
            import torch

            from engine.mgd import GranularityHeads

            torch.manual_seed(self.seed("student_heads"))
            heads = [GranularityHeads(p.feature_dim, self.num_classes, cfg.granularity.heads).to(self.device)
                     for p in self.peers]
        task = OnlineTask(peers=self.peers, heads=heads, test_loader=self.test_loader, num_classes=self.num_classes)
        trains = [f"peer{i + 1}" for i in range(len(self.peers))] + (["peer heads (encoders)"] if heads else [])
        plan = self.training_plan("online", self.schedule(cfg.student.schedule), self.seed("peer"), trains, [])
        self.stages.append(Stage(plan, task=task, report=self._report_online))
        self.summary["teacher"] = {"arch": None, "source": "none (online MGD)"}

    # -- evaluation, export, transfer -----------------------------------------------
    def _declare_evaluation(self) -> None:
        from engine.evaluate import report_passes

        per_model = report_passes(self.test_loader, self.cfg.evaluation.noise_levels)
        models = (["teacher"] if self.teacher is not None else []) + ["student"]
        plan = StagePlan(name="evaluate", action="evaluate", units=per_model * len(models), frozen=models,
                         seed=self.cfg.evaluation.noise_seed,
                         note="accuracy, confusion, noise robustness, output noise, calibration, CPU latency")
        self.stages.append(Stage(plan, work=self._evaluate))

    def _declare_export(self, out: Path | None) -> None:
        plan = StagePlan(name="export", action="export", units=len(self.cfg.export.formats) + 1, frozen=["student"],
                         note=f"to {out if out is not None else 'export/ in the run folder'}")
        self.stages.append(Stage(plan, work=lambda: self._export(out)))

    def _declare_transfer(self) -> None:
        from torch import nn

        from engine.stages import TransferTask

        t = self.cfg.transfer
        bundle = self.transfer_bundle
        train_loader, test_loader = self.loaders(t.data, bundle)
        model = copy.deepcopy(self.student)  # gets the student's best weights before the stage runs
        import torch

        torch.manual_seed(self.seed("transfer"))
        model.replace_classifier(nn.Linear(model.feature_dim, bundle.num_classes).to(self.device))
        task = TransferTask(model, test_loader, bundle.num_classes, adapt_batchnorm=t.adapt_batchnorm)
        self.transfer_model = model
        plan = self.training_plan("transfer", self.schedule(t.schedule), self.seed("transfer"),
                                  ["new linear classifier"], ["student backbone"], steps=len(train_loader),
                                  note=f"linear probe on {bundle.name}")
        self.stages.append(Stage(plan, task=task, report=self._report_transfer, train_loader=train_loader,
                                 classes=list(bundle.classes)))

    # =========================================================================== running
    def execute(self) -> dict:
        """Run every declared stage in order (``prepare`` first)."""
        for stage in self.stages:
            self.stage = stage.name
            t0 = time.perf_counter()
            if stage.task is not None:
                history, seconds = self.resume_or_train(stage)
            else:
                history, seconds = [], 0.0
                self.bus.emit(StageStarted(stage.name, 1, stage.plan.units))
                stage.work()
            result = stage.report(history)
            self.finish_stage(stage.name, seconds + time.perf_counter() - t0, result)
            self.check_stop()
        self.summary["status"] = "finished"
        self.summary["finished"] = now_iso()
        self.save_summary()
        return self.summary

    def resume_or_train(self, stage: Stage) -> tuple[list[dict], float]:
        """The one loop body of every training stage: load its final checkpoint if it has one,
        else train it (resuming from its per-epoch checkpoint) and write the final checkpoint.
        Returns the epoch history and the stage's training seconds in earlier sessions."""
        from engine.trainer import Trainer, stage_state

        task, plan = stage.task, stage.plan
        final = checkpoint_path(self.run_dir, stage.name)
        if final.exists():
            state = load_checkpoint(final)
            if not isinstance(state, dict) or state.get("stage") != stage.name:
                raise CheckpointError(f"{final}: not a final checkpoint of the {stage.name} stage")
            try:
                task.load_state_dict(state)
            except (KeyError, TypeError, RuntimeError) as exc:
                raise CheckpointError(f"{final}: does not fit this run's {stage.name} stage ({exc})") from None
            self.bus.log(f"{stage.name}: already done in this run, loaded its weights")
            return list(state.get("history", [])), float(state.get("seconds", 0.0))
        sched = plan.schedule
        trainer = Trainer(bus=self.bus, control=self.control, checkpoint_dir=self.ckpt_dir,
                          train_loader=stage.train_loader or self.train_loader, classes=stage.classes or self.classes,
                          precision=self.precision, channels_last=self.channels_last)
        history = trainer.fit(task, epochs=sched["epochs"], lr=sched["lr"], momentum=sched["momentum"],
                              weight_decay=sched["weight_decay"], milestones=sched["milestones"],
                              gamma=sched["gamma"], seed=plan.seed or 0)
        task.finish()
        save_checkpoint(stage_state(task, history, trainer.seconds), final)
        last_checkpoint_path(self.run_dir, stage.name).unlink(missing_ok=True)
        return history, trainer.seconds_before  # this session's time is counted by the loop

    def finish_stage(self, name: str, seconds: float, result: dict) -> None:
        self.summary["stages"][name] = {"seconds": round(seconds, 3), **peak_memory(self.device)}
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        self.save_summary()
        self.bus.emit(StageFinished(name, seconds, result))

    def check_stop(self) -> None:
        if self.control.stop_requested:
            raise StopRequested(f"stopped after the {self.stage} stage")

    def progress(self, stage: str, total: int) -> Callable[[int], None]:
        """A callback that emits StageProgress about 50 times over ``total`` units."""
        every = max(1, total // 50)

        def report(done: int) -> None:
            if done % every == 0 or done == total:
                self.bus.emit(StageProgress(stage, done, total))
        return report

    # -- what each stage reports ------------------------------------------------------
    def freeze(self, *modules) -> None:
        for m in modules:
            if m is not None:
                m.eval()
                for p in m.parameters():
                    p.requires_grad_(False)

    def _load_teacher(self) -> None:
        from engine.evaluate import evaluate_model

        self.teacher.eval()
        total = len(self.test_loader)
        tick = self.progress("teacher", total)
        done = 0

        def forward(x):
            nonlocal done
            out = self.teacher(x)[0]
            done += 1
            tick(done)
            return out
        self.teacher_acc, _ = evaluate_model(forward, self.test_loader, self.num_classes)
        self.bus.log(f"teacher: loaded {self.cfg.teacher.arch} from {self.cfg.teacher.checkpoint}")

    def _report_teacher(self, history: list[dict]) -> dict:
        self.freeze(self.teacher)
        if self.cfg.teacher.checkpoint:
            source, acc, best = f"checkpoint {self.cfg.teacher.checkpoint}", self.teacher_acc, {}
        else:
            source, acc = "trained", history[-1]["test_acc"] if history else None
            tracker = self.stages[0].task.tracker
            best = {"best_acc": tracker.best_metric("model"), "best_epoch": tracker.epoch["model"]}
        self.summary["teacher"] = {"arch": self.cfg.teacher.arch, "params": count_parameters(self.teacher),
                                   "source": source, "test_acc": acc, **best}
        return {"test_acc": acc}

    def _report_heads(self, history: list[dict]) -> dict:
        task = next(s.task for s in self.stages if s.name == "heads")
        self.freeze(self.teacher_heads)
        results = [{"dim": h.dim, "temperature": h.temperature, "test_acc": acc, "epoch": ep}
                   for h, acc, ep in zip(self.teacher_heads.heads, task.best_acc, task.best_epoch)]
        self.summary["heads"] = results
        self.bus.emit(HeadAccuracies(results, self.summary["teacher"]["test_acc"]))
        return {"heads": results}

    def _report_student(self, history: list[dict]) -> dict:
        tracker = next(s.task for s in self.stages if s.name == "student").tracker
        final_acc = history[-1]["test_acc"] if history else None
        self.summary["student"] = {"arch": self.cfg.student.arch, "params": count_parameters(self.student),
                                   "test_acc": final_acc, "best_acc": tracker.best_metric("student"),
                                   "best_epoch": tracker.epoch["student"]}
        self.student.load_state_dict(tracker.best_state("student"))  # evaluate and export the best epoch
        self.transfer_ready()
        return {"test_acc": final_acc, "best_acc": tracker.best_metric("student")}

    def _report_online(self, history: list[dict]) -> dict:
        tracker = next(s.task for s in self.stages if s.name == "online").tracker
        keys = list(tracker.modules)
        last = history[-1]["metrics"] if history else {}
        peers = [{"arch": a, "test_acc": last.get(k), "best_acc": tracker.best_metric(k), "best_epoch": tracker.epoch[k]}
                 for a, k in zip(self.cfg.online.peers, keys)]
        best = keys.index(tracker.best_key())
        self.summary["peers"] = peers
        self.student = self.peers[best]
        self.student.load_state_dict(tracker.best_state(keys[best]))
        self.transfer_ready()
        self.summary["student"] = {"arch": self.cfg.online.peers[best], "peer": best + 1,
                                   "params": count_parameters(self.student), "test_acc": peers[best]["test_acc"],
                                   "best_acc": peers[best]["best_acc"], "best_epoch": peers[best]["best_epoch"]}
        return {"peers": peers}

    def _evaluate(self) -> None:
        from engine.evaluate import cpu_latency_ms, evaluation_report

        ev = self.cfg.evaluation
        plan = next(s.plan for s in self.stages if s.name == "evaluate")
        tick = self.progress("evaluate", plan.units)
        models = ([("teacher", self.teacher)] if self.teacher is not None else []) + [("student", self.student)]
        offset = 0
        for role, model in models:
            model.eval()
            base = offset
            report = evaluation_report(lambda x, m=model: m(x)[0], self.test_loader, self.num_classes,
                                       ev.noise_levels, ev.noise_seed, progress=lambda n, b=base: tick(b + n))
            offset += plan.units // len(models)
            epoch = self.summary[role].get("best_epoch") or 0
            self.bus.emit(Evaluation("evaluate", role, epoch, report["test_acc"], self.classes, report["confusion"]))
            curve = report["noise_curve"]
            self.bus.emit(NoiseCurve(role, [c[0] for c in curve], [c[1] for c in curve],
                                     output_noise=report["output_noise"]))
            entry = self.summary[role]
            entry.update({"noise_curve": curve, "output_noise": report["output_noise"], "ece": report["ece"]})
            if role == "student":
                entry["best_acc"] = report["test_acc"]  # the evaluated (best) weights, measured again
        self.summary["student"]["cpu_latency_ms"] = cpu_latency_ms(self.student, self.input_shape)

    def _export(self, out: Path) -> None:
        from engine.export import export_model

        cfg = self.cfg
        s = self.summary
        card = {
            "teacher": {"arch": s["teacher"].get("arch"), "test_acc": s["teacher"].get("test_acc")},
            "accuracy": {"test_acc": s["student"]["best_acc"], "final_test_acc": s["student"]["test_acc"],
                         "best_epoch": s["student"]["best_epoch"]},
            "noise_curve": s["student"].get("noise_curve"),
            "mgd": {"mode": cfg.granularity.mode, "distiller": cfg.distiller.name,
                    "heads": [{"dim": h.dim, "temperature": h.temperature} for h in cfg.granularity.heads]},
            "config": to_dict(cfg),
        }
        tick = self.progress("export", len(cfg.export.formats) + 1)
        files = export_model(self.student, out, arch=s["student"]["arch"], input_shape=self.input_shape,
                             classes=self.classes, mean=self.bundle.mean, std=self.bundle.std,
                             formats=cfg.export.formats, card_extra=card, progress=lambda done, total: tick(done))
        s["export"] = {k: str(v) for k, v in files.items()}
        s["export"]["bytes"] = {k: Path(v).stat().st_size for k, v in files.items()}
        self.bus.emit(Exported({k: str(v) for k, v in files.items()}))

    def _report_transfer(self, history: list[dict]) -> dict:
        task = next(s.task for s in self.stages if s.name == "transfer")
        bundle = self.transfer_bundle
        self.summary["transfer"] = {"dataset": bundle.name, "classes": bundle.num_classes,
                                    "best_acc": task.tracker.best_metric("model"),
                                    "best_epoch": task.tracker.epoch["model"],
                                    "adapt_batchnorm": self.cfg.transfer.adapt_batchnorm}
        return dict(self.summary["transfer"])

    def transfer_ready(self) -> None:
        """The transfer copy starts from the student's best weights, known only after the student stage."""
        if getattr(self, "transfer_model", None) is not None:
            state = {k: v for k, v in self.student.state_dict().items()
                     if not k.startswith(self.student.classifier_name + ".")}
            self.transfer_model.load_state_dict(state, strict=False)


def _oom_error(exc: BaseException) -> TrainingError | None:
    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return TrainingError(f"out of memory on the device ({text.splitlines()[0][:200]}); "
                             "lower data.batch_size or use a smaller model", kind="oom")
    return None


def _resolved(config: ExperimentConfig) -> ExperimentConfig:
    validate(config)
    cfg = resolve(config)
    validate(cfg)
    return cfg


def prepare_run(config: ExperimentConfig | None, run_dir: str | Path | None, runs_root: str | Path,
                resume: bool) -> tuple[ExperimentConfig, Path]:
    """Validate and resolve a run's config and choose its folder (nothing is created)."""
    if resume:
        if run_dir is None:
            raise InputError("resume needs the run folder")
        run_dir = Path(run_dir)
        if not (run_dir / CONFIG_FILE).is_file():
            raise InputError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")
        return _resolved(load_config(run_dir / CONFIG_FILE)), run_dir
    if config is None:
        raise InputError("no experiment config given")
    cfg = _resolved(config)
    path = Path(run_dir).expanduser() if run_dir else default_run_dir(cfg, runs_root)
    if path.exists() and not path.is_dir():
        raise InputError(f"run folder (--out): {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise InputError(f"{path}: the run folder exists and is not empty; choose another or resume it")
    check_writable_dir(path, "run folder (--out)")
    return cfg, path


def plan_experiment(config: ExperimentConfig, run_dir: str | Path | None = None) -> Plan:
    """Check a config and return what a run of it would do, without training or writing anything.

    Raises :class:`InputError` (a ConfigError naming the field where there is one) for the first
    problem found: the same checks a run makes before its first step.
    """
    cfg = _resolved(config)
    run = ExperimentRun(cfg, Path(run_dir) if run_dir else None)
    return run.prepare()


def run_experiment(config: ExperimentConfig | None = None, *, run_dir: str | Path | None = None,
                   runs_root: str | Path = "runs", subscribers: Iterable[Subscriber] = (),
                   control: RunControl | None = None, resume: bool = False) -> dict:
    """Run (or resume) an experiment and return its summary.

    Raises :class:`InputError` for bad input (before any training when it can be known then),
    :class:`TrainingError` (or another :class:`MGDError`, such as an export failure) for a
    failure during the run, and returns normally with ``summary["status"] == "stopped"`` when
    ``control.stop()`` ended the run early. Every outcome after the plan is also announced as
    an event (RunFinished or RunFailed). A run refused before it began leaves no folder behind.
    """
    bus = EventBus(list(subscribers))
    control = control or RunControl()
    cfg, path = prepare_run(config, run_dir, runs_root, resume)
    created = not path.exists()
    lock = RunLock(path)
    try:
        lock.acquire()
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"run folder (--out): cannot create {path}: {exc.strerror or exc}") from None
    writer = None
    run = ExperimentRun(cfg, path, bus, control, resumed=resume)
    try:
        removed = remove_orphans(path)
        if resume:
            old = read_summary(path)
            run.previous_seconds = float(old.get("total_seconds") or 0.0)
            run.summary["started"] = old.get("started") or run.summary["started"]
        try:
            plan = run.prepare()
        except BaseException:
            if created:
                lock.release()
                shutil.rmtree(path, ignore_errors=True)  # refused before it began: leave nothing behind
            raise
        if not resume:
            save_config(cfg, path / CONFIG_FILE)
        writer = MetricsWriter(path)
        bus.subscribe(writer)
        # the summary's wall time stays current to the epoch, so a killed run's resume accounts for it
        bus.subscribe(lambda event: run.save_summary() if event.type == "EpochEnd" else None)
        bus.emit(PlanReady(plan.to_dict()))
        bus.emit(RunStarted(str(path), to_dict(cfg), run.device_text, resumed=resume))
        b = run.bundle
        bus.emit(DatasetInfo(b.name, run.classes, len(b.train_labels), len(b.test_labels), list(run.input_shape)))
        if removed:
            bus.log(f"removed {len(removed)} temporary file(s) left by an interrupted writer")
        if run.summary["data"]["streamed"]:
            bus.log(f"data: {b.name} is too large for memory (or in_memory: off): streaming it from disk "
                    f"with {cfg.data.workers} worker(s)")
        run.summary["plan"] = [{"stage": s.name, "action": s.action, "epochs": s.epochs, "done": s.done}
                               for s in plan.stages]
        run.ckpt_dir.mkdir(parents=True, exist_ok=True)
        run.save_summary()
        return _execute(run, bus, path)
    finally:
        if writer is not None:
            writer.close()
        lock.release()


def _execute(run: ExperimentRun, bus: EventBus, path: Path) -> dict:
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
        elif run.stage == "export":
            kind = "export"
        else:
            kind = "error"
        message = str(error) if isinstance(error, MGDError) else f"{type(error).__name__}: {error}"
        if run.stage == "export":
            message += f" (the trained student is kept; mgd-train --resume {path} exports again)"
        run.summary["status"] = "failed"
        run.summary["failed_in"] = run.stage
        run.summary["error"] = message
        details = traceback.format_exc()
        try:
            run.save_summary()
            atomic_write(path / ERROR_FILE, details)
        except OSError:
            pass  # a full disk: the event below still reports the failure
        finally:
            bus.emit(RunFailed(str(path), run.stage, message, kind, details))
        if error is not exc:
            raise error from exc
        raise
