"""Progress over the whole run (every stage) with an ETA, and its status-bar widget."""

from __future__ import annotations

import time

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

STAGE_NAMES = {"teacher": "Teacher", "heads": "Self-analysis", "student": "Student"}


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressModel:
    """Counts steps over all the stages the config will run; pure logic, no Qt.

    ``plan`` maps each stage that will train to its number of epochs (a loaded teacher
    and MGD mode off skip stages). The ETA is the remaining steps at the rate measured
    in this session, with paused time left out.
    """

    def __init__(self, plan: dict[str, int], clock=time.monotonic):
        self.plan = {s: int(e) for s, e in plan.items() if e > 0}
        self.clock = clock
        self.steps_per_epoch = 0
        self.stage = ""
        self.epoch = 0
        self.step = 0
        self.start_done: float | None = None
        self.active_seconds = 0.0
        self._since: float | None = None
        self.finished_stages: set[str] = set()

    @staticmethod
    def plan_from_config(cfg: dict) -> dict[str, int]:
        plan = {}
        if not (cfg.get("teacher") or {}).get("checkpoint"):
            plan["teacher"] = (cfg.get("teacher") or {}).get("schedule", {}).get("epochs", 0)
        if (cfg.get("granularity") or {}).get("mode", "off") != "off":
            plan["heads"] = (cfg.get("granularity") or {}).get("schedule", {}).get("epochs", 0)
        plan["student"] = (cfg.get("student") or {}).get("schedule", {}).get("epochs", 0)
        return plan

    def total_steps(self) -> int:
        return sum(self.plan.values()) * self.steps_per_epoch

    def done_steps(self) -> float:
        done = 0
        for stage, epochs in self.plan.items():
            if stage == self.stage:
                done += (max(0, self.epoch - 1)) * self.steps_per_epoch + self.step
                break
            done += epochs * self.steps_per_epoch
        return done

    def fraction(self) -> float:
        total = self.total_steps()
        return min(1.0, self.done_steps() / total) if total else 0.0

    def _tick(self) -> None:
        now = self.clock()
        if self._since is not None:
            self.active_seconds += now - self._since
        self._since = now

    def stage_started(self, stage: str, steps_per_epoch: int, start_epoch: int) -> None:
        self._tick()
        self.stage, self.epoch, self.step = stage, start_epoch + 1, 0
        self.steps_per_epoch = steps_per_epoch or self.steps_per_epoch
        if self.start_done is None:
            self.start_done = self.done_steps()

    def step_done(self, stage: str, epoch: int, step: int, steps: int) -> None:
        self._tick()
        self.stage, self.epoch, self.step = stage, epoch, step
        self.steps_per_epoch = steps or self.steps_per_epoch
        if self.start_done is None:
            self.start_done = self.done_steps() - step

    def paused(self) -> None:
        self._tick()
        self._since = None

    def resumed(self) -> None:
        self._since = self.clock()

    def eta(self) -> float | None:
        if self.start_done is None:
            return None
        done_now = self.done_steps() - self.start_done
        if done_now <= 0 or self.active_seconds <= 0:
            return None
        rate = done_now / self.active_seconds
        return max(0.0, (self.total_steps() - self.done_steps()) / rate)

    def text(self) -> str:
        if not self.stage:
            return "Starting…"
        epochs = self.plan.get(self.stage, 0)
        parts = [STAGE_NAMES.get(self.stage, self.stage), f"epoch {self.epoch}/{epochs}"]
        if self.steps_per_epoch:
            parts.append(f"step {self.step}/{self.steps_per_epoch}")
        eta = self.eta()
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        return " · ".join(parts)


class ProgressWidget(QWidget):
    """Stage, epoch, step and ETA as text, and a bar over the whole run."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        self.label = QLabel("Ready")
        self.label.setMinimumWidth(330)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setFixedWidth(260)
        self.bar.setFormat("%p%")
        self.bar.setTextVisible(True)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        self.model: ProgressModel | None = None

    def begin(self, model: ProgressModel) -> None:
        self.model = model
        self.bar.setValue(0)
        self.label.setText("Starting…")

    def refresh(self) -> None:
        if self.model is not None:
            self.bar.setValue(int(1000 * self.model.fraction()))
            self.label.setText(self.model.text())

    def end(self, text: str, complete: bool) -> None:
        if complete:
            self.bar.setValue(1000)
        self.label.setText(text)
        self.model = None

    def set_text(self, text: str) -> None:
        self.label.setText(text)
