"""Settings and window layout persist between launches, in the test's own folder."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from mgd_gui import paths
from mgd_gui.theme import is_dark


def test_settings_and_layout_persist(make_window, studio_home):
    first = make_window()
    assert paths.settings_file() == studio_home / "config" / "settings.ini"
    first.set_theme("dark")
    assert is_dark(QApplication.palette())
    first.removeDockWidget(first.log_dock)
    first.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, first.log_dock)
    first.log_dock.show()
    first.form.show_section("granularity")
    first.plots.tabs.setCurrentIndex(1)
    first.close()
    assert paths.settings_file().is_file()

    second = make_window()
    assert second.theme_actions["dark"].isChecked() and is_dark(QApplication.palette())
    assert second.dockWidgetArea(second.log_dock) == Qt.DockWidgetArea.RightDockWidgetArea
    assert second.form.sections.currentItem().text().startswith("Granularity")
    assert second.plots.tabs.currentIndex() == 1
    second.set_theme("light")
    assert not is_dark(QApplication.palette())
    bg, fg = second.plots.losses.plot.backgroundBrush().color(), QApplication.palette().color(QPalette.ColorRole.Text)
    assert bg.lightness() > 128 and fg.lightness() < 128  # dark text on a light plot


def test_runs_live_under_the_studio_home(window, studio_home):
    assert window.runs_root == studio_home / "runs" and window.runs_root.is_dir()
