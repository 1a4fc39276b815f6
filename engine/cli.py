"""``mgd-train``: run an experiment from a YAML file, headless.

Exit status: 0 success (or stopped on request, with a resumable checkpoint),
2 bad input (one line naming the problem), 1 failure during training.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from engine.errors import InputError, MGDError, ProcessFailed, TrainingError
from engine.plan import format_duration

EXIT_OK, EXIT_TRAINING, EXIT_INPUT = 0, 1, 2


class ProgressPrinter:
    """Prints a progress bar over the whole run (from its plan) with ETA on a terminal, one line
    per epoch elsewhere (logs, CI)."""

    def __init__(self, stream: TextIO = sys.stderr, quiet: bool = False):
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.progress: dict = {}  # the engine's latest Progress figures (fraction, eta, text)
        self._bar_shown = False

    def _line(self, text: str) -> None:
        if self._bar_shown:
            self.stream.write("\r\033[K")
            self._bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _bar(self, loss: float | None = None) -> None:
        from engine.progress import describe

        frac = float(self.progress.get("fraction") or 0.0)
        width = 24
        filled = int(frac * width)
        text = f"[{'#' * filled}{'.' * (width - filled)}] {100 * frac:5.1f}% {describe(self.progress)}"
        if loss is not None:
            text += f" · loss {loss:.4f}"
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self._bar_shown = True

    def __call__(self, event) -> None:
        kind = event.type
        if kind == "Progress":
            self.progress = {"fraction": event.fraction, "eta": event.eta, "text": event.text}
            return
        if kind == "PlanReady" and not self.quiet:
            from engine.plan import Plan

            plan = Plan.from_dict(event.plan)
            stages = " -> ".join(s.name + (f" ({s.epochs} epochs)" if s.action == "train" else "")
                                 + (" [done]" if s.done else "") for s in plan.stages)
            self._line(f"plan: {stages}")
        elif kind == "StageStarted" and not self.quiet:
            if event.parameters:
                self._line(f"== {event.stage}: {event.epochs} epochs x {event.steps_per_epoch} steps, "
                           f"{event.parameters:,} trainable parameters")
            else:
                self._line(f"== {event.stage}")
        elif kind in ("StepLosses", "StageProgress") and self.tty and not self.quiet:
            self._bar(event.losses.get("total") if kind == "StepLosses" else None)
        elif kind == "EpochEnd" and not self.quiet:
            eta = self.progress.get("eta")
            self._line(f"{event.stage:<8} epoch {event.epoch:>3}/{event.epochs}  loss {event.losses.get('total', 0):.4f}  "
                       f"train {event.train_acc:6.2f}%  test {event.test_acc:6.2f}%  lr {event.lr:.4g}  "
                       f"{event.seconds:.1f}s" + (f"  run ETA {format_duration(eta)}" if eta is not None else ""))
        elif kind == "HeadAccuracies" and not self.quiet:
            heads = ", ".join(f"(d={h['dim']}, T={h['temperature']:g}) {h['test_acc']:.2f}%" for h in event.heads)
            self._line(f"heads: {heads}; teacher {event.teacher_acc:.2f}%")
        elif kind == "NoiseCurve" and not self.quiet:
            pts = ", ".join(f"{lv:g}: {acc:.1f}%" for lv, acc in zip(event.levels, event.accuracies))
            self._line(f"{event.model} noise robustness: {pts}")
        elif kind == "Log":
            if not self.quiet or event.level != "info":
                self._line(f"[{event.level}] {event.message}")
        elif kind == "Exported" and not self.quiet:
            for fmt, path in event.files.items():
                self._line(f"exported {fmt}: {path}")
        elif kind == "RunStarted" and not self.quiet:
            self._line(f"run folder: {event.run_dir}\ndevice: {event.device}")
        elif kind == "DatasetInfo" and not self.quiet:
            self._line(f"data: {event.name}, {len(event.classes)} classes, {event.train_size} train / "
                       f"{event.test_size} test images of shape {tuple(event.input_shape)}")


class SignalStop:
    """The handler of Ctrl-C and SIGTERM: the first this process receives stops the run cleanly
    after the step, with a checkpoint; a second aborts. A stop that another process of the group
    asked for (and that reached this one through the run's control) is not a signal of this
    process's own: the parent-death SIGTERM that follows it must not abort a checkpoint write."""

    def __init__(self, control, stream: TextIO | None = None):
        self.control, self.stream, self.received = control, stream, 0

    def __call__(self, signum, frame=None) -> None:
        self.received += 1
        if self.received > 1:
            raise KeyboardInterrupt
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        (self.stream or sys.stderr).write(f"\n{what}: stopping after this step ({what} again to abort)...\n")
        self.control.stop()

    def launcher_died(self, signum, frame=None) -> None:
        """The parent-death signal of a process of ``--nproc N``: stop after the step, however often
        it comes (the kernel sends it once for each thread of the dying launcher it passes to)."""
        if not self.control.stop_requested:
            (self.stream or sys.stderr).write("\nthe launcher died: stopping after this step...\n")
        self.control.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mgd-train",
        description="Train a teacher, its granularity heads and a distilled student (multi-granularity "
                    "distillation) from a YAML experiment.")
    p.add_argument("config", nargs="?", help="experiment YAML file (see resources/presets/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set student.schedule.epochs=5 (repeatable)")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder (default: runs/<date>-<name>)")
    p.add_argument("--runs-root", default="runs", metavar="DIR", help="where new run folders go (default: runs)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--plan", action="store_true",
                   help="check the experiment (data, models, options, checkpoints, folders) and print what the run "
                        "would do, without training")
    p.add_argument("--list-models", action="store_true", help="list the architectures and exit")
    p.add_argument("--list-distillers", action="store_true", help="list the baseline distillers and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="print only warnings, errors and the result")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train with N processes (one per GPU, or CPU processes), each on its part of every batch; "
                        "started through torchrun")
    return p


