"""Shared helpers of the benchmark scripts: timing, tables, the JSON line, and the engine's
stages built the way ``engine/run.py`` builds them (on random CIFAR-size data).

Timings on a shared machine are noisy: the scripts interleave the sides they compare
(:func:`interleave`, A B B A ...; :class:`TakeTurns`, step by step through ``Trainer.fit``),
report medians, and give ratios, which hold where absolute times do not: for sides measured
in pairs, the median of the per-pair ratios with its bootstrap interval (:func:`paired_ratio`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from engine.models import freeze  # noqa: E402,F401  (one definition, re-exported for the benchmarks)

PAPER_PAIRS = (("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"))
CIFAR_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR_STD = (0.2673, 0.2564, 0.2762)


# ----------------------------------------------------------------------------- arguments and environment


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small settings that finish in about a minute on 2 CPU cores")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def setup(args) -> torch.device:
    """Apply ``--threads``, check the device, and return it."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA GPU on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SystemExit("--device mps: no Apple GPU available")
    torch.manual_seed(args.seed)
    return device


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on (threads included: oversubscription changes everything)."""
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# ----------------------------------------------------------------------------- statistics and output


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and count of a list of times (seconds)."""
    vals = sorted(values)
    if not vals:
        return {"median": float("nan"), "p25": float("nan"), "p75": float("nan"), "n": 0}
    q = statistics.quantiles(vals, n=4) if len(vals) > 1 else [vals[0]] * 3
    return {"median": statistics.median(vals), "p25": q[0], "p75": q[2], "n": len(vals)}


def paired_ratio(numer: Sequence[float], denom: Sequence[float], *, block: int = 1, resamples: int = 2000,
                 seed: int = 0) -> dict[str, float]:
    """The ratio of two sides measured in pairs (``numer[i]`` next to ``denom[i]``): the median of
    the per-pair ratios (per-block ratios of sums with ``block`` > 1), their quartiles, and a
    95 % bootstrap interval of that median (pairs resampled with replacement, seeded: the same
    timings always give the same interval). A burst of load that slows one step spoils one
    pair, not the figure; the interval says how far another run may land."""
    if len(numer) != len(denom):
        raise ValueError(f"paired_ratio: {len(numer)} timings against {len(denom)}")
    if block < 1:
        raise ValueError(f"paired_ratio: block must be >= 1, not {block}")
    ratios = [sum(numer[i:i + block]) / sum(denom[i:i + block])
              for i in range(0, len(numer) - block + 1, block)]
    if not ratios:
        nan = float("nan")
        return {"median": nan, "p25": nan, "p75": nan, "iqr": nan, "ci_low": nan, "ci_high": nan, "n": 0}
    s = summary(ratios)
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    lo, hi = medians[int(0.025 * (resamples - 1))], medians[int(round(0.975 * (resamples - 1)))]
    return {"median": s["median"], "p25": s["p25"], "p75": s["p75"], "iqr": s["p75"] - s["p25"],
            "ci_low": lo, "ci_high": hi, "n": len(ratios)}


def format_ratio(r: dict[str, float]) -> str:
    """``1.032 [95% 1.011-1.049, IQR 0.98-1.07, 40 pairs]``: a paired ratio and its spread."""
    return (f"{r['median']:.3f} [95% {r['ci_low']:.3f}-{r['ci_high']:.3f}, IQR {r['p25']:.3f}-{r['p75']:.3f}, "
            f"{r['n']} pairs]")


