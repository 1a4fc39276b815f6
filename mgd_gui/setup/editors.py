"""One editor widget per kind of schema field, chosen from the field's type and metadata.

Numbers are typed into line edits rather than spin boxes on purpose: a spin box clamps,
and then an out-of-range value could never be typed and explained; here any text can be
entered and the form marks it with the schema's reason.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

import yaml
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLineEdit, QToolButton, QWidget)

from engine.config import choices_of

# Labels where the field name alone reads poorly; every other label comes from the name.
LABELS = {"lr": "Learning rate", "w_ce": "CE weight", "w_div": "Logit KD weight", "w_kd": "Baseline weight",
          "arch": "Architecture", "dim": "Code width", "eval_batch_size": "Test batch size", "dir": "Folder",
          "name": "Name", "root": "Folder"}


UNKNOWN_ROLE = Qt.ItemDataRole.UserRole + 7  # a drop-down entry that is not one of the field's choices


def humanize(name: str) -> str:
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def format_number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_number(text: str, kind: type, optional: bool) -> Any:
    t = text.strip()
    if not t:
        if optional:
            return None
        raise ValueError("a value is needed")
    if kind is int:
        try:
            return int(t)
        except ValueError:
            try:
                f = float(t)
            except ValueError:
                raise ValueError(f"{t!r} is not a whole number") from None
            if f.is_integer():
                return int(f)
            raise ValueError(f"{t!r} is not a whole number") from None
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"{t!r} is not a number") from None


def _registry_descriptions(kind: Any) -> dict[str, str]:
    if kind == "models":
        from engine.models import MODELS

        return {k: e.description for k, e in MODELS.entries().items()}
    if kind == "distillers":
        from engine.distillers import DISTILLERS

        return {k: e.description for k, e in DISTILLERS.entries().items()}
    return {}


def repolish(widget: QWidget) -> None:
    widget.style().unpolish(widget)
    widget.style().polish(widget)


class FieldEditor(QWidget):
    """Base class: ``value()`` parses (raising ValueError with a reason), ``set_value`` shows."""

    edited = Signal(str)  # the field's dotted path

    def __init__(self, path: str, field: dataclasses.Field, tp: Any, optional: bool, parent: QWidget | None = None):
        super().__init__(parent)
        self.path = path
        self.field = field
        self.tp = tp
        self.optional = optional
        self.help = field.metadata.get("help", "")
        self.layout_ = QHBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.setSpacing(4)
        self.setToolTip(self.help)

    def value(self) -> Any:
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError

    def inputs(self) -> list[QWidget]:
        """The widgets to mark when the value is invalid."""
        return [self.layout_.itemAt(0).widget()]

    def set_errors(self, errors: dict[str, str]) -> None:
        """Mark the inputs; ``errors`` maps dotted paths at or below this field to reasons."""
        invalid = bool(errors)
        for w in self.inputs():
            if w.property("invalid") != invalid:
                w.setProperty("invalid", invalid)
                repolish(w)

    def _emit(self, *_: Any) -> None:
        self.edited.emit(self.path)


class BoolEditor(FieldEditor):
    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.box = QCheckBox()
        self.box.setToolTip(self.help)
        self.layout_.addWidget(self.box)
        self.layout_.addStretch(1)
        self.box.toggled.connect(self._emit)

    def value(self) -> Any:
        return self.box.isChecked()

    def set_value(self, value: Any) -> None:
        self.box.setChecked(bool(value))


class LineEditor(FieldEditor):
    """Text typed by the user, parsed on every edit."""

    placeholder = ""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.edit = QLineEdit()
        self.edit.setToolTip(self.help)
        self.edit.setPlaceholderText(self.placeholder_text())
        self.edit.setClearButtonEnabled(self.optional)
        self.layout_.addWidget(self.edit, 1)
        self.edit.textEdited.connect(self._emit)

    def placeholder_text(self) -> str:
        return "auto" if self.optional else self.placeholder

    def text(self) -> str:
        return self.edit.text()

    def set_text(self, text: str) -> None:
        if self.edit.text() != text:
            self.edit.setText(text)


class NumberEditor(LineEditor):
    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        lo, hi = self.field.metadata.get("minimum"), self.field.metadata.get("maximum")
        bounds = []
        if lo is not None:
            bounds.append(f"minimum {lo}")
        if hi is not None:
            bounds.append(f"maximum {hi}")
        if bounds:
            self.edit.setToolTip(f"{self.help} ({', '.join(bounds)})")
        self.edit.setMinimumWidth(72)
        self.edit.setMaximumWidth(160)
        self.layout_.addStretch(1)

    def value(self) -> Any:
        return parse_number(self.text(), self.tp, self.optional)

    def set_value(self, value: Any) -> None:
        self.set_text(format_number(value))


class TextEditor(LineEditor):
    def placeholder_text(self) -> str:
        return "none" if self.optional else ""

    def value(self) -> Any:
        text = self.text().strip()
        if not text and self.optional:
            return None
        return text

    def set_value(self, value: Any) -> None:
        self.set_text("" if value is None else str(value))


class PathEditor(TextEditor):
    """A file or folder: typed, or picked with a dialog."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.kind = self.field.metadata.get("widget", "file")
        button = QToolButton()
        button.setText("…")
        button.setToolTip("Choose a folder" if self.kind == "dir" else "Choose a file")
        button.clicked.connect(self.browse)
        self.layout_.addWidget(button)

    def browse(self) -> None:
        start = self.text() or ""
        if self.kind == "dir":
            chosen = QFileDialog.getExistingDirectory(self, f"Choose: {humanize(self.field.name)}", start)
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, f"Choose: {humanize(self.field.name)}", start)
        if chosen:
            self.edit.setText(chosen)
            self._emit()


