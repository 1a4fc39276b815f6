"""The experiment form, built from the engine's config schema.

Every field of :class:`engine.config.ExperimentConfig` gets an editor chosen from its type
and metadata (:func:`make_editor`); a list of dataclasses gets a table. Top-level
dataclass fields become sections, nested ones group boxes. A new field in the schema
appears here with no change; ``HIDDEN`` lists fields shown elsewhere (the toolbar).

Edits go through :func:`engine.config.set_value` (type-checked), then
:func:`engine.config.validation_errors` marks every invalid field with its reason.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QFormLayout, QFrame, QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QScrollArea, QStackedWidget, QVBoxLayout, QWidget)

from engine.config import ExperimentConfig, build_section, field_types, get_value, set_value, validation_errors
from engine.errors import ConfigError
from mgd_gui import theme
from mgd_gui.setup.editors import FieldEditor, humanize, make_editor
from mgd_gui.setup.table_editor import TableEditor

HIDDEN = frozenset({"device"})  # the toolbar's device drop-down edits it
OPTIONS = "distiller.options"
GENERAL = "general"


def _is_dataclass_list(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is list and bool(args) and dataclasses.is_dataclass(args[0])


class _Row(QWidget):
    """An editor with its error line under it."""

    def __init__(self, editor: FieldEditor):
        super().__init__()
        self.editor = editor
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(1)
        layout.addWidget(editor)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setObjectName("fieldError")
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)  # a command to copy
        self.error.hide()
        self.current = ""
        layout.addWidget(self.error)
        # information about the value, not a problem (e.g. what Run will do): a ringed "i" (a letter
        # every font has, where a glyph such as U+24D8 is an empty box without a font that has it)
        self.note_box = QWidget()
        note_layout = QHBoxLayout(self.note_box)
        note_layout.setContentsMargins(0, 0, 0, 0)
        note_layout.setSpacing(4)
        self.note_mark = QLabel("i")
        self.note_mark.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.note_mark.setToolTip("Information, not a problem")
        size = self.note_mark.fontMetrics().height()
        self.note_mark.setFixedSize(size, size)
        note_layout.addWidget(self.note_mark, 0, Qt.AlignmentFlag.AlignTop)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setObjectName("fieldNote")
        note_layout.addWidget(self.note, 1)
        self.note_box.hide()
        layout.addWidget(self.note_box)

    def show_note(self, text: str) -> None:
        if text:
            muted = theme.muted_color()
            self.note.setText(text)
            self.note.setStyleSheet(f"color: {muted};")
            size = self.note_mark.height()
            self.note_mark.setStyleSheet(f"color: {muted}; border: 1px solid {muted}; border-radius: {size // 2}px; "
                                         "font-weight: bold;")
            self.note_box.show()
        else:
            self.note_box.hide()
            self.note.clear()

    def show_error(self, text: str) -> None:
        self.current = text
        if text:
            self.error.setText(f"⚠ {text}")
            self.error.setStyleSheet(f"color: {theme.error_color()};")
            self.error.setToolTip(text)
            self.error.show()
        else:
            self.error.hide()
            self.error.clear()


class ConfigForm(QWidget):
    """Edits an :class:`ExperimentConfig`; ``changed`` carries every valid edit."""

    changed = Signal(object)  # ExperimentConfig
    validity_changed = Signal(bool)

    def __init__(self, config: ExperimentConfig | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self._cfg = copy.deepcopy(config) if config is not None else ExperimentConfig()
        self._editors: dict[str, FieldEditor] = {}
        self._rows: dict[str, _Row] = {}
        self._groups: dict[str, QGroupBox] = {}
        self._section_of: dict[str, str] = {}
        self._pages: dict[str, QVBoxLayout] = {}
        self._section_items: dict[str, QListWidgetItem] = {}
        self._parse_errors: dict[str, str] = {}
        self._external: dict[str, str] = {}
        self._errors: dict[str, str] = {}
        self._options_schema: tuple[str, type] | None = None  # (baseline, its Options dataclass)
        self._valid = True
        self._build()
        self.set_config(self._cfg)

    # -- building -------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(4)
        self.problems = QLabel()
        self.problems.setWordWrap(True)
        self.problems.hide()
        outer.addWidget(self.problems)

        body = QHBoxLayout()
        body.setSpacing(0)
        outer.addLayout(body, 1)
        self.sections = QListWidget()
        self.sections.setObjectName("sections")
        self.sections.setFixedWidth(104)
        self.sections.setFrameShape(QFrame.Shape.NoFrame)
        self.sections.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # "Comparison ⚠" fits
        self.stack = QStackedWidget()
        body.addWidget(self.sections)
        body.addWidget(self.stack, 1)
        self.sections.currentRowChanged.connect(self.stack.setCurrentIndex)

        hints = field_types(ExperimentConfig)
        top = dataclasses.fields(ExperimentConfig)
        general = [f for f in top if not dataclasses.is_dataclass(hints[f.name]) and f.name not in HIDDEN]
        if general:
            form = self._add_page(GENERAL, "General", "Name and seed of the experiment.")
            for f in general:
                self._add_field(form, f, hints[f.name], f.name, GENERAL)
        for f in top:
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp) and f.name not in HIDDEN:
                form = self._add_page(f.name, humanize(f.name), f.metadata.get("help", ""))
                self._add_dataclass(form, tp, f.name, f.name)
        self.sections.setCurrentRow(0)

    def _add_page(self, key: str, title: str, help_text: str) -> QFormLayout:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(10, 6, 8, 8)
        caption = QLabel(help_text)
        caption.setWordWrap(True)
        caption.setStyleSheet(f"color: {theme.muted_color()};")
        layout.addWidget(caption)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        form.setVerticalSpacing(6)
        layout.addLayout(form)
        layout.addStretch(1)
        self._pages[key] = layout
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(page)
        self.stack.addWidget(scroll)
        item = QListWidgetItem(title)
        item.setToolTip(help_text)
        item.setData(Qt.ItemDataRole.UserRole, key)
        self.sections.addItem(item)
        self._section_items[key] = item
        return form

    def _add_dataclass(self, form: QFormLayout, cls: type, prefix: str, section: str) -> None:
        hints = field_types(cls)
        for f in dataclasses.fields(cls):
            path = f"{prefix}.{f.name}"
            if path in HIDDEN:
                continue
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                box = QGroupBox(humanize(f.name))
                box.setToolTip(f.metadata.get("help", ""))
                inner = QFormLayout(box)
                inner.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
                inner.setVerticalSpacing(6)
                self._groups[path] = box
                self._add_dataclass(inner, tp, path, section)
                form.addRow(box)
            else:
                self._add_field(form, f, tp, path, section)

    def _add_field(self, form: QFormLayout, f: dataclasses.Field, tp: Any, path: str, section: str) -> None:
        if _is_dataclass_list(tp):
            editor: FieldEditor = TableEditor(path, f, tp, False)
        else:
            editor = make_editor(path, f, tp)
        editor.edited.connect(self._on_edited)
        row = _Row(editor)
        label = QLabel(f.metadata.get("label") or humanize(f.name))
        label.setToolTip(f.metadata.get("help", ""))
        label.setBuddy(editor)
        if isinstance(editor, TableEditor):  # a table reads better under its title, full width
            form.addRow(label)
            form.addRow(row)
        else:
            form.addRow(label, row)
        self._editors[path] = editor
        self._rows[path] = row
        self._section_of[path] = section

    # -- public API -------------------------------------------------------------------
    def config(self) -> ExperimentConfig:
        """The config as last edited (fields with unparsable text keep their last good value)."""
        return copy.deepcopy(self._cfg)

    def set_config(self, cfg: ExperimentConfig) -> None:
        """Show ``cfg`` in every editor (no ``changed`` signal for the editors' own updates)."""
        self._cfg = copy.deepcopy(cfg)
        self._parse_errors.clear()
        for path, editor in self._editors.items():
            editor.blockSignals(True)
            for child in editor.findChildren(QWidget):
                child.blockSignals(True)
            try:
                editor.set_value(get_value(self._cfg, path))
            finally:
                for child in editor.findChildren(QWidget):
                    child.blockSignals(False)
                editor.blockSignals(False)
        self._revalidate()
        self.changed.emit(self.config())

    def set_field(self, path: str, value: Any) -> None:
        """Set one field from outside the form (the toolbar's device list, for example)."""
        try:
            self._cfg = set_value(self._cfg, path, value)
        except ConfigError as exc:
            self._parse_errors[exc.field or path] = exc.reason
        else:
            self._parse_errors.pop(path, None)
            if path in self._editors:
                self._editors[path].blockSignals(True)
                self._editors[path].set_value(value)
                self._editors[path].blockSignals(False)
        self._revalidate()
        self.changed.emit(self.config())

    def editor(self, path: str) -> FieldEditor:
        return self._editors[path]

    def editors(self) -> dict[str, FieldEditor]:
        return dict(self._editors)

    def group(self, path: str) -> QGroupBox:
        return self._groups[path]

    def add_extra(self, section: str, widget: QWidget) -> None:
        """Add a widget (a preview, a summary) at the end of a section's page."""
        layout = self._pages[section]
        layout.insertWidget(layout.count() - 1, widget)

    def show_section(self, section: str) -> None:
        item = self._section_items[section]
        self.sections.setCurrentItem(item)

    def errors(self) -> dict[str, str]:
        """Every current problem: dotted path -> reason."""
        return dict(self._errors)

    def error_text(self, path: str) -> str:
        """The reason shown under the field at ``path`` ("" when it is valid)."""
        row = self._rows.get(path)
        return row.current if row is not None else ""

    def parse_errors(self) -> dict[str, str]:
        """Fields whose text could not be read (the config keeps their last good value)."""
        return dict(self._parse_errors)

    def is_valid(self) -> bool:
        return not self._errors

    def restyle(self) -> None:
        """Mark the problems again, in the colours of the current theme."""
        self._revalidate()

    def set_options_schema(self, baseline: str, schema: type) -> None:
        """The ``Options`` dataclass of ``baseline`` (looked up in the background): its fields get
        typed editors, and the options are validated against it."""
        if baseline != self._cfg.distiller.name:
            return  # the user has chosen another baseline since
        self._options_schema = (baseline, schema)
        editor = self._editors.get(OPTIONS)
        if editor is not None:
            editor.blockSignals(True)
            editor.set_schema(schema, baseline)
            editor.set_value(self._cfg.distiller.options)
            editor.blockSignals(False)
        self._revalidate()

    def options_schema(self) -> type | None:
        known = self._options_schema
        return known[1] if known is not None and known[0] == self._cfg.distiller.name else None

    def set_note(self, path: str, text: str | None) -> None:
        """Information shown under a field that is no problem (Run stays on)."""
        row = self._rows.get(path)
        if row is not None:
            row.show_note(text or "")

    def note_text(self, path: str) -> str:
        row = self._rows.get(path)
        return row.note.text() if row is not None and not row.note_box.isHidden() else ""

    def set_external_error(self, path: str, reason: str | None) -> None:
        """A problem found outside the schema (a checkpoint that does not fit, a missing GPU)."""
        if reason:
            self._external[path] = reason
        else:
            self._external.pop(path, None)
        self._revalidate()

    # -- editing --------------------------------------------------------------------
    def _on_edited(self, path: str) -> None:
        editor = self._editors[path]
        try:
            value = editor.value()
        except ValueError as exc:
            self._parse_errors[path] = str(exc)
            self._revalidate()
            return
        previous_baseline = self._cfg.distiller.name
        try:
            self._cfg = set_value(self._cfg, path, value)
        except ConfigError as exc:
            self._parse_errors[path] = exc.reason
            self._revalidate()
            return
        self._parse_errors.pop(path, None)
        if path == "distiller.name" and value != previous_baseline:
            # another baseline has other options: start from its defaults
            self._cfg = set_value(self._cfg, OPTIONS, {})
            self._parse_errors.pop(OPTIONS, None)
            editor = self._editors.get(OPTIONS)
            if editor is not None:
                editor.blockSignals(True)
                editor.set_schema(None)
                editor.set_value({})
                editor.blockSignals(False)
        self._revalidate()
        self.changed.emit(self.config())

    def _revalidate(self) -> None:
        errors: dict[str, str] = dict(self._parse_errors)
        for err in validation_errors(self._cfg):
            errors.setdefault(err.field, err.reason)
        schema = self.options_schema()
        if schema is not None and OPTIONS not in errors:
            try:
                build_section(schema, self._cfg.distiller.options, OPTIONS)
            except ConfigError as exc:
                errors.setdefault(exc.field, exc.reason)
        for path, reason in self._external.items():
            errors.setdefault(path, reason)
        self._errors = errors

        placed: set[str] = set()
        bad_sections: set[str] = set()
        for path, editor in self._editors.items():
            mine = {p: r for p, r in errors.items() if p == path or p.startswith(path + ".")}
            editor.set_errors(mine)
            placed.update(mine)
            if isinstance(editor, TableEditor):
                text = "\n".join(editor.describe_error(p, r) for p, r in mine.items())
            else:  # a sub-setting (a baseline's option) is named in the text
                text = "\n".join(r if p == path else f"{p[len(path) + 1:]}: {r}" for p, r in mine.items())
            self._rows[path].show_error(text)
            if mine:
                bad_sections.add(self._section_of[path])
        for key, item in self._section_items.items():
            title = item.text().removesuffix(" ⚠")
            item.setText(f"{title} ⚠" if key in bad_sections else title)
            item.setForeground(QBrush(QColor(theme.error_color())) if key in bad_sections else QBrush())
        rest = [f"{p}: {r}" for p, r in errors.items() if p not in placed]
        if rest:
            self.problems.setText("⚠ " + "\n⚠ ".join(rest))
            self.problems.setStyleSheet(f"color: {theme.error_color()}; padding: 4px;")
            self.problems.show()
        else:
            self.problems.hide()
        valid = not errors
        if valid != self._valid:
            self._valid = valid
            self.validity_changed.emit(valid)