def interleave(sides: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list]:
    """Run every side once per round, the order reversed on odd rounds (A B, B A, ...), so a
    slow drift of the machine weighs on every side alike. Returns each side's results."""
    names = list(sides)
    out: dict[str, list] = {n: [] for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            out[name].append(sides[name]())
    return out


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join([line, sep, *body])


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "-"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return "-" if v is None else str(v)


def _numeric(text: str) -> bool:
    try:
        float(text.rstrip("x%"))
        return True
    except ValueError:
        return False


def emit_json(result: dict) -> None:
    """The last line of every script: all figures as one JSON object."""
    print(json.dumps(result, default=_jsonable, sort_keys=False), flush=True)


def _jsonable(v):
    if isinstance(v, (torch.device, Path)):
        return str(v)
    if isinstance(v, float) and v != v:
        return None
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def rss_mib() -> float:
    """Resident set size now (Linux /proc), else the peak so far."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        return peak_rss_mib()


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# ----------------------------------------------------------------------------- data


def random_bundle(n_train: int, n_test: int, num_classes: int = 100, size: int = 32, channels: int = 3, seed: int = 0):
    """A CIFAR-shaped in-memory DatasetBundle of random uint8 images (made on the spot)."""
    from engine.data import DatasetBundle

    g = torch.Generator().manual_seed(seed)
    train = torch.randint(0, 256, (n_train, channels, size, size), generator=g, dtype=torch.uint8)
    test = torch.randint(0, 256, (n_test, channels, size, size), generator=g, dtype=torch.uint8)
    return DatasetBundle(
        name="random", train_images=train, train_labels=torch.randint(0, num_classes, (n_train,), generator=g),
        test_images=test, test_labels=torch.randint(0, num_classes, (n_test,), generator=g),
        classes=[f"c{i}" for i in range(num_classes)], mean=CIFAR_MEAN[:channels], std=CIFAR_STD[:channels],
        natural=True, crop_padding=4)


def fixed_batch(batch: int, num_classes: int, size: int, device, seed: int = 0, channels: int = 3):
    """One normalised-looking batch ``(x, y, idx)`` on the device."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=g).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    return x, y, torch.arange(batch, device=device)


class TimedLoader:
    """Stands in for the engine's train loader inside ``Trainer.fit``: yields ``steps`` batches
    (a fixed batch repeated, or the first batches of a real loader's epoch) and records when
    each one is handed out and when the loop asks for the next after the last one.

    ``len()`` reports ``epoch_len`` (a real epoch's length) so that the trainer logs as often
    as in a real run. With ``sync_each`` the device is synchronised at every mark (per-step
    times); otherwise only at the first timed mark and at the end (throughput without
    stalling the GPU's queue). ``skip`` batches are handed out before timing starts.
    Each mark holds the wall time and the process's CPU time (all its threads): on a shared
    machine the CPU time of a step hardly depends on what the neighbours do.
    """

    def __init__(self, source, steps: int, device, *, epoch_len: int | None = None, sync_each: bool = True,
                 skip: int = 0):
        self.source = source
        self.steps = int(steps)
        self.skip = int(skip)
        self.device = torch.device(device)
        self.epoch_len = int(epoch_len or steps + skip)
        self.sync_each = sync_each
        self.runs: list[list[float]] = []  # wall-clock marks of each run
        self.cpu_runs: list[list[float]] = []  # process CPU-time marks of each run

    def __len__(self) -> int:
        return self.epoch_len

    def _batches(self, epoch: int):
        if isinstance(self.source, tuple):
            while True:
                yield self.source
        else:
            while True:
                yield from self.source.epoch(epoch)

    def epoch(self, epoch: int, start_step: int = 0):
        marks: list[float] = []
        cpu: list[float] = []
        total = self.skip + self.steps
        for i, batch in enumerate(self._batches(epoch)):
            if i == total:
                break
            if i >= self.skip:
                if self.sync_each or i == self.skip:
                    sync(self.device)
                marks.append(time.perf_counter())
                cpu.append(time.process_time())
            yield batch
        sync(self.device)
        marks.append(time.perf_counter())
        cpu.append(time.process_time())
        self.runs.append(marks)
        self.cpu_runs.append(cpu)

    def clear(self) -> None:
        self.runs.clear()
        self.cpu_runs.clear()

    def step_times(self, drop_first: int = 1, cpu: bool = False) -> list[float]:
        """Per-step wall (or process CPU) times of every recorded run, the first ``drop_first``
        of each run left out."""
        out: list[float] = []
        for marks in (self.cpu_runs if cpu else self.runs):
            out += step_diffs(marks)[drop_first:]
        return out

    def last_throughput(self, batch: int) -> float:
        """Images per second over the last run (first timed mark to the end)."""
        marks = self.runs[-1]
        return self.steps * batch / (marks[-1] - marks[0])


class TakeTurns:
    """Several ``Trainer.fit`` calls trained step by step in turn: A's step 1, B's step 1, A's
    step 2, B's step 2, ..., so that step ``i`` of every side is measured next to the others'
    step ``i`` and a burst of load on the machine weighs on all of them alike (see
    :func:`paired_ratio`). The order stays the same (no side ever runs two steps in a row,
    which would find its weights warm in the caches while the others' are not); a slow drift
    of the machine biases a ratio by at most one step's drift.

    Each side is a callable that trains over ``turns.loader(name)`` (a ``Trainer.fit``); each
    runs in its own thread, but only the side holding the turn runs: the others wait, so no
    two steps ever overlap. A loader hands out ``skip + steps`` copies of ``batch`` (``len()``
    is ``epoch_len``, so the trainer logs as often as in a real epoch); the time from handing
    out a batch to being asked for the next is that step's time (wall and process CPU time;
    the device is synchronised at both marks). The ``skip`` first steps (warm-up) are not kept.
    """

    def __init__(self, batch, steps: int, device, *, skip: int = 2, epoch_len: int = 782):
        self.batch, self.steps, self.skip = batch, int(steps), int(skip)
        self.device = torch.device(device)
        self.epoch_len = int(epoch_len)
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self._cv = threading.Condition()
        self._turn: str | None = None  # the side that may run; None: the coordinator's
        self._abort = False

    def loader(self, name: str) -> "_TurnLoader":
        self.wall[name], self.cpu[name] = [], []
        return _TurnLoader(self, name)

    # -- the turn ---------------------------------------------------------------------
    def _wait(self, name: str) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self._turn == name or self._abort)
            if self._abort:
                raise RuntimeError("TakeTurns: another side failed")

    def _hand_back(self) -> None:
        with self._cv:
            self._turn = None
            self._cv.notify_all()

    def _give(self, name: str) -> None:
        with self._cv:
            self._turn = name
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._turn is None)

    def run(self, sides: dict[str, Callable[[], Any]]) -> None:
        """Run every side to its end, one step at a time in turn; re-raises a side's error."""
        missing = [n for n in sides if n not in self.wall]
        if missing:
            raise ValueError(f"TakeTurns.run: no loader was made for {', '.join(missing)}")
        finished: dict[str, bool] = {n: False for n in sides}
        errors: dict[str, BaseException] = {}

        def body(name: str, fn: Callable[[], Any]) -> None:
            try:
                self._wait(name)
                fn()
            except BaseException as exc:  # noqa: BLE001  (handed to the coordinator)
                errors[name] = exc
            finally:
                finished[name] = True
                self._hand_back()

        threads = [threading.Thread(target=body, args=(n, fn), name=f"turn-{n}", daemon=True)
                   for n, fn in sides.items()]
        for t in threads:
            t.start()
        try:
            active = list(sides)
            while active and not errors:
                for name in active:
                    self._give(name)
                    if errors:
                        break
                active = [n for n in active if not finished[n]]
        finally:
            with self._cv:
                self._abort = bool(errors) or any(not f for f in finished.values())
                self._cv.notify_all()
            for t in threads:
                t.join()
        if errors:
            name, exc = next(iter(errors.items()))
            raise RuntimeError(f"side {name!r} failed: {type(exc).__name__}: {exc}") from exc