class ListEditor(LineEditor):
    """A list of numbers or words, typed as ``150, 180, 210``."""

    placeholder = "empty list"

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        (self.item_type,) = typing.get_args(self.tp) or (str,)
        choices = choices_of(self.field) if self.field.metadata.get("choices") is not None else None
        if choices:
            shown = ", ".join(map(str, choices[:30])) + (", …" if len(choices) > 30 else "")
            self.edit.setToolTip(f"{self.help}\n\nAllowed, separated by commas: {shown}")
            self.edit.setPlaceholderText(f"e.g. {', '.join(map(str, choices[:2]))}")

    def value(self) -> Any:
        parts = [p for p in self.text().replace(";", ",").replace(" ", ",").split(",") if p.strip()]
        if not parts and self.optional:  # an empty optional list is "auto" (milestones: scaled with the epochs)
            return None
        if self.item_type in (int, float):
            values = []
            for p in parts:
                try:
                    values.append(parse_number(p, self.item_type, False))
                except ValueError as exc:
                    raise ValueError(f"{exc}; write numbers separated by commas") from None
            return values
        return [p.strip() for p in parts]

    def set_value(self, value: Any) -> None:
        self.set_text(", ".join(format_number(v) for v in (value or [])))


class MappingEditor(LineEditor):
    """A free-form mapping, typed as YAML: ``{hint_layer: 2}``."""

    placeholder = "{}"

    def value(self) -> Any:
        text = self.text().strip()
        if not text:
            return {}
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ValueError("not valid YAML; write a mapping such as {key: 1}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValueError("expected a mapping such as {key: 1}")
        return data

    def set_value(self, value: Any) -> None:
        self.set_text(yaml.safe_dump(value or {}, default_flow_style=True).strip() if value else "")


class OptionsEditor(FieldEditor):
    """The chosen baseline's own options, one typed editor each, built from the ``Options``
    dataclass the baseline declares (:meth:`set_schema`). Until that is known (it is looked
    up in the background), or for a baseline without options, the value is kept as it is."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        from PySide6.QtWidgets import QFormLayout, QLabel

        self.holder = QWidget()
        self.form = QFormLayout(self.holder)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.setVerticalSpacing(4)
        self.note = QLabel("…")
        self.note.setWordWrap(True)
        self.layout_.addWidget(self.holder, 1)
        self.form.addRow(self.note)
        self.schema: type | None = None
        self.editors: dict[str, FieldEditor] = {}
        self._value: dict = {}

    def inputs(self) -> list[QWidget]:
        return []

    def set_schema(self, schema: type | None, baseline: str = "") -> None:
        """Show one editor per field of ``schema`` (a dataclass); None: not known yet."""
        from PySide6.QtWidgets import QLabel

        if schema is self.schema and (schema is not None or not self.editors):
            return
        value = self.value()
        while self.form.rowCount():
            self.form.removeRow(0)
        self.editors = {}
        self.schema = schema
        if schema is None:
            self.note = QLabel("Looking up the baseline's options…")
            self.form.addRow(self.note)
        elif not dataclasses.fields(schema):
            self.note = QLabel(f"{baseline or 'This baseline'} has no options of its own.")
            self.form.addRow(self.note)
        else:
            hints = typing.get_type_hints(schema)
            for f in dataclasses.fields(schema):
                editor = make_editor(f"{self.path}.{f.name}", f, hints[f.name])
                editor.edited.connect(self._emit)
                label = QLabel(humanize(f.name))
                label.setToolTip(f.metadata.get("help", ""))
                self.form.addRow(label, editor)
                self.editors[f.name] = editor
        self.set_value(value)

    def value(self) -> Any:
        if not self.editors:
            return dict(self._value)
        out = {}
        for name, editor in self.editors.items():
            try:
                out[name] = editor.value()
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        # keep keys the schema does not know: validation names them (a typo in an opened file)
        out.update({k: v for k, v in self._value.items() if k not in self.editors})
        return out

    def set_value(self, value: Any) -> None:
        self._value = dict(value or {})
        if self.schema is None:
            return
        defaults = {f.name: f.default for f in dataclasses.fields(self.schema)}
        for name, editor in self.editors.items():
            editor.blockSignals(True)
            try:
                editor.set_value(self._value.get(name, defaults[name]))
            finally:
                editor.blockSignals(False)
        self._value = {k: v for k, v in self._value.items() if k not in self.editors}

    def set_errors(self, errors: dict[str, str]) -> None:
        for name, editor in self.editors.items():
            editor.set_errors({p: r for p, r in errors.items() if p == f"{self.path}.{name}"})


class ChoiceEditor(FieldEditor):
    """A drop-down of the field's choices (registries included), with their descriptions."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(10)
        self.descriptions = _registry_descriptions(self.field.metadata.get("choices"))
        self.choices = tuple(choices_of(self.field) or ())
        if self.optional:
            self.combo.addItem("none", None)
        for choice in self.choices:
            self._add(choice)
        self.layout_.addWidget(self.combo, 1)
        self.combo.currentIndexChanged.connect(self._changed)
        self._update_tip()

    def _add(self, choice: Any) -> None:
        self.combo.addItem(str(choice), choice)
        desc = self.descriptions.get(choice)
        if desc:
            self.combo.setItemData(self.combo.count() - 1, desc, Qt.ItemDataRole.ToolTipRole)

    def _changed(self, *_: Any) -> None:
        self._drop_unknown(keep=self.combo.currentData())
        self._update_tip()
        self._emit()

    def _drop_unknown(self, keep: Any = None) -> None:
        """Remove values added only to show an opened file's invalid setting (once left, they go)."""
        for i in range(self.combo.count() - 1, -1, -1):
            if self.combo.itemData(i, UNKNOWN_ROLE) and self.combo.itemData(i) != keep:
                self.combo.blockSignals(True)
                self.combo.removeItem(i)
                self.combo.blockSignals(False)

    def _update_tip(self) -> None:
        desc = self.descriptions.get(self.combo.currentData())
        self.combo.setToolTip(f"{self.help}\n\n{self.combo.currentText()}: {desc}" if desc else self.help)

    def description(self) -> str:
        return self.descriptions.get(self.combo.currentData(), "")

    def value(self) -> Any:
        return self.combo.currentData()

    def set_value(self, value: Any) -> None:
        self._drop_unknown(keep=value)
        index = self.combo.findData(value)
        if index < 0:  # a value the schema does not know (an old config): show it, validation explains
            self.combo.addItem(f"{value} (unknown)", value)
            index = self.combo.count() - 1
            self.combo.setItemData(index, True, UNKNOWN_ROLE)
            self.combo.setItemData(index, "Not a valid choice: it came from the opened file",
                                   Qt.ItemDataRole.ToolTipRole)
        self.combo.setCurrentIndex(index)
        self._update_tip()


class MultiChoiceEditor(FieldEditor):
    """A list whose items come from fixed choices: one check box per choice."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.boxes: dict[Any, QCheckBox] = {}
        for choice in choices_of(self.field) or ():
            box = QCheckBox(str(choice))
            box.setToolTip(self.help)
            box.toggled.connect(self._emit)
            self.boxes[choice] = box
            self.layout_.addWidget(box)
        self.layout_.addStretch(1)

    def inputs(self) -> list[QWidget]:
        return list(self.boxes.values())

    def value(self) -> Any:
        return [c for c, box in self.boxes.items() if box.isChecked()]

    def set_value(self, value: Any) -> None:
        for choice, box in self.boxes.items():
            box.setChecked(choice in (value or []))


def make_editor(path: str, field: dataclasses.Field, tp: Any) -> FieldEditor:
    """The editor for one leaf field (dataclass lists are handled by the table editor)."""
    inner, optional = unwrap_optional(tp)
    meta = field.metadata
    origin = typing.get_origin(inner)
    if inner is bool:
        return BoolEditor(path, field, inner, optional)
    if meta.get("choices") is not None:
        if origin is list:
            if isinstance(meta["choices"], str):
                # a registry (models, distillers): a typed list keeps order and repeats
                # (two peers of one architecture); validation names the allowed values
                return ListEditor(path, field, inner, optional)
            return MultiChoiceEditor(path, field, inner, optional)
        if meta["choices"] == "models":  # the zoo plus torchvision and timm: searchable, with counts
            from mgd_gui.setup.model_picker import ModelPicker

            return ModelPicker(path, field, inner, optional)
        return ChoiceEditor(path, field, inner, optional)
    if inner in (int, float):
        return NumberEditor(path, field, inner, optional)
    if origin is list:
        return ListEditor(path, field, inner, optional)
    if meta.get("widget") == "options":
        return OptionsEditor(path, field, inner, optional)
    if inner is dict or origin is dict:
        return MappingEditor(path, field, inner, optional)
    if meta.get("widget") in ("file", "dir"):
        return PathEditor(path, field, inner, optional)
    return TextEditor(path, field, inner, optional)
