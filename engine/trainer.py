"""The one training loop shared by every stage.

Stages differ in what they optimise, not in how they loop: each stage is a
:class:`StageTask` (its modules, one training step, its evaluation, how it keeps its
best weights) and :class:`Trainer` does the rest: SGD with step decay, pause and stop,
NaN detection, events, and a checkpoint written atomically after every epoch (and on
stop) from which ``resume`` continues exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from engine.control import RunControl
from engine.errors import CheckpointError, StopRequested, TrainingError
from engine.events import CheckpointWritten, EpochEnd, Evaluation, EventBus, Paused, Resumed, StageStarted, StepLosses
from engine.progress import Stopwatch
from engine.strategy import Strategy, current_strategy
from engine.runfolder import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from engine.teacher_pass import TeacherPass
from engine.tracker import BestTracker
from engine.verify import check_stage_state

# ----------------------------------------------------------------------------- checkpoints


def stage_state(task: "StageTask", history: list[dict], seconds: float, **extra: Any) -> dict[str, Any]:
    """The one checkpoint format of every stage: its modules, its best-weights bookkeeping, its
    epoch history and wall time (plus, in the per-epoch checkpoint, the optimiser and the
    position to resume from)."""
    return {"format": CHECKPOINT_FORMAT, "stage": task.name, **task.state_dict(), "history": history,
            "seconds": float(seconds), **extra}


# ----------------------------------------------------------------------------- schedule


def lr_at(base_lr: float, milestones: list[int], gamma: float, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``: ``base * gamma ** (milestones passed)``, as MultiStepLR."""
    return base_lr * gamma ** sum(1 for m in milestones if epoch >= m)


def param_groups(params) -> list[dict]:
    """Optimiser groups from a task's parameters: one group for a plain list, the task's own
    groups (each with an ``lr_scale``, default 1) otherwise; empty groups are dropped."""
    params = list(params)
    if params and isinstance(params[0], dict):
        groups = [{**g, "params": list(g["params"]), "lr_scale": float(g.get("lr_scale", 1.0))} for g in params]
        return [g for g in groups if g["params"]]
    return [{"params": params, "lr_scale": 1.0}]


# ----------------------------------------------------------------------------- tasks


@dataclass
class StepResult:
    total: torch.Tensor  # the loss to back-propagate
    losses: dict[str, torch.Tensor]  # named, detached terms (unweighted) for logging
    correct: torch.Tensor  # number of correct predictions in the batch (0-d tensor)


