"""Qt tests run offscreen, with MGD Studio's runs and settings in a temporary folder."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

@pytest.fixture(autouse=True)
def collect_between_tests():
    """Garbage-collect Qt objects between tests, when every window is closed and its threads have
    ended, rather than at an arbitrary moment of a later test while its worker thread runs (one
    CI run aborted in such a collection)."""
    import gc

    gc.disable()
    try:
        yield
    finally:
        from PySide6.QtWidgets import QApplication

        app = QApplication.instance()
        if app is not None:
            app.processEvents()
        gc.collect()
        gc.enable()


@pytest.fixture(autouse=True)
def studio_home(tmp_path, monkeypatch):
    home = tmp_path / "studio-home"
    monkeypatch.setenv("MGD_STUDIO_HOME", str(home))
    return home


@pytest.fixture
def make_window(qtbot, studio_home):
    """Build main windows (closed, with their runs stopped, at the end of the test)."""
    from mgd_gui.main_window import MainWindow

    made = []

    def make(*args, **kwargs):
        kwargs.setdefault("probe", False)
        window = MainWindow(*args, **kwargs)
        window.confirm_close = lambda: True  # no modal question in tests
        window.ask_unsaved = lambda: "discard"
        window.ask_queue_on_launch = lambda: "later"
        qtbot.addWidget(window)
        window.resize(1280, 800)
        window.show()
        made.append(window)
        return window

    yield make
    for window in made:
        if window.runner.active:
            window.runner.stop()
            window.runner.wait(60)
        if window.error_box is not None:
            window.error_box.close()
        window.lookups.close()


@pytest.fixture
def window(make_window):
    return make_window()

