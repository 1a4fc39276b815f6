"""The teacher's and student's architecture picker: the CIFAR zoo, torchvision and timm.

A drop-down holds the current choice (the zoo at first; the libraries' models once the
background look-up has listed them) and a search box under it filters the whole catalogue
as the user types (``timm:mobilenet`` lists timm's MobileNets), showing each model's
parameter count for the data set when it is known. Under them, the chosen model's
parameter count and a warning when training it would not fit the chosen device (the
estimate comes from the engine, see :func:`engine.models.training_memory`).

The picker never imports torch: counts, the catalogue and memory estimates arrive from
:mod:`mgd_gui.background`, which answers ``counts_wanted``.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QCompleter, QLabel, QLineEdit, QVBoxLayout, QWidget

from mgd_gui import screen, theme
from mgd_gui.setup.editors import ChoiceEditor

NAME_ROLE = Qt.ItemDataRole.UserRole + 1
#: matches of a search whose parameter counts are asked for (the first ones shown)
COUNT_MATCHES = 25
SEARCH_DEBOUNCE_MS = 250
#: warn when the training estimate exceeds this share of the device's memory
MEMORY_WARN_FRACTION = 0.9


def millions(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"


def memory_size(n: float) -> str:
    """Bytes as ``1.5 GiB``; below 1 GiB as ``340 MiB`` (``2.5 MiB`` below 10), below 1 MiB as ``12 KiB``:
    never ``0.0 GiB``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= size * (1 - 1 / 2048):  # what rounds to 1024 of the smaller unit is 1.0 of this one
            value = n / size
            return f"{value:.1f} {unit}" if unit == "GiB" or value < 9.95 else f"{value:.0f} {unit}"
    return f"{n / 2**10:.0f} KiB"


def memory_text(arch: str, estimate: int, capacity: int | None, device: str, image_size: int,
                batch_size: int) -> tuple[str, bool]:
    """(text, too_large) for a training-memory estimate against a device's memory."""
    need = f"training needs about {memory_size(estimate)} at {image_size} px, batch {batch_size}"
    if not capacity:
        return need, False
    if estimate > MEMORY_WARN_FRACTION * capacity:
        return (f"⚠ {arch} is likely too large for {device}: {need}, the device has {memory_size(capacity)}; "
                "lower the batch size or the image size, or choose a smaller model"), True
    return f"{need} ({device}: {memory_size(capacity)})", False


