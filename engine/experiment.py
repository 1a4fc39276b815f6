"""One experiment run: its plan, its stages (teacher -> self-analysis -> student ->
evaluation -> export), its run folder, its clock and how it ended.

Before anything is trained, :meth:`ExperimentRun.prepare` checks everything it can and
declares the stages (:class:`Stage`); the plan is the run's first event (``PlanReady``) and
:func:`plan_experiment` returns it without training (``mgd-train --plan``). A training stage
loads its final checkpoint if it has one, or trains (resuming from its per-epoch checkpoint)
and writes it. :class:`OpenRun` is a run folder opened for writing. The driver
(:mod:`engine.driver`) sequences the stages of one run or of several training together;
:mod:`engine.run` is the public entry point. The run folder's layout belongs to
:mod:`engine.runfolder`; the device, data and speed helpers to :mod:`engine.runtime`.
"""

from __future__ import annotations

import copy
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from engine.config import ExperimentConfig, load_config, resolve, save_config, to_dict, validate
from engine.control import RunControl
from engine.errors import CheckpointError, ConfigError, InputError, MGDError, StopRequested, TrainingError
from engine.events import (DatasetInfo, EventBus, Evaluation, Exported, HeadAccuracies, NoiseCurve, PlanReady,
                           RunFailed, RunFinished, RunStarted, StageFinished, StageProgress, StageStarted, Subscriber)
from engine.launch import note_failure
from engine.models import freeze
from engine.plan import Plan, StagePlan
from engine.progress import Stopwatch, timing
from engine.runfolder import (CHECKPOINT_DIR, CONFIG_FILE, EXPORT_DIR, MetricsWriter, RunLock, as_run_error,
                              check_writable_dir, checkpoint_path, last_checkpoint_path, load_checkpoint,
                              now_iso, read_summary, record_failure, remove_orphans, save_checkpoint,
                              write_summary)
from engine.runtime import (augmentation, count_parameters, default_run_dir, load_data, peak_memory, select_device,
                            speed_settings)
from engine.verify import check_heads_state, check_stage_state

#: Seed offsets. Every module's initialisation and every stage's random draws depend on the
#: experiment's seed and their role alone, so skipping or adding a stage (a loaded teacher,
#: MGD off) changes nothing else. The numbers are arbitrary but fixed: changing one changes
#: the results of that role for every existing config.
SEED_OFFSETS = {"teacher": 0, "teacher_heads": 1, "student": 2, "student_heads": 3, "distiller": 4,
                "transfer": 5, "pretrain": 6, "peer": 10}

__all__ = ["ExperimentRun", "OpenRun", "Stage", "plan_experiment", "prepare_run", "RunControl", "SEED_OFFSETS"]


@contextmanager
def blame(field: str):
    """Attribute an InputError raised inside to ``field`` (unless it names one), so the studio
    can mark the field at fault."""
    try:
        yield
    except InputError as exc:
        raise exc.at(field)


@dataclass
class Stage:
    """One stage, declared once: its plan entry (what it trains and freezes, its seed, its
    checkpoint), the task the training loop runs (training stages) or the work it does
    (others), and what it reports when it is done."""

    plan: StagePlan
    task: Any = None  # a StageTask for training stages
    work: Callable[[], None] | None = None  # the work of a stage that does not train
    report: Callable[["Stage", list], dict] = lambda stage, history: {}  # summary bookkeeping -> result
    train_loader: Any = None  # None: the run's own training data
    classes: list | None = None

    @property
    def name(self) -> str:
        return self.plan.name


