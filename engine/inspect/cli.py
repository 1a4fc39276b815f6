"""``mgd-train inspect RUN_DIR [--images N] [--out DIR] [--compare OTHER_RUN_DIR] [--earlier K]``.

Writes the class-activation maps, the code projections and the per-class comparison as
PNG files and one self-contained HTML page. Exit status: 0 done, 2 bad input (one line
naming the problem), 1 failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine.errors import InputError, MGDError

EXIT_OK, EXIT_FAILURE, EXIT_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the whole usage otherwise)
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mgd-train inspect",
                description="Inspect a finished run: class-activation maps of the teacher, each granularity head "
                            "and the student; the granularity codes in 2-D; per-class accuracy against another "
                            "run. Writes PNG files and one self-contained HTML page.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder with a trained student")
    p.add_argument("--images", type=int, default=1, metavar="N",
                   help="class-activation maps for the first N test images of each class (default 1)")
    p.add_argument("--earlier", type=int, default=0, metavar="K",
                   help="take the maps K stages before the last stage output (finer maps for tiny images; default 0)")
    p.add_argument("--out", metavar="DIR", help="where to write the report (default: RUN_DIR/inspect)")
    p.add_argument("--compare", metavar="OTHER_RUN_DIR",
                   help="a second run on the same data: where this run's student gains over that one's")
    p.add_argument("--projection", default="pca", choices=("pca", "tsne", "umap"),
                   help="how codes go to 2-D: pca (default), tsne (needs scikit-learn), umap (needs umap-learn)")
    p.add_argument("--device", default="cpu", help="device for the pass over the test set (default cpu; auto, cuda)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result")
    return p


class _Progress:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or not total or not done:  # nothing before the run's models have loaded
            return
        pct = int(100 * done / total)
        if pct == self.last:
            return
        if self.tty:
            sys.stderr.write(f"\rinspecting… {pct:3d}%")
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif pct // 25 != self.last // 25 or done >= total:
            sys.stderr.write(f"inspecting… {pct}%\n")
        self.last = pct


def _check_device(name: str) -> None:
    """Refuse (InputError naming ``--device``) a device name that is not allowed or not here."""
    from engine.runtime import select_device

    try:
        select_device(name)
    except InputError as exc:
        raise InputError(f"--device: {str(exc).removeprefix('device: ')}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[2:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        if args.images < 1:
            raise InputError(f"--images must be at least 1, got {args.images}")
        if args.earlier < 0:
            raise InputError(f"--earlier must be 0 or more, got {args.earlier}")
        from engine.inspect.load import check_run_dir
        from engine.runfolder import check_writable_dir

        run_dir = check_run_dir(args.run_dir)
        if args.compare:
            check_run_dir(args.compare)
        out = Path(args.out).expanduser() if args.out else run_dir / "inspect"
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out}: exists and is not a folder")
        check_writable_dir(out, "--out")
        _check_device(args.device)

        from engine.inspect.analysis import inspect_run
        from engine.inspect.report import write_report

        t0 = time.perf_counter()
        result = inspect_run(run_dir, images_per_class=args.images, compare=args.compare, method=args.projection,
                             device=args.device, stages_back=args.earlier, progress=_Progress(args.quiet))
        files = write_report(result, out)
    except InputError as exc:
        sys.stderr.write(f"mgd-train inspect: error: {exc}\n")
        return EXIT_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("mgd-train inspect: aborted\n")
        return 130
    except MGDError as exc:
        sys.stderr.write(f"mgd-train inspect: failed: {exc}\n")
        return EXIT_FAILURE
    except Exception as exc:  # a bug or an unforeseen failure: one line
        sys.stderr.write(f"mgd-train inspect: failed: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILURE
    out_stream = sys.stdout
    for note in result.notes:
        out_stream.write(f"note: {note}\n")
    for p in result.projections:
        share = f", {100 * p.variance_share:.0f}% of variance" if p.variance_share is not None else ""
        out_stream.write(f"codes {p.role} {p.granularity}: {p.method}{share}, 5-NN in 2-D {p.separation:.1f}% "
                         f"(chance {p.chance:.1f}%)\n")
    if result.gain is not None:
        g = result.gain
        out_stream.write(f"student {g.names[1]}: {g.accuracy[1]:.2f}% vs {g.names[0]}: {g.accuracy[0]:.2f}%; "
                         f"right only here {len(g.b_only)}, right only there {len(g.a_only)}\n")
    pngs = sum(1 for k in files if k != "html")
    out_stream.write(f"wrote {pngs} PNG files and {files['html']} in {time.perf_counter() - t0:.1f}s\n")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
