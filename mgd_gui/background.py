"""What the window looks up in the background when the set-up changes: the devices,
the data set's preview and class count, parameter counts, and whether a teacher
checkpoint fits the chosen architecture (refused at the field before a run starts);
for the model pickers, the catalogue of library models, the counts of a search's
matches, and whether training the chosen model fits the chosen device."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QTimer

from engine.config import ExperimentConfig
from mgd_gui import probes
from mgd_gui.model.queue_controller import comparison_folder
from mgd_gui.tasks import Tasks


# class count and channels of a data set before it is loaded (for parameter counts)
KNOWN_SHAPES = {"demo": (10, 1), "cifar10": (10, 3), "cifar100": (100, 3)}
# image side of a data set before it is loaded (for memory estimates)
KNOWN_SIZES = {"demo": 8, "cifar10": 32, "cifar100": 32}
PICKERS = ("teacher.arch", "student.arch")
DEBOUNCE_MS = 400


class Lookups(QObject):
    """The look-ups of one window, told only what they read and fill in: the form, the data
    preview, the model summaries, the device menu, the log, the runs folder and how many
    processes a run would have (a callable: the toolbar's choice)."""

    def __init__(self, parent: QObject, *, form, preview, summaries, devices, log, runs_root: Path,
                 processes: Callable[[], int]):
        super().__init__(parent)
        self.form, self.preview, self.summaries, self.devices = form, preview, tuple(summaries), devices
        self.log, self.runs_root, self.processes = log, Path(runs_root), processes
        self.jobs = Tasks(self, name="mgd-lookups")  # the newest question of a kind wins
        self.jobs.on_answer(self._done)
        self.started = False
        self.warm = False  # the engine's modules are imported (a run starts without an import pause)
        self.cfg: ExperimentConfig | None = None
        self.data_key: Any = None
        self.shape: tuple[int, int] | None = None  # (classes, channels) of the loaded data set
        self.image_size: int | None = None  # side of the models' input, from the loaded data set
        self.asked: dict[str, Any] = {}
        self.plan_error: str | None = None  # the field the engine's plan check marks
        self.plan_waiting = False  # a plan check of the current set-up is on its way
        self.plan_problem: tuple[str, str] | None = None  # the last answer of the plan check
        self.plan_listeners: list = []
        self.failed_setup: str | None = None  # the set-up a run refused at its field  # called once with the next plan answer (error or None)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self._look_up)
        self.counted_shape: tuple[int, int] | None = None  # the shape the pickers' counts are for
        for path in PICKERS:
            picker = self._picker(path)
            if picker is not None:
                picker.counts_wanted.connect(self._counts_wanted)

    def _picker(self, path: str):
        editor = self.form.editors().get(path)
        return editor if hasattr(editor, "set_catalog") else None

    def start(self) -> None:
        """Begin looking things up (the first job imports torch, in the background)."""
        if self.started:
            return
        self.started = True
        self.jobs.submit("devices", probes.probe_devices)
        self.jobs.submit("warm-up", probes.warm_up)
        self.jobs.submit("catalog", probes.model_catalog)
        self._look_up()

    def close(self) -> None:
        self.timer.stop()
        self.jobs.close()  # answers on their way are dropped; a look-up never holds the window open

    def config_changed(self, cfg: ExperimentConfig) -> None:
        from engine.config import to_dict

        self.cfg = cfg
        if self.failed_setup is not None and repr(to_dict(cfg)) != self.failed_setup:
            self.failed_setup = None  # the refused set-up was edited: the plan check judges it anew
            self._set_plan_error(None)
        self._update_device_error()
        self.update_comparison_error()
        if self.started:
            self.timer.start()

    def update_comparison_error(self) -> None:
        """A comparison is run by the studio's queue: say so at the field (no problem, Run stays on)."""
        cfg = self.cfg
        baselines = cfg.comparison.baselines if cfg is not None else []
        note = comparison_note(cfg, self.runs_root) if baselines else None
        if note and self.processes() > 1:
            note += (" With all GPUs chosen, the queue still trains each group in one process, on the first GPU "
                     "(the runs of a group share one teacher pass there).")
        self.form.set_note("comparison.baselines", note)

    # -- asking -------------------------------------------------------------------------
    def _shape(self) -> tuple[int, int]:
        if self.shape is not None:
            return self.shape
        return KNOWN_SHAPES.get(self.cfg.data.dataset if self.cfg else "demo", (10, 3))

    def _ask(self, kind: str, key: Any, fn, *args) -> None:
        if self.asked.get(kind) == key:
            return
        self.asked[kind] = key
        self.jobs.submit(kind, fn, *args)

    def _look_up(self) -> None:
        cfg = self.cfg
        if cfg is None:
            return
        d = cfg.data
        data_key = (d.dataset, d.root, d.image_size, d.test_fraction, d.download)
        if data_key != self.data_key:
            self.data_key = data_key
            self.shape = None
            self.preview.show_loading()
            self.jobs.submit("dataset", probes.dataset_overview,
                             {"dataset": d.dataset, "root": d.root, "image_size": d.image_size,
                              "test_fraction": d.test_fraction, "download": d.download})
        classes, channels = self._shape()
        if self.counted_shape != (classes, channels):
            self.counted_shape = (classes, channels)
            for path in PICKERS:
                picker = self._picker(path)
                if picker is not None:
                    picker.set_counts({}, reset=True)
        size = self.image_size or d.image_size or KNOWN_SIZES.get(d.dataset, 32)
        for role in ("teacher", "student"):
            arch = getattr(cfg, role).arch
            question = (arch, classes, channels, size, d.batch_size, cfg.device)
            self._ask(f"memory:{role}", question, probes.training_memory, *question)
        for role in ("teacher", "student"):
            arch = getattr(cfg, role).arch
            for summary in self.summaries:
                known = summary.counts.get(role)
                if not known or known[0] != arch:
                    summary.set_count(role, arch, None)
            self._ask(f"params:{role}", (arch, classes, channels), _count, role, arch, classes, channels)
        baseline = cfg.distiller.name
        if self.form.options_schema() is None:
            self._ask("options", baseline, _options, baseline)
        self._check_plan(cfg)

    def _check_plan(self, cfg: ExperimentConfig) -> None:
        """Ask the engine to plan the experiment (data, models, options, checkpoints, folders): its
        first problem is marked at its field and keeps Run off. Only a set-up that passes the
        form's own checks is planned."""
        from engine.config import to_dict, validation_errors

        form = self.form
        own = {p for p in form.errors() if p != self.plan_error}
        if own or validation_errors(cfg):
            self.asked.pop("plan", None)
            self.plan_waiting = False
            self._set_plan_error(None)
            self._answer_listeners(("", "fix the marked fields first"))
            return
        import copy

        processes = self.processes()
        key = repr(to_dict(cfg)) + f"|{processes}"
        if self.asked.get("plan") == key:
            if not self.plan_waiting and not self.timer.isActive():
                self._answer_listeners(self.plan_problem)  # already answered for this very set-up
            return
        self.plan_waiting = True
        self._ask("plan", key, probes.check_plan, copy.deepcopy(cfg), processes)

    def pending(self) -> bool:
        """True while the engine's check of the set-up shown in the form has not answered yet
        (an edit waiting for its debounce, or the check itself running)."""
        return self.started and (self.timer.isActive() or self.plan_waiting)

    def when_checked(self, callback) -> None:
        """Call ``callback(problem)`` once the pending plan check answers (``problem`` is None
        when the engine accepts the set-up, else ``(field, reason)``)."""
        self.plan_listeners.append(callback)

    def _answer_listeners(self, problem) -> None:
        listeners, self.plan_listeners = self.plan_listeners, []
        for callback in listeners:
            callback(problem)

    def mark_failure(self, field: str | None, reason: str) -> None:
        """A run refused by the engine for bad input marks the field at fault (until the set-up changes)."""
        from engine.config import to_dict

        self._set_plan_error((field or "", reason))
        self.failed_setup = repr(to_dict(self.form.config()))

    def _set_plan_error(self, found: tuple[str, str] | None) -> None:
        form = self.form
        if self.plan_error is not None:
            form.set_external_error(self.plan_error, None)
        self.plan_error = None
        self.plan_problem = found
        if found is not None:
            field, reason = found
            self.plan_error = field or "set-up"  # a problem of no one field shows above the form
            form.set_external_error(self.plan_error, reason)

    def _update_device_error(self) -> None:
        cfg = self.cfg
        combo = self.devices
        if cfg is None:
            return
        reason = None
        if not combo.available(cfg.device):
            reason = f"{cfg.device!r} is not available on this machine; choose auto, cpu or a GPU listed"
        self.form.set_external_error("device", reason)

    def _counts_wanted(self, path: str, names: list) -> None:
        """A picker's search lists models whose counts are not known yet: count them (newest search wins)."""
        classes, channels = self._shape()
        self.jobs.submit(f"counts:{path}", _counts, path, list(names), classes, channels)

    # -- answers ------------------------------------------------------------------------
    def _done(self, kind: str, token: int, result: Any, error: Any) -> None:
        if kind == "warm-up":
            self.warm = True
            return
        if kind == "devices":
            self.devices.set_found(result or [])
            if error is not None:
                self.log.add(f"Could not list the GPUs: {error}", "warning")
            if self.cfg is not None:
                self.devices.show_device(self.cfg.device)
            self._update_device_error()
            return
        if kind == "catalog":
            if error is not None:
                self.log.add(f"Could not list the torchvision and timm models: {error}", "warning")
                return
            for path in PICKERS:
                picker = self._picker(path)
                if picker is not None:
                    picker.set_catalog(result)
            return
        if kind == "dataset":
            if error is not None:
                self.preview.show_error(str(error))
                return
            if "pending_download" in result:
                self.preview.show_pending(result["pending_download"])
                return
            self.preview.show_overview(result)
            shape = (len(result["classes"]), int(result["in_channels"]))
            size = int(result["image_size"][0]) if result.get("image_size") else None
            if shape != self.shape or size != self.image_size:
                self.shape, self.image_size = shape, size
                self._look_up()
        elif kind.startswith("params:"):
            role, arch, count = result if result else (kind.split(":")[1], "", None)
            for summary in self.summaries:
                if arch:
                    summary.set_count(role, arch, count)
            picker = self._picker(f"{role}.arch")
            if picker is not None and arch and count is not None:
                picker.set_counts({arch: count})
        elif kind.startswith("counts:"):
            if error is None and result:
                path, counts = result
                picker = self._picker(path)
                if picker is not None:
                    picker.set_counts(counts)
        elif kind.startswith("memory:"):
            picker = self._picker(f"{kind.split(':', 1)[1]}.arch")
            if picker is None:
                return
            if error is not None or not result:
                picker.show_memory("", False)  # a model the engine refuses: its field says why
                return
            from mgd_gui.setup.model_picker import memory_text

            picker.show_memory(*memory_text(result["arch"], result["estimate"], result["capacity"], result["device"],
                                            result["image_size"], result["batch_size"]))
        elif kind == "options":
            if error is None and self.cfg is not None:
                self.form.set_options_schema(*result)
                self._check_plan(self.cfg)
        elif kind == "plan":
            self.plan_waiting = False
            problem = ("", f"the engine could not check the set-up: {error}") if error is not None else result
            self._set_plan_error(problem)
            if not self.timer.isActive():  # else another edit is on its way: wait for its answer
                self._answer_listeners(problem)


def _quote(path: Path | str) -> str:
    text = str(path)
    return f'"{text}"' if any(c.isspace() for c in text) or not text else text


def comparison_note(cfg: ExperimentConfig, runs_root: Path) -> str:
    """What Run does with a comparison: queue its runs (how many, where)."""
    from engine.jobs import comparison_jobs, comparison_pairs

    c = cfg.comparison
    total = len(comparison_jobs(cfg))
    pairs = len(comparison_pairs(cfg))
    per_group = total // max(1, len(c.seeds) * pairs)
    groups = f"{per_group} per pair and seed × {pairs} pairs × " if pairs > 1 else f"{per_group} per seed × "
    return (f"Run queues the comparison: {total} runs ({groups}{len(c.seeds)} seed"
            f"{'s' if len(c.seeds) != 1 else ''}) in the Queue panel, the runs of each pair and seed together "
            f"(their students in lockstep, one teacher pass per batch), the teacher and its heads trained once "
            f"per seed, into {comparison_folder(cfg, runs_root)}. "
            f"The same runs from a terminal: mgd-train FILE.yaml --out {_quote(comparison_folder(cfg, runs_root))}")


def _count(role: str, arch: str, classes: int, channels: int) -> tuple[str, str, int]:
    return role, arch, probes.parameter_count(arch, classes, channels)


def _options(baseline: str) -> tuple[str, type]:
    return baseline, probes.distiller_options(baseline)


def _counts(path: str, names: list[str], classes: int, channels: int) -> tuple[str, dict]:
    return path, probes.parameter_counts(names, classes, channels)
