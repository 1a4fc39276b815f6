"""The part of the screen a window may use, and the one rule by which the studio's windows fit it.

Every dialog and window sizes itself through :func:`fit_window` (or :func:`fitted_size`): as
large as it wants, no larger than the screen's available area (less room for the window
manager's frame and title bar), no smaller than a sensible minimum, and placed inside that
area. :func:`available_area` reads the screen of the window's parent; :func:`simulate` makes it
answer a given size instead (the tests and ``docs/make_screenshots.py --screens`` check each
window at 1024x700, 1280x800 and 1920x1080 on one offscreen screen).
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialog, QWidget

#: room left around a window for the window manager's frame and title bar (a window's own frame
#: is not known before it is first shown)
DECORATION = QSize(16, 40)
#: the smallest screen the studio is laid out for
SMALLEST = QSize(1024, 700)

_simulated: QRect | None = None


def simulate(size: QSize | tuple[int, int] | None) -> None:
    """Make :func:`available_area` answer a screen of ``size`` at (0, 0); ``None``: the real screen again."""
    global _simulated
    if size is None:
        _simulated = None
        return
    size = QSize(*size) if isinstance(size, tuple) else QSize(size)
    _simulated = QRect(QPoint(0, 0), size)


def available_area(widget: QWidget | None = None) -> QRect:
    """The available geometry (the screen less task bars and panels) of the screen ``widget``'s
    window is on, or of the primary screen."""
    if _simulated is not None:
        return QRect(_simulated)
    screen = (widget.parentWidget() or widget).window().screen() if widget is not None else None
    screen = screen or QGuiApplication.primaryScreen()
    return screen.availableGeometry() if screen is not None else QRect(QPoint(0, 0), SMALLEST)


def room(widget: QWidget | None = None) -> QSize:
    """The largest size a window's contents may take: the available area less the frame."""
    return available_area(widget).size() - DECORATION


def fitted_size(widget: QWidget | None, wanted: QSize, minimum: QSize = QSize(0, 0)) -> QSize:
    """``wanted``, at least ``minimum``, at most the :func:`room` of the screen."""
    space = room(widget)
    return QSize(wanted).expandedTo(minimum).boundedTo(space)


def fit_window(window: QWidget, wanted: QSize, minimum: QSize, centre: bool = True) -> None:
    """Size ``window`` (a dialog or a window of its own) to ``wanted`` clamped to the screen, with
    ``minimum`` as its minimum size (itself clamped to the screen), and place it inside the
    available area: centred over its parent, or (``centre`` False: a window that grows) where it
    is, moved only as far as needed. The window stays resizable: no maximum is set."""
    space = room(window)
    window.setMinimumSize(QSize(minimum).boundedTo(space))
    size = fitted_size(window, wanted, window.minimumSize())
    window.resize(size)
    place(window, size, centre)


def place(window: QWidget, size: QSize | None = None, centre: bool = True) -> None:
    """Move ``window`` (whose contents are ``size``) so that its frame lies inside the available
    area: centred over its parent's window (or the area), or where it is (``centre`` False)."""
    size = QSize(size) if size is not None else window.size()
    area = available_area(window)
    outer = size + DECORATION  # the frame's size (estimated)
    if centre:
        parent = window.parentWidget()
        middle = parent.window().frameGeometry().center() if parent is not None else area.center()
        x, y = middle.x() - outer.width() // 2, middle.y() - outer.height() // 2
    else:
        x, y = window.x(), window.y()
    x = max(area.left(), min(x, area.right() + 1 - outer.width()))
    y = max(area.top(), min(y, area.bottom() + 1 - outer.height()))
    window.move(x, y)


class FittedDialog(QDialog):
    """A dialog of the studio: it fits the screen (:meth:`fit`), stays resizable, and takes the
    keyboard when shown, so that Escape closes it (a window shown next to the main window is not
    always activated by the window manager: the keys would go to the main window)."""

    def fit(self, wanted: QSize, minimum: QSize, centre: bool = True) -> None:
        fit_window(self, wanted, minimum, centre)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        self.activateWindow()
