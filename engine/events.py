"""Typed events that the engine emits while it runs.

Events are frozen dataclasses of plain values (numbers, strings, lists, dicts), so they
are safe to hand across threads and are written one per line to ``metrics.jsonl``.
Every consumer (the CLI's progress printer, the metrics writer, the GUI's Qt adapter)
subscribes to the same stream.

The first event of a run is ``PlanReady``: the stages it will run (``"teacher"``,
``"heads"`` (self-analysis), ``"pretrain"``, ``"student"`` or ``"online"``, ``"evaluate"``,
``"export"``, ``"transfer"``), each with its amount of work. Training stages then report
``StageStarted``, ``StepLosses`` and ``EpochEnd``; evaluation and export report
``StageStarted`` and ``StageProgress``; every stage ends with ``StageFinished``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Event:
    time: float = field(default_factory=time.time, kw_only=True)
    #: the run's own clock when the event was emitted: seconds of this run's work over all its
    #: sessions (waiting for another run of its group and pauses left out); set by the run's bus
    elapsed: float | None = field(default=None, kw_only=True)

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.type, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class PlanReady(Event):
    """What the run will do, checked before the first step (``engine.plan.Plan.to_dict()``)."""

    plan: dict


@dataclass(frozen=True)
class RunStarted(Event):
    run_dir: str
    config: dict  # the resolved experiment config
    device: str  # the device the run uses, e.g. "cpu" or "cuda:0 (NVIDIA H100)"
    resumed: bool = False


@dataclass(frozen=True)
class DatasetInfo(Event):
    name: str
    classes: list
    train_size: int
    test_size: int
    input_shape: list  # [C, H, W]


@dataclass(frozen=True)
class StageStarted(Event):
    stage: str
    epochs: int
    steps_per_epoch: int
    start_epoch: int = 0  # > 0 when resumed
    parameters: int = 0  # trainable parameters of the stage
    start_step: int = 0  # > 0 when resumed in the middle of epoch start_epoch + 1 (its steps done before)


@dataclass(frozen=True)
class StepLosses(Event):
    stage: str
    epoch: int  # 1-based
    step: int  # 1-based within the epoch
    steps: int
    losses: dict  # name -> value (unweighted terms and "total")
    lr: float


@dataclass(frozen=True)
class StageProgress(Event):
    """Progress of a stage that does not train (evaluation batches, export formats)."""

    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class EpochEnd(Event):
    stage: str
    epoch: int  # 1-based
    epochs: int
    losses: dict  # name -> mean over the epoch
    train_acc: float  # percent
    test_acc: float  # percent (for "heads": the best head's accuracy this epoch)
    lr: float
    seconds: float
    metrics: dict = field(default_factory=dict)  # stage-specific extras, e.g. each head's accuracy


@dataclass(frozen=True)
class Evaluation(Event):
    """A full test evaluation with the counts needed for per-class accuracy and a confusion matrix."""

    stage: str
    model: str  # "teacher" or "student"
    epoch: int
    accuracy: float
    classes: list
    confusion: list  # confusion[true][predicted] counts


@dataclass(frozen=True)
class HeadAccuracies(Event):
    """Best test accuracy of each granularity head's decoded logits after self-analysis."""

    heads: list  # [{"dim": 64, "temperature": 2.0, "test_acc": 71.3, "epoch": 12}, ...]
    teacher_acc: float


@dataclass(frozen=True)
class NoiseCurve(Event):
    model: str  # "teacher" or "student"
    levels: list
    accuracies: list
    output_noise: float | None = None  # mean spread of the non-top probabilities on clean inputs


@dataclass(frozen=True)
class CheckpointWritten(Event):
    stage: str
    path: str
    epoch: int


@dataclass(frozen=True)
class StageFinished(Event):
    stage: str
    seconds: float
    result: dict


@dataclass(frozen=True)
class Log(Event):
    message: str
    level: str = "info"  # "info", "warning", "error"


@dataclass(frozen=True)
class Paused(Event):
    stage: str


@dataclass(frozen=True)
class Resumed(Event):
    stage: str


@dataclass(frozen=True)
class Exported(Event):
    files: dict  # format -> path


@dataclass(frozen=True)
class Progress(Event):
    """Where the driver stands over all the runs it drives (one run, a group training together,
    a whole comparison): decided by the engine, displayed as it is by the CLI and the studio."""

    fraction: float  # 0..1 of the expected work
    eta: float | None  # seconds of work left (None until the engine has timed some)
    stage: str  # the stage in progress ("student", ...)
    text: str  # e.g. "3 runs together · Student (4/6) · epoch 2/8 · step 9/23"
    runs: int = 1  # runs in progress together
    done_runs: int = 0  # runs of this driver that ended
    total_runs: int = 1


@dataclass(frozen=True)
class RunFinished(Event):
    run_dir: str
    summary: dict
    stopped: bool = False  # True when the user stopped the run before its end


@dataclass(frozen=True)
class RunFailed(Event):
    run_dir: str
    stage: str
    message: str
    kind: str  # "input" (bad input), "nan", "oom", "error"
    details: str = ""  # traceback, for the curious


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (PlanReady, RunStarted, DatasetInfo, StageStarted, StepLosses, StageProgress, EpochEnd, Evaluation, HeadAccuracies, NoiseCurve,
                CheckpointWritten, StageFinished, Log, Paused, Resumed, Exported, Progress, RunFinished, RunFailed)
}


def event_from_dict(data: dict) -> Event:
    """Rebuild an event from its ``to_dict()`` form (for reading ``metrics.jsonl``)."""
    data = dict(data)
    cls = EVENT_TYPES[data.pop("event")]
    return cls(**data)


Subscriber = Callable[[Event], None]


class EventBus:
    """Fans events out to subscribers; a failing subscriber is reported, not fatal (but see :meth:`emit`)."""

    def __init__(self, subscribers: list[Subscriber] | None = None, clock: Callable[[], float] | None = None):
        self.subscribers: list[Subscriber] = list(subscribers or [])
        self.clock = clock  # the run's own clock: stamps each event's ``elapsed``

    def subscribe(self, fn: Subscriber) -> None:
        self.subscribers.append(fn)

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every subscriber. A failing subscriber is logged, not fatal, unless
        its error has a true ``stops_run`` (the run folder cannot be written): that error is
        raised once every subscriber has had the event."""
        if self.clock is not None and event.elapsed is None:
            event = dataclasses.replace(event, elapsed=round(self.clock(), 3))
        stop: Exception | None = None
        for fn in list(self.subscribers):
            try:
                fn(event)
            except Exception as exc:  # a broken plot must not kill training
                if getattr(exc, "stops_run", False):
                    stop = stop or exc
                elif not isinstance(event, Log):
                    self.emit(Log(f"event subscriber {getattr(fn, '__name__', fn)!r} failed: {exc}", "warning"))
        if stop is not None:
            raise stop

    def log(self, message: str, level: str = "info") -> None:
        self.emit(Log(message, level))
