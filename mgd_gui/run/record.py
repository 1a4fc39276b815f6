"""The data of one run, collected from its events (live, or read back from metrics.jsonl).

No Qt here: the plots draw from a :class:`RunRecord`, and the same record serves a live
run (events arriving from the worker thread) and a finished run reopened from its folder.
Events are handled as plain dicts (``event.to_dict()`` / one line of metrics.jsonl).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STAGES = ("teacher", "heads", "student")


class Series:
    """Points over a stage, each with three possible x values: the epoch (fractional within an
    epoch), the stage's step count and the run's wall time in seconds. A point whose epoch is not
    after the last one replaces the tail (a resumed run logs the interrupted epoch again)."""

    __slots__ = ("x", "y", "step", "time")

    def __init__(self) -> None:
        self.x: list[float] = []
        self.y: list[float] = []
        self.step: list[float] = []
        self.time: list[float] = []

    def add(self, x: float, y: float, step: float | None = None, time: float | None = None) -> None:
        if self.x and x <= self.x[-1]:
            while self.x and self.x[-1] >= x:
                self.x.pop()
                self.y.pop()
                self.step.pop()
                self.time.pop()
        self.x.append(float(x))
        self.y.append(float(y))
        self.step.append(float(step) if step is not None else float(x))
        self.time.append(float(time) if time is not None else float("nan"))

    def xs(self, axis: str = "epoch") -> list[float]:
        """The x values for ``axis``: ``epoch``, ``step`` or ``time`` (wall seconds)."""
        return {"step": self.step, "time": self.time}.get(axis, self.x)

    def __len__(self) -> int:
        return len(self.x)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    return float(value) if isinstance(value, (int, float)) else None


class RunRecord:
    """Everything the plots show about one run."""

    def __init__(self, run_dir: str | Path | None = None, label: str = ""):
        self.run_dir = Path(run_dir) if run_dir else None
        self.label = label or (self.run_dir.name if self.run_dir else "run")
        self.version = 0  # bumped on every change; plots redraw when it moves
        self.config: dict = {}
        self.device = ""
        self.dataset: dict = {}
        self.classes: list[str] = []
        self.status = "new"
        self.summary: dict = {}
        self.failure: dict = {}
        self.stage_info: dict[str, dict] = {}
        self.step_losses: dict[str, dict[str, Series]] = {}  # stage -> loss name -> series over epochs
        self.epoch_losses: dict[str, dict[str, Series]] = {}
        self.accuracy: dict[str, dict[str, Series]] = {}  # stage -> "train"/"test"/metric -> series
        self.evaluations: dict[str, dict] = {}  # model -> latest evaluation
        self.heads: list[dict] = []
        self.teacher_acc: float | None = None
        self.noise: dict[str, tuple[list[float], list[float]]] = {}
        self.log: list[tuple[str, str]] = []  # (level, message)
        self.position: dict[str, Any] = {}  # stage, epoch, epochs, step, steps of the latest step
        self.plan: dict = {}  # the engine's plan (PlanReady): which stages this run has
        # wall time of the run, sessions and pauses left out: offset + (event time - session start)
        self._clock_offset = 0.0
        self._session_start: float | None = None
        self._last_seconds = 0.0
        self._paused_at: float | None = None

    # -- building -------------------------------------------------------------------
    @classmethod
    def from_events(cls, events: list[dict], run_dir: str | Path | None = None, label: str = "") -> "RunRecord":
        record = cls(run_dir, label)
        for event in events:
            record.feed(event)
        return record

    def feed(self, event: dict) -> None:
        handler = getattr(self, "_on_" + str(event.get("event")), None)
        if handler is not None:
            handler(event)
            self.version += 1

    def seconds(self, e: dict) -> float | None:
        """The run's wall time at event ``e``: the run's own clock the engine stamps on each event
        (``elapsed``: seconds of this run's work over its sessions; waiting for another run of its
        group and pauses left out). For an event without it (older run folders): the time since
        the session's first event, the gaps between sessions and the pauses left out. None for an
        event without a time."""
        elapsed = _number(e.get("elapsed"))
        if elapsed is not None:
            self._last_seconds = max(self._last_seconds, elapsed)
            return elapsed
        t = e.get("time")
        if not isinstance(t, (int, float)):
            return None
        if self._session_start is None:
            self._session_start = float(t)
        value = self._clock_offset + float(t) - self._session_start
        self._last_seconds = max(self._last_seconds, value)
        return value

    def _steps(self, stage: str) -> int:
        return int(self.stage_info.get(stage, {}).get("steps_per_epoch") or 0) or 1

    def has_stage(self, stage: str) -> bool | None:
        """Whether the run's plan has ``stage`` (None when the plan is not known)."""
        stages = self.plan.get("stages") if self.plan else None
        if not stages:
            return None
        return any(s.get("name") == stage for s in stages)

    # -- handlers -------------------------------------------------------------------
    def _on_PlanReady(self, e: dict) -> None:
        self.plan = e.get("plan") or {}
        # a new session (a resumed run plans again): its clock continues where the last one stopped
        self._clock_offset = self._last_seconds
        self._session_start = e.get("time") if isinstance(e.get("time"), (int, float)) else None
        self._paused_at = None

    def _on_RunStarted(self, e: dict) -> None:
        if not self.plan:  # a run without a PlanReady event (older runs) starts its clock here
            self._clock_offset = self._last_seconds
            self._session_start = e.get("time") if isinstance(e.get("time"), (int, float)) else None
        self.config = e.get("config") or {}
        self.device = e.get("device", "")
        self.status = "running"
        if e.get("run_dir") and self.run_dir is None:
            self.run_dir = Path(e["run_dir"])
        if not self.label or self.label == "run":
            self.label = self.config.get("name") or self.label

    def _on_DatasetInfo(self, e: dict) -> None:
        self.dataset = {k: e.get(k) for k in ("name", "train_size", "test_size", "input_shape")}
        self.classes = [str(c) for c in e.get("classes") or []]

    def _on_StageStarted(self, e: dict) -> None:
        self.stage_info[e["stage"]] = {k: e.get(k) for k in ("epochs", "steps_per_epoch", "start_epoch", "parameters")}
        self.position = {"stage": e["stage"], "epoch": e.get("start_epoch", 0), "epochs": e.get("epochs", 0),
                         "step": 0, "steps": e.get("steps_per_epoch", 0)}

    def _on_StepLosses(self, e: dict) -> None:
        stage, steps = e["stage"], max(1, int(e.get("steps") or 1))
        x = (int(e["epoch"]) - 1) + int(e["step"]) / steps
        step = (int(e["epoch"]) - 1) * steps + int(e["step"])
        t = self.seconds(e)
        table = self.step_losses.setdefault(stage, {})
        for name, value in (e.get("losses") or {}).items():
            v = _number(value)
            if v is not None:
                table.setdefault(name, Series()).add(x, v, step, t)
        self.position = {"stage": stage, "epoch": e["epoch"], "epochs": self.stage_info.get(stage, {}).get("epochs"),
                         "step": e["step"], "steps": steps}

    def _on_EpochEnd(self, e: dict) -> None:
        stage, epoch = e["stage"], float(e["epoch"])
        step, t = epoch * self._steps(stage), self.seconds(e)
        table = self.epoch_losses.setdefault(stage, {})
        for name, value in (e.get("losses") or {}).items():
            v = _number(value)
            if v is not None:
                table.setdefault(name, Series()).add(epoch, v, step, t)
        acc = self.accuracy.setdefault(stage, {})
        for key in ("train_acc", "test_acc"):
            v = _number(e.get(key))
            if v is not None:
                acc.setdefault(key.split("_")[0], Series()).add(epoch, v, step, t)
        for name, value in (e.get("metrics") or {}).items():  # e.g. each head's accuracy
            v = _number(value)
            if v is not None:
                acc.setdefault(name, Series()).add(epoch, v, step, t)

    def _on_Evaluation(self, e: dict) -> None:
        self.evaluations[e.get("model") or e.get("stage")] = {
            "stage": e.get("stage"), "epoch": e.get("epoch"), "accuracy": e.get("accuracy"),
            "classes": [str(c) for c in e.get("classes") or self.classes], "confusion": e.get("confusion") or []}

    def _on_HeadAccuracies(self, e: dict) -> None:
        self.heads = list(e.get("heads") or [])
        self.teacher_acc = _number(e.get("teacher_acc"))

    def _on_NoiseCurve(self, e: dict) -> None:
        self.noise[e["model"]] = ([float(v) for v in e.get("levels") or []],
                                  [float(v) for v in e.get("accuracies") or []])

    def _on_Log(self, e: dict) -> None:
        self.log.append((e.get("level", "info"), str(e.get("message", ""))))

    def _on_Paused(self, e: dict) -> None:
        self.status = "paused"
        self._paused_at = e.get("time") if isinstance(e.get("time"), (int, float)) else None

    def _on_Resumed(self, e: dict) -> None:
        self.status = "running"
        t = e.get("time")
        if self._paused_at is not None and isinstance(t, (int, float)):
            self._clock_offset -= float(t) - self._paused_at  # the pause is no training time
        self._paused_at = None

    def _on_RunFinished(self, e: dict) -> None:
        self.summary = e.get("summary") or {}
        self.status = "stopped" if e.get("stopped") else "finished"

    def _on_RunFailed(self, e: dict) -> None:
        self.failure = {k: e.get(k) for k in ("stage", "message", "kind", "details", "run_dir")}
        self.status = "failed"

    # -- queries ----------------------------------------------------------------------
    def stages_with(self, table: dict) -> list[str]:
        return [s for s in STAGES if table.get(s)] + [s for s in table if s not in STAGES and table[s]]

    def loss_names(self, stage: str) -> list[str]:
        names = list(self.step_losses.get(stage, {}))
        names += [n for n in self.epoch_losses.get(stage, {}) if n not in names]
        return names

    def has_data(self) -> bool:
        return bool(self.step_losses or self.epoch_losses or self.evaluations or self.noise or self.heads)