def _load(args) -> object:
    """The experiment of CONFIG and its --set values, validated (not resolved: a comparison
    resolves each run for its own pair); InputError for anything wrong with them."""
    from engine.config import apply_override, load_config, validate

    if args.config is None:
        raise InputError("give an experiment YAML file (for example resources/presets/demo.yaml) or --resume RUN_DIR")
    with _reading(args.config):
        cfg = load_config(args.config)
        for assignment in args.overrides:
            cfg = apply_override(cfg, assignment)
        validate(cfg)
    return cfg


def _load_run_config(run_dir: str) -> object:
    """The resolved config a run folder's run uses (``--resume RUN --print-config``)."""
    from engine.config import load_config, resolve_valid
    from engine.runfolder import CONFIG_FILE

    path = Path(run_dir, CONFIG_FILE)
    if not path.is_file():
        raise InputError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")
    with _reading(path):
        return resolve_valid(load_config(path))


def one_line(text: str) -> str:
    """``text`` on one printable line: control characters (a newline in a key) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@contextmanager
def _reading(source):
    """Around reading and checking a config nothing has started: whatever fails there is the
    file's or the --set value's to fix, so it is a refusal (exit 2) naming the file, never a
    traceback."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        detail = (str(exc).splitlines() or ["no detail"])[0][:200]
        raise InputError(f"{source}: cannot be read as an experiment ({type(exc).__name__}: {detail})") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "inspect":  # `mgd-train inspect RUN_DIR ...`: its own parser (engine.inspect.cli)
        from engine.inspect.cli import main as inspect_main

        return inspect_main(argv[1:])
    from engine.launch import die_with_launcher

    die_with_launcher()  # a process of `--nproc N`: it ends with its launcher
    args = build_parser().parse_args(argv)
    out = sys.stdout
    try:
        if args.list_models:
            from engine.models import MODELS

            for name, entry in MODELS.entries().items():
                out.write(f"{name:<14} {entry.description}\n")
            from engine.models.sources import describe_sources

            out.write(describe_sources())
            return EXIT_OK
        if args.list_distillers:
            from engine.distillers import DISTILLERS

            for name, entry in DISTILLERS.entries().items():
                out.write(f"{name:<8} {entry.description}\n")
            return EXIT_OK
        if args.resume:
            if args.config or args.overrides:
                raise InputError("--resume takes the run folder's own config; drop CONFIG and --set")
            cfg = None
        else:
            cfg = _load(args)
        if args.print_config:  # exactly the values the run will use: resolved, model-dependent defaults filled
            from engine.config import dumps_config, resolve_valid

            with _reading(args.resume or args.config):
                resolved = _load_run_config(args.resume) if cfg is None else resolve_valid(cfg)
                text = dumps_config(resolved)
            out.write(text)
            return EXIT_OK
        if args.plan:
            from engine.run import plan_experiment, prepare_run

            if cfg is None:
                cfg, _ = prepare_run(None, args.resume, args.runs_root, resume=True)
                out.write(plan_experiment(cfg, args.resume, estimate=True).describe() + "\n")
            elif cfg.comparison.baselines:
                _print_comparison_plan(cfg, out)
            else:
                out.write(plan_experiment(cfg, args.out, estimate=True).describe() + "\n")
            return EXIT_OK

        if args.nproc > 1:
            return _launch(args, cfg)
        from engine.strategy import current_strategy

        strategy = current_strategy()
        if not strategy.is_writer:  # the other processes of a several-process run: quiet
            args.quiet, out = True, open(os.devnull, "w")
        from engine.control import RunControl
        from engine.run import run_experiment

        control = RunControl()

        on_signal = SignalStop(control)
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        from engine.launch import PARENT_DEATH_SIGNAL, launched

        if launched() and PARENT_DEATH_SIGNAL not in previous:
            previous[PARENT_DEATH_SIGNAL] = signal.signal(PARENT_DEATH_SIGNAL, on_signal.launcher_died)
        try:
            printer = ProgressPrinter(sys.stderr if strategy.is_writer else out, quiet=args.quiet)
            if cfg is not None and cfg.comparison.baselines:
                if strategy.processes > 1:  # started by torchrun: each process would run every job
                    raise InputError("comparisons run in one process (their students train in lockstep); start "
                                     "mgd-train CONFIG without torchrun, or drop comparison.baselines")
                from engine.compare import to_markdown
                from engine.comparison import run_comparison
                from engine.runtime import default_run_dir

                folder = Path(args.out) if args.out else default_run_dir(cfg, args.runs_root)
                table = run_comparison(cfg, folder, subscribers=[printer], control=control)
                out.write(to_markdown(table))
                out.write(f"tables: {table['files']['markdown']}, {table['files']['csv']}\n")
                if not table["complete"]:
                    out.write(f"incomplete: run the same command with --out {folder} to continue\n")
                return EXIT_OK
            summary = run_experiment(cfg, run_dir=args.resume or args.out, runs_root=args.runs_root,
                                     subscribers=[printer], control=control, resume=bool(args.resume))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            strategy.finish()
        _print_result(summary, out)
        return EXIT_OK
    except InputError as exc:
        return _ended(EXIT_INPUT, "error", one_line(str(exc)), "input", getattr(exc, "field", None))
    except TrainingError as exc:
        return _ended(EXIT_TRAINING, "training failed", str(exc), exc.kind)
    except MGDError as exc:
        return _ended(EXIT_TRAINING, "error", str(exc), "error")
    except KeyboardInterrupt:
        return _ended(130, "aborted", "", "interrupted")
    except Exception as exc:  # a bug or an unforeseen failure: short message, details in the run folder
        return _ended(EXIT_TRAINING, "training failed", f"{type(exc).__name__}: {exc}", "error",
                      note=" (the traceback is in the run folder's error.log)")


