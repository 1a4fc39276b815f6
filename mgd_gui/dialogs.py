"""The windows the main window opens on runs (Export, Compare, Inspect, Review): one of each at a
time, each naming its runs as the Runs panel does (:attr:`engine.runs.RunInfo.label`)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox, QWidget


class Dialogs:
    def __init__(self, parent: QWidget, runs_root: Path):
        self.parent, self.runs_root = parent, runs_root
        self.export = self.compare = self.inspect = self.review = None
        self.compare_folder: str | None = None  # the queued comparison whose table is open

    def show_export(self, path: Path | None) -> None:
        from engine.runs import list_runs
        from mgd_gui.export_dialog import ExportDialog

        runs = list_runs(self.runs_root)
        if not any(r.has_student for r in runs):
            QMessageBox.information(self.parent, "Nothing to export", "No run has a trained student yet.")
            return
        self.export = ExportDialog(runs, path, self.parent)
        self.export.open()
        return self.export

    def show_compare(self, paths: list, folder: str | None = None) -> None:
        """The comparison table of the runs in ``paths`` (``folder``: of a queued comparison, kept
        up to date as its runs end)."""
        from engine.runs import run_info
        from mgd_gui.compare_dialog import CompareDialog

        infos = [run_info(p) for p in paths]  # read again: a run may have finished since
        if not infos:
            return
        geometry = self.compare.geometry() if folder is not None and self.compare_visible(folder) else None
        if self.compare is not None:
            self.compare.close()
        self.compare = CompareDialog(infos, self.parent)
        self.compare_folder = folder
        self.compare.show()
        if geometry is not None:
            self.compare.setGeometry(geometry)
        self.compare.raise_()

    def compare_visible(self, folder: str) -> bool:
        return self.compare is not None and self.compare_folder == folder and self.compare.isVisible()

    def show_inspect(self, path: Path) -> None:
        from engine.runs import list_runs
        from mgd_gui.inspect_view import InspectDialog

        if self.inspect is not None:
            self.inspect.close()
        self.inspect = InspectDialog(path, list_runs(self.runs_root), self.parent)
        self.inspect.show()
        self.inspect.raise_()

    def show_review(self, path: Path):
        from engine.runs import run_info
        from mgd_gui.review_view import ReviewDialog

        path = Path(path)
        if self.review is None or self.review.run_dir != path or not self.review.isVisible():
            # a closed Review window has ended its background work: a fresh one
            if self.review is not None:
                self.review.close()
            self.review = ReviewDialog(path, run_info(path).label, self.parent)
        self.review.show()
        self.review.raise_()
        return self.review

    def close_all(self) -> None:
        for dialog in (self.review, self.inspect, self.compare):
            if dialog is not None:
                dialog.close()  # their background work ends with them
