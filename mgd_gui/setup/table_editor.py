"""An editable table for a list of dataclasses (the granularity heads): one column per
field of the item type, rows added and removed with buttons."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QToolButton,
                               QVBoxLayout, QWidget)

from engine.config import field_types
from mgd_gui.icons import icon
from mgd_gui.setup.editors import FieldEditor, format_number, humanize, parse_number, unwrap_optional
from mgd_gui import theme


class TableEditor(FieldEditor):
    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        (self.item_cls,) = typing.get_args(self.tp)
        self.columns = dataclasses.fields(self.item_cls)
        self.types = field_types(self.item_cls)
        self.table = QTableWidget(0, len(self.columns))
        self.table.setHorizontalHeaderLabels([humanize(f.name) for f in self.columns])
        for i, f in enumerate(self.columns):
            self.table.horizontalHeaderItem(i).setToolTip(f.metadata.get("help", ""))
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setToolTip(self.help)
        self.table.setMinimumHeight(96)
        self.table.setMaximumHeight(170)
        self.table.itemChanged.connect(self._emit)

        self.add_button = QToolButton()
        self.add_button.setIcon(icon("add"))
        self.add_button.setToolTip("Add a row (a copy of the last one)")
        self.add_button.clicked.connect(self.add_row)
        self.remove_button = QToolButton()
        self.remove_button.setIcon(icon("remove"))
        self.remove_button.setToolTip("Remove the selected rows")
        self.remove_button.clicked.connect(self.remove_rows)

        buttons = QVBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        self.layout_.addWidget(self.table, 1)
        self.layout_.addLayout(buttons)

    def inputs(self) -> list[QWidget]:
        return [self.table]

    # -- rows ---------------------------------------------------------------------
    def _set_row(self, row: int, item: dict) -> None:
        for col, f in enumerate(self.columns):
            cell = QTableWidgetItem(format_number(item.get(f.name)))
            cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            cell.setToolTip(f.metadata.get("help", ""))
            self.table.setItem(row, col, cell)

    def add_row(self) -> None:
        rows = self.table.rowCount()
        if rows:
            template = {f.name: self.table.item(rows - 1, c).text() for c, f in enumerate(self.columns)}
        else:
            template = dataclasses.asdict(self.item_cls())
        self.table.blockSignals(True)
        self.table.insertRow(rows)
        self._set_row(rows, template)
        self.table.blockSignals(False)
        self._emit()

    def remove_rows(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True)
        if not rows and self.table.rowCount():
            rows = [self.table.rowCount() - 1]
        for row in rows:
            self.table.removeRow(row)
        self._emit()

    # -- value --------------------------------------------------------------------
    def value(self) -> Any:
        items = []
        for row in range(self.table.rowCount()):
            item = {}
            for col, f in enumerate(self.columns):
                cell = self.table.item(row, col)
                tp, optional = unwrap_optional(self.types[f.name])
                text = cell.text() if cell else ""
                try:
                    item[f.name] = parse_number(text, tp, optional) if tp in (int, float) else text
                except ValueError as exc:
                    raise ValueError(f"row {row + 1}, {humanize(f.name).lower()}: {exc}") from None
            items.append(item)
        return items

    def set_value(self, value: Any) -> None:
        self.table.blockSignals(True)
        self.table.setRowCount(0)
        for row, item in enumerate(value or []):
            self.table.insertRow(row)
            self._set_row(row, dataclasses.asdict(item) if dataclasses.is_dataclass(item) else dict(item))
        self.table.blockSignals(False)

    def set_errors(self, errors: dict[str, str]) -> None:
        super().set_errors(errors)
        bad = set()
        prefix = self.path + "."
        for path in errors:
            if path.startswith(prefix):
                parts = path[len(prefix):].split(".")
                if len(parts) == 2 and parts[0].isdigit():
                    bad.add((int(parts[0]), parts[1]))
        marked = QColor(theme.error_color())
        marked.setAlpha(80)
        self.table.blockSignals(True)
        for row in range(self.table.rowCount()):
            for col, f in enumerate(self.columns):
                cell = self.table.item(row, col)
                if cell is not None:
                    cell.setBackground(QBrush(marked) if (row, f.name) in bad else QBrush())
        self.table.blockSignals(False)

    def describe_error(self, path: str, reason: str) -> str:
        """A readable line for an error at ``heads.0.dim``: "row 1, code width: reason"."""
        rest = path[len(self.path) + 1:].split(".") if path.startswith(self.path + ".") else []
        if len(rest) == 2 and rest[0].isdigit():
            return f"row {int(rest[0]) + 1}, {humanize(rest[1]).lower()}: {reason}"
        return reason