def _ended(code: int, what: str, message: str, kind: str, field: str | None = None, note: str = "") -> int:
    """The end of a failed ``mgd-train``: one line on standard error; in a process of ``--nproc N``
    its failure record instead (the launcher tells the failure of the process that failed first).
    A failure the run itself recorded (with its stage) is in the record already."""
    import traceback

    from engine.launch import note_failure

    if not note_failure("setup", message or what, kind, traceback.format_exc(), field):
        sys.stderr.write(f"mgd-train: {what}{': ' + message if message else ''}{note}\n")
    return code


def _launch(args, cfg) -> int:
    """``--nproc N``: the run as N processes (:func:`engine.processes.run_processes`: the experiment
    checked here first, bad input exits 2 before anything starts); one line when one of them
    failed (which, and why), also recorded in the run's summary."""
    from engine.processes import run_processes

    def started(event) -> None:
        if event.type == "RunStarted":
            sys.stderr.write(f"mgd-train: {args.nproc} processes, run folder {event.run_dir}\n")

    try:
        summary = run_processes(cfg, args.nproc, run_dir=args.resume or args.out, runs_root=args.runs_root,
                                resume=bool(args.resume), subscribers=[started], quiet=args.quiet)
    except ProcessFailed as exc:  # which process failed first and why (the others were stopped)
        sys.stderr.write(f"mgd-train: training failed: {exc}; resume with: "
                         f"mgd-train --resume {exc.run_dir} --nproc {args.nproc}\n")
        return EXIT_TRAINING
    if summary.get("status") == "stopped":
        sys.stderr.write(f"mgd-train: stopped in the {summary.get('stopped_in')} stage; resume with: "
                         f"mgd-train --resume {summary['run_dir']} --nproc {args.nproc}\n")
        return EXIT_OK
    _print_result(summary, sys.stdout)
    return EXIT_OK


