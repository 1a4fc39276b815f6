"""The one training loop shared by every stage.

Stages differ in what they optimise, not in how they loop: each stage is a
:class:`StageTask` (its modules, one training step, its evaluation, how it keeps its
best weights) and :class:`Trainer` does the rest: SGD with step decay, pause and stop,
NaN detection, events, and a checkpoint written atomically after every epoch (and on
stop) from which ``resume`` continues exactly.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.control import RunControl
from engine.errors import CheckpointError, StopRequested, TrainingError
from engine.events import CheckpointWritten, EpochEnd, Evaluation, EventBus, Paused, Resumed, StageStarted, StepLosses

# ----------------------------------------------------------------------------- checkpoints


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def safe_load(path: str | Path) -> Any:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state dict (for 'best weights' snapshots)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


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
    """What a stage optimises. Subclasses implement the methods below."""

    name: str = "stage"
    role: str = ""  # the model the stage trains ("teacher", "student"), for Evaluation events

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

    def extra_state(self) -> dict[str, Any]:
        """Anything besides module weights to checkpoint (best accuracies, best weights)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


# ----------------------------------------------------------------------------- trainer


class Trainer:
    """Runs a :class:`StageTask` for a schedule, with events, checkpoints and control."""

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
            milestones: list[int], gamma: float) -> list[dict]:
        """Train ``task`` (resuming from its last checkpoint if one exists); returns the epoch history."""
        groups = param_groups(task.parameters())
        params = [p for g in groups for p in g["params"]]
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
        device_type = params[0].device.type if params else "cpu"
        autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        scaler = torch.amp.GradScaler(device_type, enabled=self.precision == "fp16")
        history: list[dict] = []
        start_epoch, start_step = 0, 0
        ckpt_path = self.checkpoint_path(task)
        if ckpt_path.exists():
            state = safe_load(ckpt_path)
            for key, module in task.modules().items():
                module.load_state_dict(state["modules"][key])
            optimizer.load_state_dict(state["optimizer"])
            task.load_extra_state(state.get("extra", {}))
            history = list(state.get("history", []))
            start_epoch, start_step = int(state["epoch"]), int(state["step"])
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
                    self._save(task, optimizer, history, epoch, step - 1)
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
            path = self._save(task, optimizer, history, epoch + 1, 0)
            self.bus.emit(CheckpointWritten(task.name, str(path), epoch + 1))
        return history

    def _save(self, task: StageTask, optimizer, history, epoch: int, step: int) -> Path:
        state = {
            "stage": task.name,
            "epoch": epoch,  # epochs completed (or the epoch in progress when step > 0)
            "step": step,  # steps completed within that epoch
            "modules": {k: m.state_dict() for k, m in task.modules().items()},
            "optimizer": optimizer.state_dict(),
            "extra": task.extra_state(),
            "history": history,
        }
        return atomic_save(state, self.checkpoint_path(task))