class ExperimentRun:
    """State of one run; :func:`run_experiment` and :func:`plan_experiment` are the public ways to use it."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path | None, bus: EventBus | None = None,
                 control: RunControl | None = None, processes: int | None = None, strategy=None):
        from engine.strategy import current_strategy

        self.cfg = cfg
        self.strategy = strategy or current_strategy()  # one process, or one of several (torchrun)
        self.processes = processes  # planning a run of several processes from outside them (None: as launched)
        self.run_dir = run_dir
        self.clock = Stopwatch()  # this run's own work, over its sessions (waiting for other runs left out)
        self.bus = bus or EventBus()
        self.bus.clock = lambda: self.clock.seconds
        self.control = control or RunControl()
        self.stage = "setup"
        self.stages: list[Stage] = []
        self.models: dict[str, dict] = {}
        self.teacher = self.teacher_heads = self.student = self.student_heads = self.distiller = None
        self.transfer_model = None
        self.notes: list[str] = []  # what the engine adapted while planning (logged when the run starts)
        self.summary: dict[str, Any] = {
            "name": cfg.name, "status": "running", "run_dir": str(run_dir), "started": now_iso(),
            "mode": cfg.granularity.mode, "distiller": cfg.distiller.name, "seed": cfg.seed,
            "teacher": {"arch": cfg.teacher.arch}, "heads": [], "student": {"arch": cfg.student.arch}, "stages": {},
            # the configured pair (a comparison's row), even when the student is trained alone
            "pair": {"teacher": None if cfg.online.enabled else cfg.teacher.arch, "student": cfg.student.arch},
        }

    @property
    def previous_seconds(self) -> float:
        """The run's seconds in its earlier sessions (resume)."""
        return self.clock.before

    @previous_seconds.setter
    def previous_seconds(self, value: float) -> None:
        self.clock.before = float(value)

    def save_summary(self) -> None:
        self.summary["total_seconds"] = round(self.clock.seconds, 3)
        write_summary(self.run_dir, self.summary)

    def seed(self, role: str, index: int = 0) -> int:
        return self.cfg.seed + SEED_OFFSETS[role] + index

    # =========================================================================== planning
    def prepare(self) -> Plan:
        """Check every input and declare the stages, before anything is trained; returns the plan."""
        import torch

        cfg, d = self.cfg, self.cfg.data
        writes = self.strategy.is_writer  # several processes: the first alone writes, so it alone probes
        if self.run_dir is not None and writes:
            check_writable_dir(self.run_dir, "run folder (--out)")
        out = Path(cfg.export.dir).expanduser() if cfg.export.dir else \
            (self.run_dir / EXPORT_DIR if self.run_dir is not None else None)
        exporting = bool(cfg.export.enabled and cfg.export.formats)
        with blame("export.dir"):
            if exporting and out is not None and writes:
                check_writable_dir(out, "export.dir")
        with blame("device"):
            self.device, self.device_text = select_device(cfg.device)
        processes = self.processes or self.strategy.processes
        if processes > 1 and self.device.type == "cuda" and processes > torch.cuda.device_count():
            raise ConfigError("device", f"{processes} processes need {processes} GPUs, one each; this machine has "
                              f"{torch.cuda.device_count()}")
        if processes > 1:  # several processes (torchrun): one GPU each, or CPU processes
            self.device = self.strategy.place(self.device)
            self.device_text += f"; {processes} processes, {cfg.data.batch_size // processes} images of each batch each"
            if cfg.data.batch_size % processes:
                raise ConfigError("data.batch_size", f"{cfg.data.batch_size} does not split into {processes} "
                                  "equal parts, one per process; choose a multiple of the process count")
            if cfg.distiller.name == "crd" and not cfg.online.enabled:
                raise ConfigError("distiller.name", "crd keeps a memory bank of every training sample that each "
                                  "process would update with its own shard only; run CRD in one process")
        if cfg.speed.sync_batchnorm and (processes <= 1 or self.device.type != "cuda"):
            raise ConfigError("speed.sync_batchnorm", "synchronised batch norm needs several GPU processes "
                              "(mgd-train --nproc N on a machine with N GPUs)")
        with blame("speed.amp"):
            self.precision, self.channels_last = speed_settings(cfg.speed, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        self.summary["device"] = self.device_text
        self.summary["speed"] = {"precision": self.precision, "channels_last": self.channels_last,
                                 "compile": cfg.speed.compile}
        with blame("data.root" if d.root else "data.dataset"):
            self.bundle = b = load_data(d)
        self.num_classes, self.classes = b.num_classes, list(b.classes)
        self.input_shape = (b.in_channels, *b.image_size)
        self.train_loader, self.test_loader = self.loaders(d, b)
        self.summary["data"] = {"dataset": b.name, "classes": len(self.classes), "train_size": len(b.train_labels),
                                "test_size": len(b.test_labels), "input_shape": list(self.input_shape),
                                "streamed": bool(getattr(b, "streamed", False))}
        if cfg.transfer.enabled:  # the second data set is checked now, not after hours of training
            with blame("transfer.data.root"):
                self.transfer_bundle = load_data(cfg.transfer.data)
                if self.transfer_bundle.in_channels != b.in_channels:
                    raise InputError(f"transfer.data: {self.transfer_bundle.name} has "
                                     f"{self.transfer_bundle.in_channels} channel(s) but the student is trained on "
                                     f"{b.in_channels}; choose a data set with the same number of channels")

        self._declare_online() if cfg.online.enabled else self._declare_offline()
        self._declare_evaluation()
        if exporting:
            where = out if out is not None else "export/ in the run folder"
            self.stages.append(Stage(StagePlan("export", "export", units=len(cfg.export.formats) + 1,
                                               frozen=["student"], note=f"to {where}"),
                                     work=lambda: self._export(out)))
        if cfg.transfer.enabled:
            self._declare_transfer()
        for stage in self.stages:
            stage.plan.done = bool(self.run_dir and stage.plan.checkpoint
                                   and (self.run_dir / stage.plan.checkpoint).is_file())
        if self.run_dir is not None:  # a resumed run: what it continues from is checked before any training
            check_run_checkpoints(self.run_dir, [s.plan for s in self.stages])

        heads = [{"dim": h.dim, "temperature": h.temperature} for h in cfg.granularity.heads] \
            if cfg.granularity.mode != "off" else []
        dist = cfg.distiller
        distiller = {"name": "online (mutual learning)" if cfg.online.enabled else dist.name,
                     "mode": cfg.granularity.mode, "temperature": dist.temperature,
                     "weights": {} if cfg.online.enabled else {"w_ce": dist.w_ce, "w_div": dist.w_div,
                                                               "w_kd": dist.w_kd},
                     "options": dict(self.distiller.options) if self.distiller is not None else {}, "heads": heads}
        self.plan = Plan(name=cfg.name, run_dir=str(self.run_dir) if self.run_dir else None, device=self.device_text,
                         precision=self.precision, channels_last=self.channels_last,
                         data={**self.summary["data"], "batch_size": d.batch_size,
                               "eval_batch_size": d.eval_batch_size},
                         models=self.models, distiller=distiller, stages=[s.plan for s in self.stages],
                         export={"enabled": exporting, "formats": list(cfg.export.formats),
                                 "dir": str(out) if out is not None else "export/ in the run folder"},
                         notes=list(self.notes))
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

    def build(self, arch: str, role: str, index: int = 0, name: str | None = None, init=None):
        """A model (of the zoo or a library), initialised from the seed of its role, on the run's
        device; ``init`` (the teacher or student section) names its starting weights, and what had
        to be adapted (a classifier for other classes) is noted. The model must run on the data's
        input size."""
        import torch

        from engine.models import build_model

        torch.manual_seed(self.seed(role, index))
        with blame(f"{role}.weights" if init is not None and getattr(init, "weights", None) else f"{role}.arch"):
            model = build_model(arch, self.num_classes, self.input_shape[0],
                                pretrained=bool(getattr(init, "pretrained", False)),
                                weights=getattr(init, "weights", None)).to(self.device)
        self.notes += [f"{role}: {note}" for note in getattr(model, "init_notes", ())]
        if self.cfg.speed.sync_batchnorm:  # checked at plan time: several GPU processes
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.cfg.speed.compile:
            model.compile()  # compiles on first call; the state-dict names stay plain
        self.models[name or role] = {"arch": arch, "params": count_parameters(model),
                                     "feature_dim": int(model.feature_dim)}
        return model

    def feature_shapes(self, model, role: str, probe, preact: bool) -> list[tuple]:
        """Per-sample shapes of a model's features on the data's inputs (what a baseline builds its
        modules for); a model that cannot run on them is refused, naming the model and the size."""
        import torch

        try:
            with torch.no_grad():
                return [tuple(f.shape[1:]) for f in model.eval()(probe, preact=preact)[1]]
        except NotImplementedError as exc:  # pre-activation features of a library model (AB)
            raise ConfigError("distiller.name", str(exc)) from None
        except RuntimeError as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"{role}.arch: {getattr(self.cfg, role).arch} cannot run on the data's "
                             f"{'x'.join(map(str, self.input_shape))} inputs ({reason[:200]}); choose another model "
                             "or data.image_size").at(f"{role}.arch") from None

    def build_heads(self, feature_dim: int, role: str):
        import torch

        from engine.mgd import GranularityHeads

        torch.manual_seed(self.seed(role))
        heads = GranularityHeads(feature_dim, self.num_classes, self.cfg.granularity.heads).to(self.device)
        self.models[role] = {"arch": f"{len(heads)} granularity heads", "params": count_parameters(heads),
                             "feature_dim": feature_dim}
        return heads

    def training(self, name: str, task, sched, seed: int, trains: list[str], frozen: list[str],
                 report=None, loader=None, classes=None, note: str = "", **override) -> Stage:
        """Declare a training stage (appended to the run's stages)."""
        schedule = {"epochs": sched.epochs, "lr": sched.lr, "momentum": sched.momentum,
                    "weight_decay": sched.weight_decay, "milestones": list(sched.milestones), "gamma": sched.gamma,
                    **override}
        steps = len(loader or self.train_loader)
        plan = StagePlan(name, "train", units=schedule["epochs"] * steps, epochs=schedule["epochs"],
                         steps_per_epoch=steps, trains=trains, frozen=frozen, seed=seed,
                         checkpoint=f"{CHECKPOINT_DIR}/{name}.pt", schedule=schedule, note=note)
        stage = Stage(plan, task=task, train_loader=loader, classes=classes)
        if report is not None:
            stage.report = report
        self.stages.append(stage)
        return stage

    # -- the stages of each kind of run ------------------------------------------------
    def _declare_offline(self) -> None:
        import torch

        from engine.distillers import distiller_class
        from engine.distillers.base import DistillerContext
        from engine.stages import HeadsTask, PretrainTask, StudentTask, TeacherTask

        from engine.preflight import check_starting_weights

        cfg, mode = self.cfg, self.cfg.granularity.mode
        cls = distiller_class(cfg.distiller.name)
        uses_teacher = bool(cls.uses_teacher) or mode != "off"
        check_starting_weights(cfg, uses_teacher, log=self.notes.append)
        if uses_teacher:
            # a teacher loaded from a checkpoint needs no starting weights of its own
            self.teacher = self.build(cfg.teacher.arch, "teacher", init=None if cfg.teacher.checkpoint else cfg.teacher)
            if cfg.teacher.checkpoint:  # refuse a checkpoint of another architecture before any training
                from engine.models.checkpoint import load_weights

                with blame("teacher.checkpoint"):
                    load_weights(self.teacher, str(Path(cfg.teacher.checkpoint).expanduser()), cfg.teacher.arch)
                self.stages.append(Stage(StagePlan("teacher", "load", units=len(self.test_loader), frozen=["teacher"],
                                                   note=f"from {cfg.teacher.checkpoint}"),
                                         work=self._load_teacher, report=self._report_teacher))
            else:
                self.training("teacher", TeacherTask(self.teacher, self.test_loader, self.num_classes,
                                                     keep=cfg.teacher.keep,
                                                     backbone_lr_scale=cfg.teacher.backbone_lr_scale),
                              cfg.teacher.schedule, self.seed("teacher"), ["teacher"], [], self._report_teacher,
                              note=f"the student learns from its {cfg.teacher.keep} epoch")
        else:
            self.summary["teacher"] = {"arch": None, "source": "none (student trained alone)"}
        if mode != "off":
            self.teacher_heads = self.build_heads(self.teacher.feature_dim, "teacher_heads")
            heads_task = HeadsTask(self.teacher, self.teacher_heads, self.test_loader, self.num_classes)
            if cfg.granularity.checkpoint:  # trained before on this teacher (a comparison's earlier run)
                with blame("granularity.checkpoint"):
                    self._load_heads_weights(Path(cfg.granularity.checkpoint).expanduser())
                self.stages.append(Stage(StagePlan("heads", "load", units=len(self.test_loader),
                                                   frozen=["teacher", "teacher_heads"],
                                                   note=f"from {cfg.granularity.checkpoint}"),
                                         work=lambda: self._evaluate_loaded_heads(heads_task),
                                         report=lambda stage, history: self._report_heads(heads_task, history)))
            else:
                self.training("heads", heads_task, cfg.granularity.schedule, self.seed("teacher_heads"), ["teacher_heads"],
                              ["teacher"], lambda stage, history: self._report_heads(stage.task, history))

        self.student = self.build(cfg.student.arch, "student", init=cfg.student)
        if mode != "off":
            self.student_heads = self.build_heads(self.student.feature_dim, "student_heads")
        probe = next(iter(self.test_loader.epoch(0)))[0][:2]
        shapes = [self.feature_shapes(m, role, probe, cls.needs_preact) if m is not None else []
                  for m, role in ((self.student, "student"), (self.teacher, "teacher"))]
        context = DistillerContext(student_shapes=shapes[0], teacher_shapes=shapes[1], num_classes=self.num_classes,
                                   train_size=len(self.bundle.train_labels), student_arch=cfg.student.arch,
                                   teacher_arch=cfg.teacher.arch, options=cfg.distiller.options,
                                   train_labels=self.bundle.train_labels)
        torch.manual_seed(self.seed("distiller"))
        with blame("distiller.options"):
            self.distiller = distiller = cls(context).to(self.device)
        own = count_parameters(distiller)
        if own:
            self.models["distiller"] = {"arch": f"{cfg.distiller.name} modules", "params": own, "feature_dim": 0}
        lr = cfg.student.schedule.lr
        if distiller.pretrain_epochs() > 0:
            self.training("pretrain", PretrainTask(student=self.student, teacher=self.teacher, distiller=distiller,
                                                   test_loader=self.test_loader, num_classes=self.num_classes),
                          cfg.student.schedule, self.seed("pretrain"), [f"{cfg.distiller.name} pre-training modules"],
                          ["teacher"], note=f"{cfg.distiller.name}'s own pre-training",
                          epochs=distiller.pretrain_epochs(), milestones=[], lr=distiller.pretrain_lr(lr))
        d = cfg.distiller
        task = StudentTask(student=self.student, teacher=self.teacher, distiller=distiller, mode=mode,
                           teacher_heads=self.teacher_heads, student_heads=self.student_heads,
                           weights=(d.w_ce, d.w_div, d.w_kd), temperature=d.temperature,
                           test_loader=self.test_loader, num_classes=self.num_classes)
        trains = ["student"] + ["student_heads (encoders)"] * (mode != "off") + ["distiller"] * bool(own)
        frozen = ["teacher"] * (self.teacher is not None) + ["teacher_heads"] * (mode != "off")
        self.training("student", task, cfg.student.schedule, self.seed("student"), trains, frozen,
                      self._report_student)

    def _declare_online(self) -> None:
        import torch

        from engine.mgd import GranularityHeads
        from engine.stages import OnlineTask

        cfg = self.cfg
        self.peers = [self.build(arch, "peer", i, f"peer{i + 1}") for i, arch in enumerate(cfg.online.peers)]
        heads = None
        if cfg.granularity.mode != "off":
            torch.manual_seed(self.seed("student_heads"))
            heads = [GranularityHeads(p.feature_dim, self.num_classes, cfg.granularity.heads).to(self.device)
                     for p in self.peers]
        trains = [f"peer{i + 1}" for i in range(len(self.peers))] + ["peer heads (encoders)"] * bool(heads)
        self.training("online", OnlineTask(peers=self.peers, heads=heads, test_loader=self.test_loader,
                                           num_classes=self.num_classes),
                      cfg.student.schedule, self.seed("peer"), trains, [], self._report_online)
        self.summary["teacher"] = {"arch": None, "source": "none (online MGD)"}

    def _declare_evaluation(self) -> None:
        from engine.evaluate import report_passes

        models = ["teacher"] * (self.teacher is not None) + ["student"]
        units = report_passes(self.test_loader, self.cfg.evaluation.noise_levels) * len(models)
        self.stages.append(Stage(StagePlan("evaluate", "evaluate", units=units, frozen=models,
                                           seed=self.cfg.evaluation.noise_seed,
                                           note="accuracy, noise robustness, output noise, calibration, latency"),
                                 work=self._evaluate))

    def _declare_transfer(self) -> None:
        import torch
        from torch import nn

        from engine.stages import TransferTask

        t, bundle = self.cfg.transfer, self.transfer_bundle
        train_loader, test_loader = self.loaders(t.data, bundle)
        self.transfer_model = model = copy.deepcopy(self.student)  # the student's best weights come in later
        torch.manual_seed(self.seed("transfer"))
        model.replace_classifier(nn.Linear(model.feature_dim, bundle.num_classes).to(self.device))
        self.training("transfer", TransferTask(model, test_loader, bundle.num_classes, adapt_batchnorm=t.adapt_batchnorm),
                      t.schedule, self.seed("transfer"), ["new linear classifier"], ["student backbone"],
                      self._report_transfer, loader=train_loader, classes=list(bundle.classes),
                      note=f"linear probe on {bundle.name}")

    # =========================================================================== running
    def execute(self) -> dict:
        """Run every declared stage in order (``prepare`` first)."""
        for stage in self.stages:
            self.run_stage(stage)
        return self.finish()

    def run_stage(self, stage: Stage, trained: tuple[list[dict], float, float] | None = None) -> None:
        """Run one stage: resume or train (or do its work), report, record its time and memory.

        ``trained``: a training stage trained elsewhere with other runs' (students in lockstep):
        its history, its seconds in earlier sessions and the group's seconds for it in this
        session. A stage's seconds are the wall time this run's stage took over every session
        (pauses left out; in lockstep, the group's time for the stage it shared)."""
        self.stage = stage.name
        watch = Stopwatch()
        with timing(self.clock, watch):
            if trained is not None:
                history, earlier, shared = trained
            elif stage.task is not None:
                history, earlier, shared = self.resume_or_train(stage)
            else:
                history, earlier, shared = [], 0.0, 0.0
                self.bus.emit(StageStarted(stage.name, 1, stage.plan.units))
                stage.work()
            result = stage.report(stage, history)
        seconds = earlier + shared + watch.session
        self.summary["stages"][stage.name] = {"seconds": round(seconds, 3), **peak_memory(self.device)}
        for entry in self.summary.get("plan", []):
            if entry.get("stage") == stage.name:
                entry["done"] = True
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        self.save_summary()
        self.bus.emit(StageFinished(stage.name, seconds, result))
        if self.control.stop_requested:
            raise StopRequested(f"stopped after the {self.stage} stage")

    def finish(self) -> dict:
        self.summary.update(status="finished", finished=now_iso())
        self.save_summary()
        return self.summary

    def load_final(self, stage: Stage) -> tuple[list[dict], float, float] | None:
        """The history and seconds (earlier sessions, this session: 0) of a training stage already
        done in this run (its final checkpoint loaded into its task), or None."""
        final = checkpoint_path(self.run_dir, stage.name)
        if not final.exists():
            return None
        state = load_checkpoint(final)
        if not isinstance(state, dict) or state.get("stage") != stage.name:
            raise CheckpointError(f"{final}: not a final checkpoint of the {stage.name} stage")
        check_stage_state(state, final, stage.name, stage.plan.epochs, stage.plan.steps_per_epoch, final=True)
        try:
            stage.task.load_state_dict(state)
        except (KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{final}: does not fit this run's {stage.name} stage ({exc})") from None
        self.bus.log(f"{stage.name}: already done in this run, loaded its weights")
        return list(state.get("history", [])), float(state.get("seconds", 0.0)), 0.0

    def trainer(self, stage: Stage):
        from engine.trainer import Trainer

        return Trainer(bus=self.bus, control=self.control, checkpoint_dir=self.run_dir / CHECKPOINT_DIR,
                       train_loader=stage.train_loader or self.train_loader, classes=stage.classes or self.classes,
                       precision=self.precision, channels_last=self.channels_last, clock=self.clock,
                       strategy=self.strategy)

    def session(self, stage: Stage, own_rng: bool = False):
        """A training stage's FitSession (resumed from its per-epoch checkpoint if there is one)."""
        return self.trainer(stage).session(stage.task, own_rng=own_rng, **self.schedule_of(stage))

    def schedule_of(self, stage: Stage) -> dict:
        s = stage.plan.schedule
        return {"epochs": s["epochs"], "lr": s["lr"], "momentum": s["momentum"], "weight_decay": s["weight_decay"],
                "milestones": s["milestones"], "gamma": s["gamma"], "seed": stage.plan.seed or 0}

    def complete(self, stage: Stage, session) -> tuple[list[dict], float, float]:
        """After a training stage's last epoch: its end hook, its final checkpoint (replacing the
        per-epoch one); returns the history, the stage's seconds in earlier sessions and in this one."""
        from engine.trainer import stage_state

        stage.task.finish()
        save_checkpoint(stage_state(stage.task, session.history, session.seconds),
                        checkpoint_path(self.run_dir, stage.name))
        last_checkpoint_path(self.run_dir, stage.name).unlink(missing_ok=True)
        return session.history, session.seconds_before, 0.0  # this session's time is run_stage's

    def resume_or_train(self, stage: Stage) -> tuple[list[dict], float, float]:
        """The body of a training stage trained alone: load its final checkpoint if it has one,
        else train it (resuming from its per-epoch checkpoint, through the one batch loop) and
        write the final checkpoint. Returns the history and the stage's seconds before this session."""
        from engine.trainer import fit_sessions

        done = self.load_final(stage)
        if done is not None:
            return done
        session = self.session(stage)
        fit_sessions([session], stage.train_loader or self.train_loader, self.control,
                     channels_last=self.channels_last)
        return self.complete(stage, session)

    def progress(self, stage: str, total: int, offset: int = 0) -> Callable[[int], None]:
        """A callback that emits StageProgress about 50 times over ``total`` units."""
        every = max(1, total // 50)

        def report(done: int) -> None:
            done += offset
            if done % every == 0 or done == total:
                self.bus.emit(StageProgress(stage, done, total))
        return report

    # -- what each stage does and reports ---------------------------------------------
    def _load_teacher(self) -> None:
        from engine.evaluate import evaluate_model

        self.teacher.eval()
        tick, done = self.progress("teacher", len(self.test_loader)), [0]

        def forward(x):
            done[0] += 1
            tick(done[0])
            return self.teacher(x)[0]
        self.teacher_acc, _ = evaluate_model(forward, self.test_loader, self.num_classes)
        self.bus.log(f"teacher: loaded {self.cfg.teacher.arch} from {self.cfg.teacher.checkpoint}")

    def _report_teacher(self, stage: Stage, history: list[dict]) -> dict:
        freeze(self.teacher)
        entry = {"arch": self.cfg.teacher.arch, "params": count_parameters(self.teacher)}
        if stage.task is None:
            entry.update(source=f"checkpoint {self.cfg.teacher.checkpoint}", test_acc=self.teacher_acc)
        else:  # test_acc: the weights the student learns from (teacher.keep: best or last)
            tracker, last = stage.task.tracker, (history[-1] if history else {})
            best = self.cfg.teacher.keep == "best" and tracker.best_metric("model") is not None
            entry.update(source="trained", kept=self.cfg.teacher.keep, final_acc=last.get("test_acc"),
                         best_acc=tracker.best_metric("model"), best_epoch=tracker.epoch["model"],
                         test_acc=tracker.best_metric("model") if best else last.get("test_acc"),
                         epoch_used=tracker.epoch["model"] if best else last.get("epoch"))
        self.summary["teacher"] = entry
        return {"test_acc": entry["test_acc"]}

    def _load_heads_weights(self, path: Path) -> None:
        weights, tracker = check_heads_state(load_checkpoint(path), path)
        try:
            self.teacher_heads.load_state_dict(weights)
            # the epoch each head was kept from, in the run that trained it
            self.loaded_head_epochs = [int((tracker.get(f"head{i + 1}") or {}).get("epoch") or 0)
                                       for i in range(len(self.teacher_heads))]
        except (KeyError, TypeError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{path}: not granularity heads of this experiment's teacher and heads "
                                  f"({first[:200]})") from None

    def _evaluate_loaded_heads(self, task) -> None:
        """The loaded heads' test accuracies (what a trained stage would report)."""
        task.evaluate(0)
        units = len(self.test_loader)
        self.bus.emit(StageProgress("heads", units, units))
        self.bus.log(f"heads: loaded from {self.cfg.granularity.checkpoint}")

    def _report_heads(self, task, history: list[dict]) -> dict:
        freeze(self.teacher_heads)
        epochs = getattr(self, "loaded_head_epochs", None) or task.best_epoch  # loaded: as trained
        results = [{"dim": h.dim, "temperature": h.temperature, "test_acc": acc, "epoch": ep}
                   for h, acc, ep in zip(self.teacher_heads.heads, task.best_acc, epochs)]
        self.summary["heads"] = results
        self.bus.emit(HeadAccuracies(results, self.summary["teacher"]["test_acc"]))
        return {"heads": results}

    def _report_student(self, stage: Stage, history: list[dict]) -> dict:
        tracker = stage.task.tracker
        final_acc = history[-1]["test_acc"] if history else None
        self.summary["student"] = {"arch": self.cfg.student.arch, "params": count_parameters(self.student),
                                   "test_acc": final_acc, "best_acc": tracker.best_metric("student"),
                                   "best_epoch": tracker.epoch["student"]}
        self._keep_best(self.student, tracker.best_state("student"))
        return {"test_acc": final_acc, "best_acc": tracker.best_metric("student")}

    def _report_online(self, stage: Stage, history: list[dict]) -> dict:
        tracker, keys = stage.task.tracker, stage.task.keys
        last = history[-1]["metrics"] if history else {}
        peers = [{"arch": a, "test_acc": last.get(k), "best_acc": tracker.best_metric(k), "best_epoch": tracker.epoch[k]}
                 for a, k in zip(self.cfg.online.peers, keys)]
        best = keys.index(tracker.best_key(keys))
        self.summary["peers"] = peers
        self.summary["student"] = {**peers[best], "peer": best + 1, "params": count_parameters(self.peers[best])}
        self.student = self.peers[best]  # the best peer is the run's student: evaluated and exported
        self._keep_best(self.student, tracker.best_state(keys[best]))
        return {"peers": peers}

    def _keep_best(self, student, state: dict) -> None:
        """Evaluate and export the best epoch's weights; the transfer copy starts from them too."""
        student.load_state_dict(state)
        if self.transfer_model is not None:
            prefix = student.classifier_name + "."
            self.transfer_model.load_state_dict({k: v for k, v in state.items() if not k.startswith(prefix)},
                                                strict=False)

    def _evaluate(self) -> None:
        from engine.evaluate import cpu_latency_ms, evaluation_report

        ev = self.cfg.evaluation
        models = [("teacher", self.teacher)] * (self.teacher is not None) + [("student", self.student)]
        total = self.stages[[s.name for s in self.stages].index("evaluate")].plan.units
        for i, (role, model) in enumerate(models):
            model.eval()
            report = evaluation_report(lambda x, m=model: m(x)[0], self.test_loader, self.num_classes,
                                       ev.noise_levels, ev.noise_seed,
                                       progress=self.progress("evaluate", total, i * total // len(models)))
            entry = self.summary[role]
            self.bus.emit(Evaluation("evaluate", role, entry.get("best_epoch") or 0, report["test_acc"], self.classes,
                                     report["confusion"]))
            curve = report["noise_curve"]
            self.bus.emit(NoiseCurve(role, [c[0] for c in curve], [c[1] for c in curve],
                                     output_noise=report["output_noise"]))
            entry.update(noise_curve=curve, output_noise=report["output_noise"], ece=report["ece"])
            if role == "student":
                entry["best_acc"] = report["test_acc"]  # the evaluated (best) weights, measured again
        self.summary["student"]["cpu_latency_ms"] = cpu_latency_ms(self.student, self.input_shape)

    def _export(self, out: Path) -> None:
        from engine.export import export_model

        if not self.strategy.is_writer:  # several processes: the first alone writes the files
            return
        cfg, s = self.cfg, self.summary
        card = {"teacher": {"arch": s["teacher"].get("arch"), "test_acc": s["teacher"].get("test_acc")},
                "accuracy": {"test_acc": s["student"]["best_acc"], "final_test_acc": s["student"]["test_acc"],
                             "best_epoch": s["student"]["best_epoch"]},
                "noise_curve": s["student"].get("noise_curve"),
                "mgd": {"mode": cfg.granularity.mode, "distiller": cfg.distiller.name,
                        "heads": [{"dim": h.dim, "temperature": h.temperature} for h in cfg.granularity.heads]},
                "config": to_dict(cfg)}
        tick = self.progress("export", len(cfg.export.formats) + 1)
        failed: dict[str, str] = {}  # a format the model cannot take (a library model's TorchScript)
        files = export_model(self.student, out, arch=s["student"]["arch"], input_shape=self.input_shape,
                             classes=self.classes, mean=self.bundle.mean, std=self.bundle.std,
                             formats=cfg.export.formats, card_extra=card, progress=lambda done, total: tick(done),
                             failures=failed)
        s["export"] = {k: str(v) for k, v in files.items()}
        s["export"]["bytes"] = {k: Path(v).stat().st_size for k, v in files.items()}
        for fmt, reason in failed.items():  # the other formats were written
            self.bus.log(f"export: {fmt} skipped: {reason}", "warning")
        if failed:
            s["export"]["failed"] = dict(failed)
        self.bus.emit(Exported({k: str(v) for k, v in files.items()}))

    def _report_transfer(self, stage: Stage, history: list[dict]) -> dict:
        tracker, bundle = stage.task.tracker, self.transfer_bundle
        self.summary["transfer"] = {"dataset": bundle.name, "classes": bundle.num_classes,
                                    "best_acc": tracker.best_metric("model"), "best_epoch": tracker.epoch["model"],
                                    "adapt_batchnorm": self.cfg.transfer.adapt_batchnorm}
        return dict(self.summary["transfer"])


def check_run_checkpoints(run_dir: str | Path, stages) -> None:
    """At plan time: load and check the checkpoints a resumed run would continue from (each
    training stage's final checkpoint, else its resume point), so a bad one is refused before
    any training. ``stages``: the plan's :class:`engine.plan.StagePlan` list."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    for plan in stages:
        if plan.action != "train" or not plan.epochs:
            continue
        final, last = folder / f"{plan.name}.pt", folder / f"{plan.name}_last.pt"
        if final.is_file():
            check_stage_state(load_checkpoint(final), final, plan.name, plan.epochs, plan.steps_per_epoch, final=True)
        elif last.is_file():
            check_stage_state(load_checkpoint(last), last, plan.name, plan.epochs, plan.steps_per_epoch, final=False)


# ----------------------------------------------------------------------------- entry points


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


def plan_experiment(config: ExperimentConfig, run_dir: str | Path | None = None, estimate: bool = False,
                    processes: int | None = None) -> Plan:
    """Check a config and return what a run of it would do, without training or writing anything.

    Raises :class:`InputError` (a ConfigError naming the field where there is one) for the first
    problem found: the same checks a run makes before its first step. With ``estimate`` the
    plan also holds the expected time of each stage on this machine (a few timed passes).
    ``processes``: plan a run of that many processes (``mgd-train --nproc``), from outside them.
    """
    run = ExperimentRun(_resolved(config), Path(run_dir) if run_dir else None, processes=processes)
    plan = run.prepare()
    if estimate:
        from engine.estimate import estimate_stages

        plan.estimate = estimate_stages(plan, run.device)
    return plan


class OpenRun:
    """A run folder opened for writing: locked, its orphans removed, the run planned (a run
    refused there leaves no folder behind), its config and metrics log written, ``PlanReady``
    announced. :meth:`outcome` runs a body and reports how it ended; :meth:`close` unlocks."""

    def __init__(self, config: ExperimentConfig | None, *, run_dir: str | Path | None = None,
                 runs_root: str | Path = "runs", subscribers: Iterable[Subscriber] = (),
                 control: RunControl | None = None, resume: bool = False, job=None,
                 comparison_dir: str | Path | None = None):
        import torch

        from engine.strategy import current_strategy

        strategy = current_strategy()
        strategy.setup(cuda=torch.cuda.is_available() and (config is None or config.device != "cpu"))
        self.main = strategy.is_writer  # several processes: the first writes the folder and sends events
        bus = self.bus = EventBus(list(subscribers) if self.main else [])
        if self.main:
            cfg, path = prepare_run(config, run_dir, runs_root, resume)
        made = strategy.broadcast_object((to_dict(cfg), str(path)) if self.main else None)
        if not self.main:
            cfg, path = load_config(made[0]), Path(made[1])
        self.path, self.writer = path, None
        created = not path.exists()
        self.lock = RunLock(path)
        try:
            if self.main:
                self.lock.acquire()
        except OSError as exc:
            raise InputError(f"run folder (--out): cannot create {path}: {exc.strerror or exc}") from None
        try:
            run = self.run = ExperimentRun(cfg, path, bus, control, strategy=strategy)
            removed = remove_orphans(path) if self.main else []
            if resume:  # one run, however many sessions: its start and its total time carry over
                old = read_summary(path)
                run.previous_seconds = float(old.get("total_seconds") or 0.0)
                run.summary["started"] = old.get("started") or run.summary["started"]
            with timing(run.clock):
                plan = run.prepare()
            if not resume and self.main:
                save_config(cfg, path / CONFIG_FILE)
            if job is not None and self.main:  # which job of which comparison this run is
                from engine.jobs import write_job

                write_job(path, job, comparison_dir)
            if self.main:
                self.writer = MetricsWriter(path)
                bus.subscribe(self.writer)
            # the summary's wall time stays current to the epoch, so a killed run's resume accounts for it
            bus.subscribe(lambda event: run.save_summary() if event.type == "EpochEnd" else None)
            bus.emit(PlanReady(plan.to_dict()))
            bus.emit(RunStarted(str(path), to_dict(cfg), run.device_text, resumed=resume))
            b = run.bundle
            bus.emit(DatasetInfo(b.name, run.classes, len(b.train_labels), len(b.test_labels),
                                 list(run.input_shape)))
            if removed:
                bus.log(f"removed {len(removed)} temporary file(s) left by an interrupted writer")
            for note in run.notes:
                bus.log(note)
            if run.summary["data"]["streamed"]:
                bus.log(f"data: {b.name} is too large for memory (or in_memory: off): streaming it from disk "
                        f"with {cfg.data.workers} worker(s)")
            run.summary["plan"] = [{"stage": s.name, "action": s.action, "epochs": s.epochs, "done": s.done}
                                   for s in plan.stages]
            run.save_summary()
        except BaseException:
            self.close(remove=created and self.main)  # refused at its start: leave nothing behind
            raise

    def close(self, remove: bool = False) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.lock.release(remove=remove)

    def outcome(self, body: Callable[[], dict]) -> dict:
        """Run ``body`` and report its end: finished, stopped (returns the summary) or failed
        (announced, recorded in the summary and error.log, then raised)."""
        run, bus, path = self.run, self.bus, self.path
        try:
            summary = body()
            bus.emit(RunFinished(str(path), copy.deepcopy(summary)))
            return summary
        except StopRequested as exc:
            run.summary.update(status="stopped", stopped_in=run.stage)
            run.save_summary()
            bus.log(f"{exc}; resume with: mgd-train --resume {path}")
            bus.emit(RunFinished(str(path), copy.deepcopy(run.summary), stopped=True))
            return run.summary
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, then re-raised
            error: BaseException = _oom_error(exc) or as_run_error(exc) or exc
            kind = ("input" if isinstance(error, InputError) else error.kind if isinstance(error, TrainingError)
                    else "interrupted" if isinstance(error, KeyboardInterrupt) else
                    "export" if run.stage == "export" else "error")
            message = str(error) if isinstance(error, MGDError) else f"{type(error).__name__}: {error}"
            if run.stage == "export":
                message += f" (the trained student is kept; mgd-train --resume {path} exports again)"
            run.summary.update(status="failed", failed_in=run.stage, error=message)
            details = traceback.format_exc()
            record_failure(path, details, run.save_summary)  # what it can: a full disk, a read-only folder
            # a process of `--nproc N`, whichever: its record tells the launcher (only process 0 sends events)
            note_failure(run.stage, message, kind, details, getattr(error, "field", None))
            try:
                bus.emit(RunFailed(str(path), run.stage, message, kind, details))
            except MGDError:
                pass  # the metrics log cannot take it either: the failure above is the one to report
            if error is not exc:
                raise error from exc
            raise


def _oom_error(exc: BaseException) -> TrainingError | None:
    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return TrainingError(f"out of memory on the device ({text.splitlines()[0][:200]}); "
                             "lower data.batch_size or use a smaller model", kind="oom")
    return None
