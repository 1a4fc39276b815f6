"""The parameter counts of teacher and student, side by side."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QWidget

from mgd_gui import theme


def millions(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"


class ModelSummary(QLabel):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.counts: dict[str, tuple[str, int | None]] = {}
        self.setToolTip("Trainable parameters of the backbones for the chosen data set's classes and channels")

    def set_count(self, role: str, arch: str, count: int | None) -> None:
        self.counts[role] = (arch, count)
        self._render()

    def _render(self) -> None:
        lines = []
        for role in ("teacher", "student"):
            arch, n = self.counts.get(role, ("", None))
            if arch:
                lines.append(f"{role.capitalize()} <b>{arch}</b>: {millions(n) + ' parameters' if n else '…'}")
        t, s = self.counts.get("teacher", ("", None))[1], self.counts.get("student", ("", None))[1]
        if t and s:
            ratio = t / s
            text = (f"the student has {ratio:.1f}× fewer parameters" if ratio >= 1
                    else f"the student has {1 / ratio:.1f}× more parameters than the teacher")
            lines.append(f"<span style='color:{theme.muted_color()}'>{text}</span>")
        self.setText("<br>".join(lines))
