"""``mgd-studio``: the desktop application's entry point (also ``python -m mgd_gui``)."""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mgd-studio", description="MGD Studio: multi-granularity distillation")
    parser.add_argument("config", nargs="?", help="experiment YAML to open (default: the bundled demo preset)")
    parser.add_argument("--demo", action="store_true", help="open the bundled demo preset, ready to run (default)")
    parser.add_argument("--theme", choices=("system", "light", "dark"), help="colour theme (remembered)")
    parser.add_argument("--run", action="store_true", help="start the run as soon as the window is shown")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, *, fast_exit: bool = True) -> int:
    """Show the window and run until it closes. With ``fast_exit`` the process ends as soon as the
    window has closed (:func:`leave`) instead of returning."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from PySide6.QtWidgets import QApplication

    from mgd_gui import paths
    from mgd_gui.icons import icon

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName(paths.APP_NAME)
    app.setOrganizationName(paths.APP_AUTHOR)
    app.setApplicationDisplayName(paths.APP_NAME)
    app.setStyle("Fusion")
    app.setWindowIcon(icon("app"))

    from mgd_gui.main_window import MainWindow

    config = None if args.demo or not args.config else args.config
    window = MainWindow(config)
    if args.theme:
        window.set_theme(args.theme)
    window.show()
    if args.run:
        from PySide6.QtCore import QTimer

        QTimer.singleShot(500, window.start_run)
    code = app.exec()
    if fast_exit:
        leave(code)
    return code


def leave(code: int) -> None:
    """End the process now that the window has closed. The window closes only once its runs have
    ended (their checkpoints written) and its settings are saved, and every file the studio writes
    is written whole before it is renamed into place; what is left is the interpreter's tear-down
    of torch, Qt and pyqtgraph, which takes seconds on a busy machine and, while a background
    look-up is still importing torch, can abort in a C++ destructor. So the process leaves at once."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("QT_ENABLE_HIGHDPI_SCALING", "1")
    sys.exit(main())
