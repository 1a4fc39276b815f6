"""Icons drawn for MGD Studio (SVG files in ``resources/icons``), and the docks' tool buttons."""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QLayout, QLayoutItem, QSizePolicy, QToolButton, QWidget

from mgd_gui import paths


@lru_cache(maxsize=None)
def icon(name: str) -> QIcon:
    path = paths.icon_path(name)
    return QIcon(str(path)) if path.is_file() else QIcon()


def tool_button(text: str, tip: str, icon_name: str | None = None) -> QToolButton:
    """A flat text-and-icon button of a dock's tool bar."""
    b = QToolButton()
    b.setText(text)
    if icon_name:
        b.setIcon(icon(icon_name))
    b.setToolTip(tip)
    b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    b.setAutoRaise(True)
    return b


class FlowLayout(QLayout):
    """Items left to right, wrapping onto a new row where the width ends (each at its size hint)."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 0, row_spacing: int = 2):
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing, self._row_spacing = spacing, row_spacing
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item: QLayoutItem) -> None:  # noqa: N802 - Qt name
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # noqa: N802 - Qt name
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # noqa: N802 - Qt name
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802 - Qt name
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt name
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt name
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802 - Qt name
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def _shown(self) -> list[QLayoutItem]:
        return [item for item in self._items if not item.isEmpty()]

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt name
        """All items on one row."""
        hints = [item.sizeHint() for item in self._shown()]
        m = self.contentsMargins()
        width = sum(h.width() for h in hints) + self._spacing * max(0, len(hints) - 1)
        return QSize(width + m.left() + m.right(), max((h.height() for h in hints), default=0) + m.top() + m.bottom())

    def minimumSize(self) -> QSize:  # noqa: N802 - Qt name
        """One item a row: as narrow as the widest item."""
        size = QSize()
        for item in self._shown():
            size = size.expandedTo(item.sizeHint())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    def _arrange(self, rect: QRect, move: bool) -> int:
        """Lay the items out in ``rect`` (only measure unless ``move``); returns the height used."""
        m = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        x, y, row = area.x(), area.y(), 0
        for item in self._shown():
            hint = item.sizeHint()
            if x > area.x() and x + hint.width() > area.right() + 1:  # wrap onto a new row
                x, y, row = area.x(), y + row + self._row_spacing, 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + self._spacing
            row = max(row, hint.height())
        return y + row - rect.y() + m.bottom()


class ToolRow(QWidget):
    """A dock's row of tool buttons that wraps onto a second row in a narrow dock, so that every
    button stays in sight (a tool bar hid the last ones behind a » chevron that could not show
    widgets)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.flow = FlowLayout(self)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)

    def addWidget(self, widget: QWidget) -> None:  # noqa: N802 - as QToolBar's
        self.flow.addWidget(widget)


def dock_tool_bar() -> ToolRow:
    """The row of tool buttons of a dock (see :class:`ToolRow`): add buttons with ``addWidget``."""
    return ToolRow()


def key_paths(panel: QWidget, keys: dict[str, QToolButton]) -> list:
    """Give each of a dock's buttons a key (``{"F2": button}``), active while the panel or a widget
    in it has the focus; the key is named in the button's tooltip. A key presses its button only
    when the button is enabled, so a key does what the button would."""
    from PySide6.QtGui import QKeySequence, QShortcut

    made = []
    for sequence, button in keys.items():
        key = QKeySequence(sequence)
        shortcut = QShortcut(key, panel)
        shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        shortcut.activated.connect(lambda b=button: b.click() if b.isEnabled() else None)
        button.setToolTip(f"{button.toolTip()} ({key.toString(QKeySequence.SequenceFormat.NativeText)})")
        made.append(shortcut)
    return made