class StageTask:
    """What a stage optimises. Subclasses implement the methods below and set ``tracker``
    (a :class:`BestTracker`) when the stage keeps its best weights."""

    name: str = "stage"
    role: str = ""  # the model the stage trains ("teacher", "student"), for Evaluation events
    tracker: BestTracker | None = None

    def modules(self) -> dict[str, nn.Module]:
        """The modules whose state the checkpoint holds (trained ones and their best copies)."""
        raise NotImplementedError

    def parameters(self) -> list[nn.Parameter] | list[dict]:
        """The parameters the optimiser updates: a list of parameters, or of optimiser groups
        ``{"params": [...], "lr_scale": s}`` whose learning rate is ``s`` times the schedule's."""
        raise NotImplementedError

    def train_mode(self) -> None:
        """Put trained modules in train mode and frozen ones in eval mode."""
        raise NotImplementedError

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (0-based)."""

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> StepResult:
        raise NotImplementedError

    def evaluate(self, epoch: int) -> dict[str, Any]:
        """Test metrics after an epoch: at least ``test_acc`` (percent); optionally ``confusion``
        (a [true][predicted] count matrix, sent as an Evaluation event); the rest goes to EpochEnd.metrics."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Module weights and best-weights bookkeeping (the checkpointed state of the task)."""
        return {"modules": {k: m.state_dict() for k, m in self.modules().items()},
                "tracker": self.tracker.state_dict() if self.tracker is not None else None}

    def finish(self) -> None:
        """Called after the last epoch, before the stage's final checkpoint (e.g. restore best weights)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        modules = state["modules"]
        for key, module in self.modules().items():
            if key not in modules:
                raise CheckpointError(f"the {self.name} checkpoint has no weights for {key!r}; "
                                      "it was written for another experiment")
            module.load_state_dict(modules[key])
        if self.tracker is not None and state.get("tracker") is not None:
            self.tracker.load_state_dict(state["tracker"])


# ----------------------------------------------------------------------------- trainer


class Trainer:
    """Runs :class:`StageTask` s for a schedule, with events, checkpoints and control.

    :meth:`fit` trains one task; the driver (:mod:`engine.driver`) trains several students in
    lockstep through the same loop, :func:`fit_sessions`, the engine's one batch loop.
    """

    def __init__(self, *, bus: EventBus, control: RunControl, checkpoint_dir: Path, train_loader,
                 classes: list[str], log_points: int = 25, precision: str = "fp32", channels_last: bool = False,
                 clock: Stopwatch | None = None, strategy: Strategy | None = None):
        self.classes = classes
        self.strategy = strategy or current_strategy()  # how the work is spread over processes
        self.precision = precision  # "fp32", "bf16" or "fp16" (autocast; fp16 with a grad scaler)
        self.channels_last = channels_last
        self.bus = bus
        self.control = control
        self.checkpoint_dir = Path(checkpoint_dir)
        self.loader = train_loader
        self.log_points = log_points  # StepLosses events per epoch
        self.run_clock = clock  # the run's own clock (stopped while paused)

    def checkpoint_path(self, task: StageTask) -> Path:
        return self.checkpoint_dir / f"{task.name}_last.pt"

    def fit(self, task: StageTask, *, epochs: int, lr: float, momentum: float, weight_decay: float,
            milestones: list[int], gamma: float, seed: int = 0) -> list[dict]:
        """Train ``task`` (resuming from its last checkpoint if one exists); returns the epoch history.

        ``seed`` seeds the global random generator at the start of the stage (what a baseline
        draws at random, such as CRD's negatives); its state is checkpointed with the stage, so
        a resumed stage draws exactly what it would have drawn.
        """
        session = self.session(task, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               milestones=milestones, gamma=gamma, seed=seed)
        fit_sessions([session], self.loader, self.control, channels_last=self.channels_last)
        return session.history

    def session(self, task: StageTask, **schedule) -> "FitSession":
        """A :class:`FitSession` of ``task`` (resumed from its checkpoint if there is one)."""
        return FitSession(self, task, **schedule)


def fit_sessions(sessions: list, loader, control: RunControl, *, channels_last: bool = False,
                 on_failure: Callable[[Any, BaseException], None] | None = None) -> list:
    """The engine's one batch loop: every epoch, every batch once, for one session or for several
    training together (students in lockstep, all at one position, on one loader). Per batch, one
    :class:`TeacherPass` is shared by the tasks that use a frozen teacher, so the teacher (and its
    heads) run once for all of them. A session whose step or evaluation raises is handed to
    ``on_failure`` and dropped (raised when there is no handler); returns the sessions that
    completed their schedule. Each session's stopwatch runs for the loop."""
    alive = list(sessions)

    def drop(session, exc: BaseException) -> None:
        if on_failure is None:
            raise exc
        alive.remove(session)
        session.stop_watch()
        on_failure(session, exc)

    strategy = sessions[0].trainer.strategy  # one loader, one strategy for the sessions of a loop
    for s in sessions:
        s.start_watch()
    try:
        start_epoch, epochs = sessions[0].start_epoch, sessions[0].epochs
        for epoch in range(start_epoch, epochs):
            first_step = 0
            for session in alive:
                first_step = session.begin_epoch(epoch)
            for step, (x, y, idx) in enumerate(loader.epoch(epoch, start_step=first_step), start=first_step + 1):
                x, y, idx = strategy.shard(x, y, idx)  # several processes: this one's part of the batch
                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                check_control(control, alive, epoch, step)  # pause; stop: all at once
                shared = TeacherPass(x)  # of this process's part: what its students see
                for session in list(alive):
                    session.task.shared = shared
                    try:
                        session.step(step, x, y, idx)
                    except Exception as exc:  # noqa: BLE001 - this session stops alone
                        if on_failure is None or len(sessions) == 1:
                            raise
                        drop(session, exc)
                    finally:
                        session.task.shared = None
                if not alive:
                    return []
            for session in list(alive):
                try:
                    session.end_epoch(epoch)
                except Exception as exc:  # noqa: BLE001
                    if on_failure is None or len(sessions) == 1:
                        raise
                    drop(session, exc)
    finally:
        for s in sessions:
            s.stop_watch()
    return alive


def check_control(control: RunControl, sessions: list, epoch: int, step: int) -> None:
    """The pause and stop seam of one session, or of several training together (lockstep): while
    paused, each session's events say Paused, then Resumed, and no clock runs; on stop (in any
    process, when there are several), every session writes its checkpoint before ``step``, so
    that all resume at the same position, and StopRequested is raised."""
    if control.paused:
        for s in sessions:
            s.stop_watch()
            s.bus.emit(Paused(s.task.name))
        while control.paused:
            control.wait_while_paused(0.2)
        for s in sessions:
            s.start_watch()
        if not control.stop_requested:
            for s in sessions:
                s.bus.emit(Resumed(s.task.name))
    first = sessions[0]
    device = first.params[0].device if first.params else torch.device("cpu")
    if first.trainer.strategy.any(control.stop_requested, device):  # several processes stop at the same step
        control.stop()
        for s in sessions:
            s.save(epoch, step - 1)
        raise StopRequested(f"stopped in {first.task.name} epoch {epoch + 1}")


class FitSession:
    """One stage's training in progress: optimiser, schedule, position, running sums, time, events
    and checkpoints; the loop (:func:`fit_sessions`) feeds it batches (:meth:`step`) between
    :meth:`begin_epoch` and :meth:`end_epoch`.

    ``own_rng``: keep the stage's own random-generator state and switch to it around each step
    (several sessions in one loop, :mod:`engine.lockstep`), so each draws exactly what it would
    draw alone."""

    def __init__(self, trainer: Trainer, task: StageTask, *, epochs: int, lr: float, momentum: float,
                 weight_decay: float, milestones: list[int], gamma: float, seed: int = 0, own_rng: bool = False):
        self.trainer, self.task, self.bus = trainer, task, trainer.bus
        self.epochs, self.lr, self.milestones, self.gamma = epochs, lr, milestones, gamma
        groups = param_groups(task.parameters())
        params = self.params = [p for g in groups for p in g["params"]]
        self.optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.device = params[0].device if params else torch.device("cpu")
        self.device_type = self.device.type
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(trainer.precision)
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=trainer.precision == "fp16")
        self.history: list[dict] = []
        self.start_epoch, self.start_step = 0, 0
        self.watch = Stopwatch()  # the stage's own time, over sessions (its checkpoint carries it)
        self.own_rng = own_rng
        outer = torch.get_rng_state() if own_rng else None
        ckpt_path = trainer.checkpoint_path(task)
        torch.manual_seed(seed)
        self.partial = None  # the running sums of the interrupted epoch resumed (see save)
        if ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
            check_stage_state(state, ckpt_path, task.name, epochs, len(trainer.loader), final=False)
            try:
                task.load_state_dict(state)
                self.optimizer.load_state_dict(state["optimizer"])
                self.history = list(state.get("history", []))
                self.start_epoch, self.start_step = int(state["epoch"]), int(state["step"])
                self.watch.before = float(state.get("seconds", 0.0))
                self.partial = state.get("partial") if self.start_step else None
                if state.get("rng") is not None:
                    torch.set_rng_state(state["rng"])
                if state.get("rng_cuda") is not None and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(state["rng_cuda"])
                if state.get("scaler"):
                    self.scaler.load_state_dict(state["scaler"])
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise CheckpointError(f"{ckpt_path}: not a checkpoint of this stage ({type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
            self.bus.log(f"{task.name}: resuming at epoch {self.start_epoch + 1}, step {self.start_step}")
        self.rng = torch.get_rng_state()
        if outer is not None:
            torch.set_rng_state(outer)
        self.steps = len(trainer.loader)
        self.bus.emit(StageStarted(task.name, epochs, self.steps, start_epoch=self.start_epoch,
                                   parameters=sum(p.numel() for p in params), start_step=self.start_step))
        self.log_every = max(1, self.steps // trainer.log_points)

    # -- time --------------------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        """The stage's wall time so far, over every session (resumes included), pauses left out."""
        return self.watch.seconds

    @property
    def seconds_before(self) -> float:
        return self.watch.before

    def start_watch(self) -> None:
        self.watch.start()
        if self.trainer.run_clock is not None:
            self.trainer.run_clock.start()

    def stop_watch(self) -> None:
        self.watch.stop()
        if self.trainer.run_clock is not None:
            self.trainer.run_clock.stop()

    # -- the loop's seams ------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> int:
        """Set the epoch's learning rate and modes; returns the step to start from (resume)."""
        self.epoch = epoch
        self.epoch_lr = lr_at(self.lr, self.milestones, self.gamma, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.epoch_lr * group.get("lr_scale", 1.0)
        self.task.begin_epoch(epoch, self.epochs)
        self.task.train_mode()
        self.t0 = time.perf_counter()
        self.sums: dict[str, float] = {}
        self.window: dict[str, torch.Tensor] = {}
        self.correct: torch.Tensor | float = 0.0
        self.seen = 0
        self.window_n = 0
        self.first_step = self.start_step if epoch == self.start_epoch else 0
        self.steps_before = 0  # steps of this epoch whose sums were restored from the checkpoint
        if self.first_step and self.partial:  # resumed mid-epoch: its sums so far, as if never stopped
            p = self.partial
            self.sums = {k: float(v) for k, v in p["sums"].items()}
            self.steps_before = int(p["steps"])
            if self.trainer.strategy.rank == 0:  # counts are summed over the processes at the epoch's end
                self.correct, self.seen = float(p["correct"]), int(p["seen"])
        return self.first_step

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
        """One optimisation step on a batch, with the running sums and a StepLosses event at log points."""
        task, trainer = self.task, self.trainer
        if self.own_rng:
            torch.set_rng_state(self.rng)
        strategy = trainer.strategy  # x, y, idx: this process's part of the batch (the loop shards it)
        if trainer.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            result = task.step(x, y, idx)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(result.total).backward()
        strategy.sync_gradients(self.params)  # the update of the whole batch, in every process
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.own_rng:
            self.rng = torch.get_rng_state()

        for name, value in {"total": result.total.detach(), **result.losses}.items():
            self.window[name] = self.window.get(name, 0) + value.detach()
        self.correct = self.correct + result.correct.detach().float()  # stays on the device: no sync per step
        self.seen += y.shape[0]
        self.window_n += 1
        if step % self.log_every == 0 or step == self.steps:
            # one device sync per log point; a NaN anywhere in the window shows up here
            self.window = strategy.mean(self.window)  # the whole batch's losses
            means = {k: float(v) / self.window_n for k, v in self.window.items()}
            bad = [k for k, v in means.items() if not math.isfinite(v)]
            if bad:
                raise TrainingError(
                    f"{task.name}: the loss became {means[bad[0]]} ({', '.join(bad)}) at epoch {self.epoch + 1}, "
                    f"step {step}; the last good checkpoint is kept. Try a lower learning rate.", kind="nan")
            for k, v in self.window.items():
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.bus.emit(StepLosses(task.name, self.epoch + 1, step, self.steps, means, self.epoch_lr))
            self.window, self.window_n = {}, 0

    def end_epoch(self, epoch: int) -> None:
        """Evaluate, record the epoch, announce it and write the per-epoch checkpoint."""
        task = self.task
        strategy = self.trainer.strategy
        if strategy.processes > 1:  # every process evaluates and checkpoints process 0's model
            strategy.before_evaluation(task.modules().values())
            counts = strategy.total([float(self.correct), float(self.seen)], self.device)
            self.correct, self.seen = float(counts[0]), int(counts[1])
        task_eval = task.evaluate(epoch + 1)
        confusion = task_eval.pop("confusion", None)
        n_steps = max(1, self.steps - self.first_step + self.steps_before)
        record = {
            "epoch": epoch + 1,
            "losses": {k: v / n_steps for k, v in self.sums.items()},
            "train_acc": 100.0 * float(self.correct) / max(1, self.seen),
            "test_acc": float(task_eval.pop("test_acc")),
            "lr": self.epoch_lr,
            "seconds": time.perf_counter() - self.t0,
            "metrics": task_eval,
        }
        self.history.append(record)
        self.bus.emit(EpochEnd(task.name, epoch + 1, self.epochs, record["losses"], record["train_acc"],
                               record["test_acc"], self.epoch_lr, record["seconds"], metrics=task_eval))
        if confusion is not None:
            self.bus.emit(Evaluation(task.name, task.role, epoch + 1, record["test_acc"],
                                     list(self.trainer.classes), confusion))
        path = self.save(epoch + 1, 0)
        self.bus.emit(CheckpointWritten(task.name, str(path), epoch + 1))

    def running_sums(self, step: int) -> dict[str, Any]:
        """The interrupted epoch's sums after ``step`` steps (losses of the whole batch, correct
        and seen over every process), which a resumed session continues (:meth:`begin_epoch`)
        so that the epoch's record equals an uninterrupted one's."""
        sums = dict(self.sums)
        window = {k: float(v) for k, v in self.window.items()}
        counts = [float(self.correct), float(self.seen)]
        strategy = self.trainer.strategy
        if strategy.processes > 1:  # collective: every process saves at the same step
            keys = list(window)
            total = strategy.total(counts + [window[k] for k in keys], self.device)
            counts = total[:2]
            window = {k: v / strategy.processes for k, v in zip(keys, total[2:])}
        for k, v in window.items():
            sums[k] = sums.get(k, 0.0) + v
        return {"sums": sums, "correct": counts[0], "seen": int(counts[1]),
                "steps": step - self.first_step + self.steps_before}

    def save(self, epoch: int, step: int) -> Path:
        rng = self.rng if self.own_rng else torch.get_rng_state()
        state = stage_state(self.task, self.history, self.seconds,
                            epoch=epoch,  # epochs completed (or the epoch in progress when step > 0)
                            step=step,  # steps completed within that epoch
                            optimizer=self.optimizer.state_dict(), rng=rng,
                            rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
                            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
                            partial=self.running_sums(step) if step else None)
        return save_checkpoint(state, self.trainer.checkpoint_path(self.task))