class _TurnLoader:
    """A side's train loader in :class:`TakeTurns`: waits for its turn before each step."""

    def __init__(self, turns: TakeTurns, name: str):
        self.turns, self.name = turns, name

    def __len__(self) -> int:
        return self.turns.epoch_len

    def epoch(self, epoch: int, start_step: int = 0):
        turns = self.turns
        total = turns.skip + turns.steps
        for i in range(total):
            if i > 0:  # the turn of step 0 is the one the side started with
                turns._wait(self.name)
            sync(turns.device)
            w0, c0 = time.perf_counter(), time.process_time()
            yield turns.batch
            sync(turns.device)
            if i >= turns.skip:
                turns.wall[self.name].append(time.perf_counter() - w0)
                turns.cpu[self.name].append(time.process_time() - c0)
            if i < total - 1:  # after the last step the side keeps the turn to the end of its fit
                turns._hand_back()


def step_diffs(marks: Sequence[float]) -> list[float]:
    return [b - a for a, b in zip(marks, marks[1:])]


class LimitedLoader:
    """A real loader cut to its first ``batches`` batches per epoch (evaluation on a budget)."""

    def __init__(self, loader, batches: int):
        self.loader = loader
        self.batches = int(batches)

    def __len__(self) -> int:
        return min(len(self.loader), self.batches)

    def epoch(self, epoch: int, start_step: int = 0):
        for i, batch in enumerate(self.loader.epoch(epoch, start_step)):
            if i >= self.batches:
                return
            yield batch


