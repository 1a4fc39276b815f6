"""Light and dark themes, and colours for plots that read on both."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("system", "light", "dark")

# mid-luminance colours: distinct from one another and readable on white and on near-black
SERIES_COLORS = ("#3b82f6", "#f97316", "#22c55e", "#ef4444", "#a855f7", "#06b6d4", "#ec4899", "#ca8a04",
                 "#84cc16", "#94a3b8")


def series_color(index: int) -> str:
    return SERIES_COLORS[index % len(SERIES_COLORS)]


def _dark_palette() -> QPalette:
    p = QPalette()
    window, base, text = QColor(37, 39, 43), QColor(28, 30, 33), QColor(228, 230, 235)
    roles = {
        QPalette.ColorRole.Window: window, QPalette.ColorRole.WindowText: text,
        QPalette.ColorRole.Base: base, QPalette.ColorRole.AlternateBase: QColor(44, 47, 52),
        QPalette.ColorRole.ToolTipBase: QColor(50, 53, 58), QPalette.ColorRole.ToolTipText: text,
        QPalette.ColorRole.Text: text, QPalette.ColorRole.Button: QColor(48, 51, 56),
        QPalette.ColorRole.ButtonText: text, QPalette.ColorRole.BrightText: QColor(255, 90, 90),
        QPalette.ColorRole.Highlight: QColor(59, 130, 246), QPalette.ColorRole.HighlightedText: QColor(255, 255, 255),
        QPalette.ColorRole.Link: QColor(96, 165, 250), QPalette.ColorRole.PlaceholderText: QColor(135, 140, 148),
        QPalette.ColorRole.Mid: QColor(70, 74, 80), QPalette.ColorRole.Dark: QColor(20, 21, 24),
        QPalette.ColorRole.Light: QColor(70, 74, 80), QPalette.ColorRole.Midlight: QColor(60, 63, 68),
    }
    for role, color in roles.items():
        p.setColor(role, color)
    disabled = QColor(120, 124, 130)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return p


def _light_palette() -> QPalette:
    app = QApplication.instance()
    p = app.style().standardPalette() if app else QPalette()
    p.setColor(QPalette.ColorRole.Highlight, QColor(37, 99, 235))
    return p


_system_palette: QPalette | None = None


def apply_theme(app: QApplication, name: str) -> None:
    """Switch the whole application to ``name`` ("system", "light" or "dark")."""
    global _system_palette
    if _system_palette is None:
        _system_palette = QPalette(app.palette())
    if name == "dark":
        app.setPalette(_dark_palette())
    elif name == "light":
        app.setPalette(_light_palette())
    else:
        app.setPalette(_system_palette)


def is_dark(palette: QPalette | None = None) -> bool:
    palette = palette or QApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def error_color() -> str:
    return "#ff7b72" if is_dark() else "#c62828"


def muted_color() -> str:
    return "#9aa0a6" if is_dark() else "#5f6368"


def plot_colors() -> tuple[str, str]:
    """(background, foreground) for plots under the current palette."""
    p = QApplication.palette()
    return p.color(QPalette.ColorRole.Base).name(), p.color(QPalette.ColorRole.Text).name()