class ModelPicker(ChoiceEditor):
    """A :class:`ChoiceEditor` for ``teacher.arch`` / ``student.arch`` with search, counts and a memory warning."""

    counts_wanted = Signal(str, list)  # (field path, model names whose counts are not known)

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.combo.setMaxVisibleItems(20)
        self.counts: dict[str, int | None] = {}
        self.catalog: dict[str, str] = dict(self.descriptions)
        self.layout_.removeWidget(self.combo)
        column = QVBoxLayout()
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(self.combo)
        self.search = QLineEdit()
        self.search.setClearButtonEnabled(True)
        self.search.setToolTip("Search every model: the CIFAR zoo, torchvision:NAME and timm:NAME "
                               "(e.g. timm:mobilenet); choose one from the list, or type a full name and press Enter")
        column.addWidget(self.search)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        column.addWidget(self.info)
        self.layout_.addLayout(column, 1)

        self.model = QStandardItemModel(self)
        self.completer = QCompleter(self.model, self)
        self.completer.setCompletionRole(NAME_ROLE)
        self.completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setMaxVisibleItems(15)
        self.search.setCompleter(self.completer)
        popup = self.completer.popup()
        popup.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # where even the screen is too narrow
        popup.installEventFilter(self)  # the completer sizes it to the search field: widened to its rows
        self.completer.activated.connect(self._chosen)
        self.search.returnPressed.connect(lambda: self._chosen(self.search.text()))
        self.search.textEdited.connect(lambda *_: self._search_timer.start())
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DEBOUNCE_MS)
        self._search_timer.timeout.connect(self._ask_counts)
        self._rows: dict[str, QStandardItem] = {}
        self._add_to_model(self.catalog.items())
        self._placeholder()
        self.memory: tuple[str, bool] = ("", False)

    # -- the catalogue ---------------------------------------------------------------------
    def _placeholder(self) -> None:
        self.search.setPlaceholderText(f"Search {len(self._rows):,} models (e.g. timm:mobilenet)")

    def _add_to_model(self, entries) -> None:
        for name, description in entries:
            if name in self._rows:
                continue
            item = QStandardItem(self._label(name))
            item.setData(name, NAME_ROLE)
            item.setToolTip(f"{name}: {description}" if description else name)
            item.setEditable(False)
            self.model.appendRow(item)
            self._rows[name] = item

    def _label(self, name: str) -> str:
        count = self.counts.get(name)
        return f"{name}    {millions(count)}" if count else name

    def set_catalog(self, entries: list[tuple[str, str]]) -> None:
        """Every model on offer (the zoo, torchvision, timm), as ``(name, description)``."""
        new = [(n, d) for n, d in entries if n not in self.catalog]
        self.catalog.update(dict(new))
        self.descriptions.update({n: d for n, d in new})
        self._add_to_model(new)
        current = self.value()
        self.combo.blockSignals(True)
        known = {self.combo.itemData(i) for i in range(self.combo.count())}
        for name, _ in new:
            if name not in known:
                self._add(name)
        self.combo.setCurrentIndex(max(0, self.combo.findData(current)))
        self.combo.blockSignals(False)
        self._placeholder()

    def matches(self, text: str) -> list[str]:
        """Catalogue names containing ``text`` (case-insensitive), in catalogue order: what the search lists."""
        needle = text.strip().lower()
        return [n for n in self._rows if needle in n.lower()]

    def popup_width(self) -> int:
        """The width that shows the longest listed row (name and count) in full, up to the screen's."""
        popup = self.completer.popup()
        rows = popup.sizeHintForColumn(0)  # the delegate's width of the widest row, margins included
        scroll = popup.verticalScrollBar().sizeHint().width() \
            if self.completer.completionCount() > self.completer.maxVisibleItems() else 0
        wanted = rows + scroll + 2 * popup.frameWidth()
        return min(max(wanted, self.search.width()), screen.available_area(self).width())

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt name
        popup = self.completer.popup()
        if watched is popup and event.type() in (QEvent.Type.Show, QEvent.Type.Resize) and popup.isVisible():
            width = self.popup_width()
            if popup.width() != width:
                area = screen.available_area(self)
                x = max(area.left(), min(popup.x(), area.right() + 1 - width))  # inside the screen
                popup.setGeometry(x, popup.y(), width, popup.height())
        return super().eventFilter(watched, event)

    # -- counts -----------------------------------------------------------------------------
    def set_counts(self, counts: dict[str, int | None], reset: bool = False) -> None:
        """Parameter counts for the data set's classes and channels (``reset``: the data set changed)."""
        if reset:
            self.counts.clear()
        self.counts.update(counts)
        for name, item in self._rows.items():
            if reset or name in counts:
                item.setText(self._label(name))
        self._render_info()

    def _ask_counts(self) -> None:
        text = self.search.text().strip()
        if not text:
            return
        wanted = [n for n in self.matches(text)[:COUNT_MATCHES] if n not in self.counts]
        if wanted:
            self.counts_wanted.emit(self.path, wanted)

    def _chosen(self, text: str) -> None:
        name = str(text).strip()
        if not name:
            return
        self.set_value(name)
        self.search.clear()
        self._emit()

    # -- the chosen model's figures ------------------------------------------------------------
    def show_memory(self, text: str, too_large: bool) -> None:
        self.memory = (text, too_large)
        self._render_info()

    def _render_info(self) -> None:
        if not hasattr(self, "info"):
            return
        name = self.value()
        parts = []
        count = self.counts.get(name)
        if count:
            parts.append(f"{millions(count)} parameters")
        text, too_large = self.memory
        if text:
            parts.append(text)
        self.info.setText(" · ".join(parts))
        color = theme.error_color() if too_large else theme.muted_color()
        self.info.setStyleSheet(f"color: {color};")
        self.info.setVisible(bool(parts))

    def too_large(self) -> bool:
        return self.memory[1]

    def _changed(self, *_: Any) -> None:
        self.memory = ("", False)  # the estimate was for the previous model; a new one follows
        self._render_info()
        super()._changed()

    def set_value(self, value: Any) -> None:
        super().set_value(value)
        if hasattr(self, "info"):
            self._render_info()

    def inputs(self) -> list[QWidget]:
        return [self.combo, self.search]