def _print_comparison_plan(cfg, out: TextIO) -> None:
    from engine.comparison import estimate_comparison
    from engine.jobs import comparison_pairs

    est = estimate_comparison(cfg)
    c = cfg.comparison
    pairs = ", ".join(f"{t} -> {s}" for t, s in comparison_pairs(cfg))
    out.write(f"comparison {cfg.name!r}: {len(est['jobs'])} runs (pairs {pairs}; baselines "
              f"{', '.join(c.baselines)}; modes {', '.join(c.modes)}; seeds {', '.join(map(str, c.seeds))}"
              f"{'; the student alone' if c.student_alone else ''})\n")
    for job in est["jobs"]:
        out.write(f"  {job['run']:<40} about {format_duration(job['seconds'])}\n")
    out.write(f"expected run time on this machine: about {format_duration(est['total'])} "
              f"({est['total'] / 3600:.1f} hours; each teacher and its heads trained once per seed)\n")


def _print_result(summary: dict, out: TextIO) -> None:
    status = summary.get("status")
    t, s = summary.get("teacher", {}), summary.get("student", {})
    if status == "stopped":
        out.write(f"stopped in the {summary.get('stopped_in')} stage; resume with: "
                  f"mgd-train --resume {summary['run_dir']}\n")
        return
    def pct(value) -> str:
        return f"{value:.2f}%" if isinstance(value, (int, float)) else "-"

    lines = [f"run folder: {summary['run_dir']}"]
    if t.get("arch"):
        lines.append(f"teacher {t['arch']}: {pct(t.get('test_acc'))}")
    for i, h in enumerate(summary.get("heads", [])):
        lines.append(f"head {i + 1} (d={h['dim']}, T={h['temperature']:g}): {pct(h['test_acc'])}")
    for i, p in enumerate(summary.get("peers", [])):
        lines.append(f"peer {i + 1} {p['arch']}: final {pct(p['test_acc'])}, best {pct(p['best_acc'])}")
    lines.append(f"student {s.get('arch')} ({summary.get('distiller')}, MGD {summary.get('mode')}): "
                 f"final {pct(s.get('test_acc'))}, best {pct(s.get('best_acc'))}")
    if "transfer" in summary:
        lines.append(f"fine-tuning on {summary['transfer']['dataset']}: {pct(summary['transfer']['best_acc'])}")
    out.write("\n".join(lines) + "\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
