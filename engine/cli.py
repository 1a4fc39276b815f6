"""``mgd-train``: run an experiment from a YAML file, headless.

Exit status: 0 success (or stopped on request, with a resumable checkpoint),
2 bad input (one line naming the problem), 1 failure during training.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from engine.errors import InputError, MGDError, TrainingError

EXIT_OK, EXIT_TRAINING, EXIT_INPUT = 0, 1, 2


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressPrinter:
    """Prints a progress bar with ETA on a terminal, one line per epoch elsewhere (logs, CI)."""

    def __init__(self, stream: TextIO = sys.stderr, quiet: bool = False):
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.stage = ""
        self.epochs = 0
        self.steps = 0
        self.start_epoch = 0
        self.t0 = time.perf_counter()
        self._bar_shown = False

    def _line(self, text: str) -> None:
        if self._bar_shown:
            self.stream.write("\r\033[K")
            self._bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _bar(self, epoch: int, step: int, losses: dict) -> None:
        done = (epoch - 1 - self.start_epoch) * self.steps + step
        total = max(1, (self.epochs - self.start_epoch) * self.steps)
        frac = min(1.0, done / total)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else 0
        width = 24
        filled = int(frac * width)
        loss = losses.get("total")
        text = (f"{self.stage:<8} [{'#' * filled}{'.' * (width - filled)}] {100 * frac:5.1f}% "
                f"epoch {epoch}/{self.epochs} step {step}/{self.steps} "
                f"loss {loss:.4f} ETA {_fmt_time(eta)}" if loss is not None else "")
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self._bar_shown = True

    def __call__(self, event) -> None:
        kind = event.type
        if kind == "StageStarted":
            self.stage, self.epochs, self.steps = event.stage, event.epochs, event.steps_per_epoch
            self.start_epoch = event.start_epoch
            self.t0 = time.perf_counter()
            if not self.quiet:
                self._line(f"== {event.stage}: {event.epochs} epochs x {event.steps_per_epoch} steps, "
                           f"{event.parameters:,} trainable parameters")
        elif kind == "StepLosses" and self.tty and not self.quiet:
            self._bar(event.epoch, event.step, event.losses)
        elif kind == "EpochEnd" and not self.quiet:
            elapsed = time.perf_counter() - self.t0
            done = event.epoch - self.start_epoch
            eta = elapsed / max(1, done) * (event.epochs - event.epoch)
            self._line(f"{event.stage:<8} epoch {event.epoch:>3}/{event.epochs}  loss {event.losses.get('total', 0):.4f}  "
                       f"train {event.train_acc:6.2f}%  test {event.test_acc:6.2f}%  lr {event.lr:.4g}  "
                       f"{event.seconds:.1f}s  ETA {_fmt_time(eta)}")
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
    p.add_argument("--list-models", action="store_true", help="list the architectures and exit")
    p.add_argument("--list-distillers", action="store_true", help="list the baseline distillers and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="print only warnings, errors and the result")
    return p


def _load(args) -> object:
    from engine.config import apply_override, load_config, validate

    if args.config is None:
        raise InputError("give an experiment YAML file (for example resources/presets/demo.yaml) or --resume RUN_DIR")
    cfg = load_config(args.config)
    for assignment in args.overrides:
        cfg = apply_override(cfg, assignment)
    validate(cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
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
        if args.print_config:
            from engine.config import dumps_config, resolve

            out.write(dumps_config(resolve(cfg)) if cfg is not None else Path(args.resume, "config.yaml").read_text())
            return EXIT_OK

        from engine.control import RunControl
        from engine.run import run_experiment

        control = RunControl()

        def on_sigint(signum, frame):  # first Ctrl-C: stop cleanly with a checkpoint; second: abort
            if control.stop_requested:
                raise KeyboardInterrupt
            sys.stderr.write("\nstopping after this step (Ctrl-C again to abort)...\n")
            control.stop()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            printer = ProgressPrinter(sys.stderr, quiet=args.quiet)
            if cfg is not None and cfg.comparison.baselines:
                from engine.compare import run_comparison, to_markdown
                from engine.run import default_run_dir

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
            signal.signal(signal.SIGINT, previous)
        _print_result(summary, out)
        return EXIT_OK
    except InputError as exc:
        sys.stderr.write(f"mgd-train: error: {exc}\n")
        return EXIT_INPUT
    except TrainingError as exc:
        sys.stderr.write(f"mgd-train: training failed: {exc}\n")
        return EXIT_TRAINING
    except MGDError as exc:
        sys.stderr.write(f"mgd-train: error: {exc}\n")
        return EXIT_TRAINING
    except KeyboardInterrupt:
        sys.stderr.write("mgd-train: aborted\n")
        return 130
    except Exception as exc:  # a bug or an unforeseen failure: short message, details in the run folder
        sys.stderr.write(f"mgd-train: training failed: {type(exc).__name__}: {exc} "
                         f"(the traceback is in the run folder's error.log)\n")
        return EXIT_TRAINING


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
