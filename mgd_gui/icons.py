"""Icons drawn for MGD Studio (SVG files in ``resources/icons``), and the docks' tool buttons."""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QToolBar, QToolButton

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


def dock_tool_bar() -> QToolBar:
    """A borderless tool bar for a dock: buttons that do not fit a narrow dock move to its » menu
    (so the window fits 1280 px)."""
    bar = QToolBar()
    bar.setIconSize(QSize(16, 16))
    bar.setStyleSheet("QToolBar { border: none; spacing: 0px; }")
    return bar
