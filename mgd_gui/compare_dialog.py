"""The comparison table of the runs selected in the runs panel, as in the paper's tables.

The table itself is :func:`engine.compare.comparison_table`, its cells
:func:`engine.compare.table_cells` (the same text as the Markdown); this module only shows
them, says which selected runs were left out or do not belong together, and copies or
saves the table with :func:`engine.compare.to_markdown` and :func:`engine.compare.to_csv`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QDialogButtonBox, QFileDialog, QHeaderView, QLabel,
                               QMessageBox, QSizePolicy, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from engine.compare import (BASELINE_HEADERS, BASELINE_NUMERIC, BASELINE_TIPS, STUDENT_HEADERS, comparison_table,
                            table_cells, to_csv, to_markdown)
from engine.runs import RunInfo
from mgd_gui import theme
from mgd_gui.icons import icon
from mgd_gui.screen import FittedDialog

STUDENT_TIPS = (
    "Teacher -> student", "The distiller", "The MGD mode", "The student's architecture", "Trainable parameters of the student",
    "Size of the exported weights (KiB); - when the run exported nothing",
    "Milliseconds per image on the CPU (batch of one), mean over seeds",
    "Expected calibration error (%), mean over seeds: lower is better calibrated",
    "Probability spread over the non-top classes, mean over seeds: lower is more confident",
)


LEFT, RIGHT, CENTER = (Qt.AlignmentFlag.AlignLeft, Qt.AlignmentFlag.AlignRight, Qt.AlignmentFlag.AlignHCenter)
BASELINE_ALIGN = tuple(RIGHT if numeric else LEFT for numeric in BASELINE_NUMERIC)  # names left, numbers right
STUDENT_ALIGN = (LEFT, LEFT, LEFT, LEFT, RIGHT, RIGHT, RIGHT, RIGHT, RIGHT)
MAX_VISIBLE_ROWS = 12  # a longer table scrolls
MINIMUM = QSize(560, 360)  # the smallest the dialog can be made


class _Table(QTableWidget):
    """A table whose size hint is its whole contents (up to MAX_VISIBLE_ROWS rows, see :func:`_fit`):
    the dialog asks for that much and, where the screen is smaller, the table scrolls. Its first
    column takes the width left over, but never less than its contents."""

    natural = QSize(0, 0)  # the columns' widths and the header and rows' heights (set by _fit)
    few_rows = 0  # the height of the header and three rows: the least the table shrinks to

    def _height(self) -> int:
        """The natural height, with room for the horizontal scroll bar where it shows (no empty band)."""
        scroll = self.horizontalScrollBar().sizeHint().height() if self.width() < self.natural.width() else 0
        return self.natural.height() + scroll

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt name
        return QSize(self.natural.width(), self._height()) if not self.natural.isEmpty() else super().sizeHint()

    def update_heights(self) -> None:
        height = self._height()
        self.setMaximumHeight(height)
        self.setMinimumHeight(min(height, self.few_rows + height - self.natural.height()))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().resizeEvent(event)
        self._stretch_first()
        if self.maximumHeight() != self._height():
            self.update_heights()

    def _stretch_first(self) -> None:
        header = self.horizontalHeader()
        first = max(header.sectionSizeHint(0), self.sizeHintForColumn(0))  # the others fit their contents
        wide = self.viewport().width() >= first + sum(header.sectionSize(c) for c in range(1, self.columnCount()))
        mode = QHeaderView.ResizeMode.Stretch if wide else QHeaderView.ResizeMode.ResizeToContents
        if header.sectionResizeMode(0) != mode:
            header.setSectionResizeMode(0, mode)


def _table(headers: tuple[str, ...], tips: tuple[str, ...], align: tuple, rows: list[list[str]]) -> QTableWidget:
    table = _Table(len(rows), len(headers))
    table.setObjectName("comparisonTable")
    table.setHorizontalHeaderLabels(list(headers))
    for col, tip in enumerate(tips):
        table.horizontalHeaderItem(col).setToolTip(tip)
    table.verticalHeader().hide()
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.ContiguousSelection)
    table.setAlternatingRowColors(True)
    table.setWordWrap(False)
    table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)  # on a screen too narrow for it
    table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = QTableWidgetItem(text)
            item.setTextAlignment(align[c] | Qt.AlignmentFlag.AlignVCenter)
            table.setItem(r, c, item)
    header = table.horizontalHeader()
    header.setDefaultAlignment(Qt.AlignmentFlag.AlignCenter)
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setMinimumSectionSize(60)
    return table


def _fit(table: _Table) -> None:
    """As tall as its rows (up to MAX_VISIBLE_ROWS) and as wide as its columns: no empty band
    under a short table, no clipped column; on a smaller screen it shrinks to three rows and scrolls."""
    table.resizeColumnsToContents()
    table.resizeRowsToContents()
    frame = 2 * table.frameWidth()
    rows = [table.rowHeight(r) for r in range(table.rowCount())]
    header = table.horizontalHeader().sizeHint().height() + frame
    width = sum(table.columnWidth(c) for c in range(table.columnCount())) + frame
    if len(rows) > MAX_VISIBLE_ROWS:
        width += table.verticalScrollBar().sizeHint().width()
    table.natural = QSize(width, header + sum(rows[:MAX_VISIBLE_ROWS]))
    table.few_rows = header + sum(rows[:3])
    table.setMinimumWidth(0)
    table.update_heights()
    table.updateGeometry()


class CompareDialog(FittedDialog):
    """The comparison table of ``runs`` (their summaries), with Copy as Markdown and Save CSV."""

    def __init__(self, runs: list[RunInfo], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Compare runs")
        self.setObjectName("compareDialog")
        self.runs = list(runs)
        self.table = comparison_table([info.summary for info in self.runs])
        self.cells = table_cells(self.table)
        self.saved: Path | None = None

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.setSpacing(6)
        self.summary_label = QLabel(self._summary_text())
        self.summary_label.setWordWrap(True)
        layout.addWidget(self.summary_label)
        self.warnings_label = QLabel()
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        warnings = self._warnings()
        if warnings:
            self.warnings_label.setText("⚠ " + "\n⚠ ".join(warnings))
            self.warnings_label.setStyleSheet(f"color: {theme.error_color()};")
        else:
            self.warnings_label.hide()
        layout.addWidget(self.warnings_label)

        self.baselines = _table(BASELINE_HEADERS, BASELINE_TIPS, BASELINE_ALIGN, self.cells["baselines"])
        self.students = _table(STUDENT_HEADERS, STUDENT_TIPS, STUDENT_ALIGN, self.cells["students"])
        self._decorate()
        self.note = QLabel(self.cells["note"])
        self.note.setWordWrap(True)
        self.note.setStyleSheet(f"color: {theme.muted_color()};")
        self.note.setVisible(bool(self.cells["note"]))
        self.headings: list[QLabel] = []
        for title, widget in (("Best test accuracy (%) by baseline", self.baselines), (None, self.note),
                              ("Students", self.students)):
            if title:
                heading = QLabel(title)
                font = QFont(heading.font())
                font.setBold(True)
                heading.setFont(font)
                heading.setContentsMargins(0, 4, 0, 0)
                layout.addWidget(heading)
                self.headings.append(heading)
            layout.addWidget(widget)
        self.empty = QLabel("None of the selected runs has finished: the table compares finished runs only.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setStyleSheet(f"color: {theme.muted_color()}; padding: 24px;")
        layout.addWidget(self.empty)
        has_rows = bool(self.cells["baselines"])
        self.empty.setVisible(not has_rows)
        for widget in (self.baselines, self.students, *self.headings):
            widget.setVisible(has_rows)
        layout.addStretch(1)

        self.status = QLabel()
        self.status.setStyleSheet(f"color: {theme.muted_color()};")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = self.buttons.addButton("Copy as Markdown", QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.setIcon(icon("copy"))
        self.copy_button.setToolTip("Copy both tables as Markdown (as mgd-train writes comparison.md)")
        self.csv_button = self.buttons.addButton("Save CSV…", QDialogButtonBox.ButtonRole.ActionRole)
        self.csv_button.setIcon(icon("csv"))
        self.csv_button.setToolTip("Save both tables as a CSV file (as mgd-train writes comparison.csv)")
        for button in (self.copy_button, self.csv_button):
            button.setEnabled(has_rows)
            button.setAutoDefault(False)
        self.copy_button.clicked.connect(self.copy_markdown)
        self.csv_button.clicked.connect(self._save_csv_dialog)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)

        for table in (self.baselines, self.students):
            _fit(table)
        self.buttons.button(QDialogButtonBox.StandardButton.Close).setFocus()  # no cell picked at first
        hint = self.sizeHint()
        self.fit(QSize(max(860, hint.width()), max(360, hint.height())), MINIMUM)

    # -- contents ----------------------------------------------------------------------
    def _used(self) -> int:
        return sum(s["seeds"] for s in self.table["students"])

    def _summary_text(self) -> str:
        n, used = len(self.runs), self._used()
        seeds = sorted({info.summary.get("seed") for info in self.runs if info.summary.get("seed") is not None})
        parts = [f"{n} run{'s' if n != 1 else ''} selected, {used} in the table"]
        if seeds:
            parts.append("seed" + ("s " if len(seeds) > 1 else " ") + ", ".join(map(str, seeds)))
        datasets = sorted({i.dataset for i in self.runs if i.dataset})
        if len(datasets) == 1:
            parts.append(f"data {datasets[0]}")
        teachers = self._values("teacher_arch")
        students = self._values("student_arch")
        if len(teachers) == 1 and len(students) == 1:
            parts.append(f"teacher {teachers[0]} → student {students[0]}")
        return " · ".join(parts)

    def _values(self, attr: str) -> list[str]:
        """The different values of ``attr`` among the finished runs (runs without a teacher have none)."""
        return sorted({getattr(i, attr) for i in self.runs if i.status == "finished" and getattr(i, attr)})

    def _warnings(self) -> list[str]:
        out = []
        left = [i for i in self.runs if i.status != "finished"]
        if left:
            names = ", ".join(f"{i.label} ({i.status})" for i in left[:6]) + (", …" if len(left) > 6 else "")
            out.append(f"Not in the table, not finished: {names}")
        for attr, what in (("dataset", "data sets"), ("teacher_arch", "teachers"), ("student_arch", "students")):
            values = self._values(attr)
            if len(values) > 1:
                out.append(f"The runs have different {what} ({', '.join(values)}): the table pools them, "
                           "one row per baseline and mode")
        seen = Counter((i.distiller, i.mode, i.summary.get("seed")) for i in self.runs if i.status == "finished")
        twice = [f"{b}/{m} seed {s}" for (b, m, s), k in seen.items() if k > 1]
        if twice:
            out.append(f"Runs with the same baseline, mode and seed count as separate seeds: {', '.join(twice)}")
        return out

    def _decorate(self) -> None:
        """Mark the reference row and the significant differences, and explain each cell in its tool tip."""
        good = QColor("#22c55e" if theme.is_dark() else "#15803d")
        muted = QColor(theme.muted_color())
        for r, row in enumerate(self.table["rows"]):
            for mode, col in (("granularity", 5), ("stable", 6)):
                versus = row["versus_off"].get(mode)
                if versus is None:
                    continue
                item = self.baselines.item(r, col)
                if versus["verdict"] in ("better", "worse"):
                    item.setForeground(good if versus["verdict"] == "better" else QColor(theme.error_color()))
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                else:
                    item.setForeground(muted)
                p = f"Welch's t-test p = {versus['p']:.4f}" if versus["p"] is not None else \
                    "no test: fewer than three seeds per mode"
                item.setToolTip(f"MGD {mode} minus MGD off, final accuracy: {versus['difference']:+.2f} points "
                                f"over {versus['seeds']} seed(s); {p}")
            if row["baseline"] == "none":
                item = self.baselines.item(r, 1)
                font = QFont(item.font())
                font.setItalic(True)
                item.setFont(font)
                item.setToolTip("The student trained alone at the same budget: what distillation must beat")
            for m, col in (("off", 2), ("granularity", 3), ("stable", 4)):
                n = row[m]["best"]["n"]
                if n:
                    self.baselines.item(r, col).setToolTip(f"final / best epoch, {n} seed{'s' if n != 1 else ''}")

    # -- actions -----------------------------------------------------------------------
    def markdown(self) -> str:
        return to_markdown(self.table)

    def copy_markdown(self) -> None:
        QApplication.clipboard().setText(self.markdown())
        self.status.setText("Copied the tables to the clipboard as Markdown")

    def save_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(to_csv(self.table), encoding="utf-8", newline="")  # the csv module ends rows itself
        self.saved = path
        self.status.setText(f"Saved {path}")
        return path

    def _default_csv(self) -> Path:
        folders = {i.comparison_dir for i in self.runs}
        if len(folders) == 1 and None not in folders:
            return next(iter(folders)) / "comparison-selected.csv"
        return Path.home() / "comparison.csv"

    def _save_csv_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the comparison as CSV", str(self._default_csv()),
                                              "CSV files (*.csv)")
        if not path:
            return
        try:
            self.save_csv(path)
        except OSError as exc:
            QMessageBox.warning(self, "Cannot save the table", f"{path}: {exc}")
