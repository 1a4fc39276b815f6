"""The dialog that reports a failed run: the message, what it means, the details on demand."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox, QWidget

KIND_ADVICE = {
    "input": "The set-up needs a change (a file, a folder or a setting); fix it and run again.",
    "nan": "The training diverged. Try a lower learning rate, then resume or run again.",
    "oom": "The device ran out of memory. Lower the batch size or choose a smaller model.",
}


def error_dialog(parent: QWidget, failure: dict) -> QMessageBox:
    """A non-blocking message box for ``failure`` (message, kind, stage, details, run_dir)."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Critical)
    box.setWindowTitle("Run failed")
    stage = failure.get("stage") or "setup"
    box.setText(f"The run failed in the {stage} stage:\n\n{failure.get('message', '')}")
    advice = KIND_ADVICE.get(failure.get("kind") or "", "See the details for the engine's traceback.")
    where = failure.get("run_dir")
    saved = f"\n\nWhat was saved is kept in {where}." if where and Path(where).is_dir() else ""
    box.setInformativeText(advice + saved)
    if failure.get("details"):
        box.setDetailedText(str(failure["details"]))
    box.setStandardButtons(QMessageBox.StandardButton.Close)
    return box
