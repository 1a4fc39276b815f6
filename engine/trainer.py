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
from typing import Any

import torch
from torch import nn

from engine.control import RunControl
from engine.errors import CheckpointError, StopRequested, TrainingError
from engine.events import CheckpointWritten, EpochEnd, Evaluation, EventBus, Paused, Resumed, StageStarted, StepLosses
from engine.runfolder import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from engine.tracker import BestTracker

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
    """Runs a :class:`StageTask` for a schedule, with events, checkpoints and control."""

    seconds_before = 0.0  # the stage's wall time in earlier sessions (resume)

    def __init__(self, *, bus: EventBus, control: RunControl, checkpoint_dir: Path, train_loader,
                 classes: list[str], log_points: int = 25, precision: str = "fp32", channels_last: bool = False):
        self.classes = classes
        self.precision = precision  # "fp32", "bf16" or "fp16" (autocast; fp16 with a grad scaler)
        self.channels_last = channels_last
        self.bus = bus
        self.control = control
        self.checkpoint_dir = Path(checkpoint_dir)
        self.loader = train_loader
        self.log_points = log_points  # StepLosses events per epoch

    def checkpoint_path(self, task: StageTask) -> Path:
        return self.checkpoint_dir / f"{task.name}_last.pt"

    def fit(self, task: StageTask, *, epochs: int, lr: float, momentum: float, weight_decay: float,
            milestones: list[int], gamma: float, seed: int = 0) -> list[dict]:
        """Train ``task`` (resuming from its last checkpoint if one exists); returns the epoch history.

        ``seed`` seeds the global random generator at the start of the stage (what a baseline
        draws at random, such as CRD's negatives); its state is checkpointed with the stage, so
        a resumed stage draws exactly what it would have drawn. ``self.seconds`` is then the
        stage's wall time over every session.
        """
        groups = param_groups(task.parameters())
        params = [p for g in groups for p in g["params"]]
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
        device_type = params[0].device.type if params else "cpu"
        autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        scaler = torch.amp.GradScaler(device_type, enabled=self.precision == "fp16")
        history: list[dict] = []
        start_epoch, start_step = 0, 0
        self.seconds_before = 0.0
        self._t_start = time.perf_counter()
        ckpt_path = self.checkpoint_path(task)
        torch.manual_seed(seed)
        if ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
            try:
                task.load_state_dict(state)
                optimizer.load_state_dict(state["optimizer"])
                history = list(state.get("history", []))
                start_epoch, start_step = int(state["epoch"]), int(state["step"])
                self.seconds_before = float(state.get("seconds", 0.0))
                if state.get("rng") is not None:
                    torch.set_rng_state(state["rng"])
                if state.get("rng_cuda") is not None and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(state["rng_cuda"])
                if state.get("scaler"):
                    scaler.load_state_dict(state["scaler"])
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise CheckpointError(f"{ckpt_path}: not a checkpoint of this stage ({type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
            self.bus.log(f"{task.name}: resuming at epoch {start_epoch + 1}, step {start_step}")

        steps = len(self.loader)
        n_params = sum(p.numel() for p in params)
        self.bus.emit(StageStarted(task.name, epochs, steps, start_epoch=start_epoch, parameters=n_params))
        log_every = max(1, steps // self.log_points)

        for epoch in range(start_epoch, epochs):
            epoch_lr = lr_at(lr, milestones, gamma, epoch)
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr * group.get("lr_scale", 1.0)
            task.begin_epoch(epoch, epochs)
            task.train_mode()
            t0 = time.perf_counter()
            sums: dict[str, torch.Tensor] = {}
            window: dict[str, torch.Tensor] = {}
            correct: torch.Tensor | float = 0.0
            seen = 0
            window_n = 0
            first_step = start_step if epoch == start_epoch else 0
            step = first_step
            for step, (x, y, idx) in enumerate(self.loader.epoch(epoch, start_step=first_step), start=first_step + 1):
                if self.control.paused:
                    self.bus.emit(Paused(task.name))
                    while self.control.paused:
                        self.control.wait_while_paused(0.2)
                    if not self.control.stop_requested:
                        self.bus.emit(Resumed(task.name))
                if self.control.stop_requested:
                    self._save(task, optimizer, scaler, history, epoch, step - 1)
                    raise StopRequested(f"stopped in {task.name} epoch {epoch + 1}")

                if self.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                                    enabled=autocast_dtype is not None):
                    result = task.step(x, y, idx)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(result.total).backward()
                scaler.step(optimizer)
                scaler.update()

                for name, value in {"total": result.total.detach(), **result.losses}.items():
                    window[name] = window.get(name, 0) + value.detach()
                correct = correct + result.correct.detach().float()  # stays on the device: no sync per step
                seen += y.shape[0]
                window_n += 1
                if step % log_every == 0 or step == steps:
                    # one device sync per log point; a NaN anywhere in the window shows up here
                    means = {k: float(v) / window_n for k, v in window.items()}
                    bad = [k for k, v in means.items() if not math.isfinite(v)]
                    if bad:
                        raise TrainingError(
                            f"{task.name}: the loss became {means[bad[0]]} ({', '.join(bad)}) at epoch {epoch + 1}, "
                            f"step {step}; the last good checkpoint is kept. Try a lower learning rate.", kind="nan")
                    for k, v in window.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    self.bus.emit(StepLosses(task.name, epoch + 1, step, steps, means, epoch_lr))
                    window, window_n = {}, 0

            task_eval = task.evaluate(epoch + 1)
            confusion = task_eval.pop("confusion", None)
            n_steps = max(1, steps - first_step)
            record = {
                "epoch": epoch + 1,
                "losses": {k: v / n_steps for k, v in sums.items()},
                "train_acc": 100.0 * float(correct) / max(1, seen),
                "test_acc": float(task_eval.pop("test_acc")),
                "lr": epoch_lr,
                "seconds": time.perf_counter() - t0,
                "metrics": task_eval,
            }
            history.append(record)
            self.bus.emit(EpochEnd(task.name, epoch + 1, epochs, record["losses"], record["train_acc"],
                                   record["test_acc"], epoch_lr, record["seconds"], metrics=task_eval))
            if confusion is not None:
                self.bus.emit(Evaluation(task.name, task.role, epoch + 1, record["test_acc"], list(self.classes),
                                         confusion))
            path = self._save(task, optimizer, scaler, history, epoch + 1, 0)
            self.bus.emit(CheckpointWritten(task.name, str(path), epoch + 1))
        return history

    @property
    def seconds(self) -> float:
        """Wall time of the stage so far, over every session (resumes included)."""
        return self.seconds_before + time.perf_counter() - self._t_start

    def _save(self, task: StageTask, optimizer, scaler, history, epoch: int, step: int) -> Path:
        state = stage_state(task, history, self.seconds,
                            epoch=epoch,  # epochs completed (or the epoch in progress when step > 0)
                            step=step,  # steps completed within that epoch
                            optimizer=optimizer.state_dict(), rng=torch.get_rng_state(),
                            rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
                            scaler=scaler.state_dict() if scaler.is_enabled() else None)
        return save_checkpoint(state, self.checkpoint_path(task))