# ----------------------------------------------------------------------------- the engine's stages


class EngineHarness:
    """A Trainer with the run's event plumbing (metrics.jsonl writer plus a list subscriber)
    in a temporary folder; each ``fit`` starts afresh (its checkpoint is removed first)."""

    def __init__(self, loader, *, precision: str = "fp32", channels_last: bool = False, classes=None):
        from engine.control import RunControl
        from engine.events import EventBus
        from engine.runfolder import MetricsWriter
        from engine.trainer import Trainer

        self.tmp = tempfile.TemporaryDirectory(prefix="mgd-bench-")
        folder = Path(self.tmp.name)
        self.events: list = []
        self.writer = MetricsWriter(folder)
        self.bus = EventBus([self.writer, self._keep])
        self.trainer = Trainer(bus=self.bus, control=RunControl(), checkpoint_dir=folder / "checkpoints",
                               train_loader=loader, classes=classes or ["c"], precision=precision,
                               channels_last=channels_last)

    def _keep(self, event) -> None:
        if len(self.events) < 10000:
            self.events.append(event)

    def fit(self, task, *, lr: float = 0.05, epochs: int = 1) -> list[dict]:
        path = self.trainer.checkpoint_path(task)
        if path.exists():
            path.unlink()
        return self.trainer.fit(task, epochs=epochs, lr=lr, momentum=0.9, weight_decay=5e-4, milestones=[],
                                gamma=0.1)

    def close(self) -> None:
        self.writer.close()
        self.tmp.cleanup()


def build(arch: str, num_classes: int, device, *, seed: int, channels_last: bool = False, in_channels: int = 3,
          compile: bool = False):
    """A zoo model built as ``ExperimentRun.build`` does (seeded, on the device, channels-last and
    ``torch.compile`` if asked)."""
    from engine.models import build_model

    torch.manual_seed(seed)
    model = build_model(arch, num_classes, in_channels).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()
    return model




def paper_heads(count: int) -> list[tuple[int, float]]:
    """``count`` granularities: the paper's (64, 2) and (256, 8), repeated as needed."""
    paper = [(64, 2.0), (256, 8.0)]
    return [paper[i % 2] for i in range(count)]


def student_parts(teacher_arch: str, student_arch: str, *, num_classes: int, device, distiller: str = "kd",
                  mode: str = "stable", heads: Sequence = ((64, 2.0), (256, 8.0)), size: int = 32,
                  channels_last: bool = False, seed: int = 0, test_loader=None, teacher=None, teacher_heads=None,
                  compile: bool = False):
    """Everything the engine's student stage trains with, built as ``ExperimentRun.student_stage``
    does (frozen teacher and teacher heads, student, student heads, baseline), and the
    :class:`~engine.stages.StudentTask`. Pass ``teacher``/``teacher_heads`` to share them."""
    from engine.distillers import distiller_class
    from engine.distillers.base import DistillerContext
    from engine.mgd import GranularityHeads
    from engine.stages import StudentTask

    if teacher is None:
        teacher = freeze(build(teacher_arch, num_classes, device, seed=seed, channels_last=channels_last,
                               compile=compile))
    if mode != "off" and teacher_heads is None:
        torch.manual_seed(seed + 1)
        teacher_heads = freeze(GranularityHeads(teacher.feature_dim, num_classes, heads).to(device))
    student = build(student_arch, num_classes, device, seed=seed + 2, channels_last=channels_last, compile=compile)
    student_heads = None
    if mode != "off":
        torch.manual_seed(seed + 3)
        student_heads = GranularityHeads(student.feature_dim, num_classes, heads).to(device)
    cls = distiller_class(distiller)
    with torch.no_grad():
        probe = torch.zeros(2, 3, size, size, device=device)
        student.eval()
        s_shapes = [tuple(f.shape[1:]) for f in student(probe, preact=cls.needs_preact)[1]]
        t_shapes = [tuple(f.shape[1:]) for f in teacher(probe, preact=cls.needs_preact)[1]]
    context = DistillerContext(student_shapes=s_shapes, teacher_shapes=t_shapes, num_classes=num_classes,
                               train_size=50000, student_arch=student_arch, teacher_arch=teacher_arch)
    torch.manual_seed(seed + 4)
    dist = cls(context).to(device)
    task = StudentTask(student=student, teacher=teacher, distiller=dist, mode=mode, teacher_heads=teacher_heads,
                       student_heads=student_heads if mode != "off" else None, weights=cls.default_weights,
                       temperature=4.0, test_loader=test_loader, num_classes=num_classes)
    return {"teacher": teacher, "teacher_heads": teacher_heads, "student": student, "student_heads": student_heads,
            "distiller": dist, "task": task}


def stage_task(stage: str, teacher_arch: str, student_arch: str, *, num_classes: int, device, test_loader,
               channels_last: bool = False, seed: int = 0, heads: Sequence = ((64, 2.0), (256, 8.0)),
               distiller: str = "kd", mode: str = "stable", compile: bool = False):
    """The engine's task of ``stage`` ("teacher", "heads" or "student") with fresh models."""
    from engine.mgd import GranularityHeads
    from engine.stages import HeadsTask, TeacherTask

    if stage == "teacher":
        model = build(teacher_arch, num_classes, device, seed=seed, channels_last=channels_last, compile=compile)
        return TeacherTask(model, test_loader, num_classes)
    if stage == "heads":
        teacher = freeze(build(teacher_arch, num_classes, device, seed=seed, channels_last=channels_last,
                               compile=compile))
        torch.manual_seed(seed + 1)
        return HeadsTask(teacher, GranularityHeads(teacher.feature_dim, num_classes, heads).to(device), test_loader,
                         num_classes)
    if stage == "student":
        return student_parts(teacher_arch, student_arch, num_classes=num_classes, device=device, distiller=distiller,
                             mode=mode, heads=heads, channels_last=channels_last, seed=seed,
                             test_loader=test_loader, compile=compile)["task"]
    raise ValueError(f"unknown stage {stage!r}")


def tiny_test_loader(device, num_classes: int, size: int = 32, n: int = 8):
    """A test loader of ``n`` random images: keeps the end-of-epoch evaluation out of the way."""
    from engine.data import BatchLoader

    g = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return BatchLoader(images, labels, batch_size=n, device=device, mean=CIFAR_MEAN, std=CIFAR_STD, train=False)
