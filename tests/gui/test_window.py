"""The window builds, shows the demo ready to run, and keeps torch out of start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PySide6.QtGui import QKeySequence

from engine.config import ExperimentConfig, iter_fields
from mgd_gui.setup.form import HIDDEN

ROOT = Path(__file__).resolve().parents[2]


def test_window_builds_with_the_demo_ready(window):
    assert window.windowTitle() == "demo (preset)[*] — MGD Studio" and not window.isWindowModified()
    cfg = window.form.config()
    assert cfg.name == "demo" and cfg.data.dataset == "demo"
    assert window.form.is_valid()
    assert window.actions_["run"].isEnabled()
    assert not window.actions_["pause"].isEnabled() and not window.actions_["stop"].isEnabled()
    assert window.presets.currentText() == "demo"
    assert window.runs.tree.topLevelItemCount() == 0


def test_every_schema_field_has_an_editor_with_its_help(window):
    editors = window.form.editors()
    for path, field, _ in iter_fields(ExperimentConfig()):
        if path in HIDDEN:
            continue
        owner = next((p for p in editors if path == p or path.startswith(p + ".")), None)
        assert owner is not None, f"no editor for {path}"
        if owner == path:
            assert editors[owner].toolTip() == field.metadata["help"]


def test_shortcuts(window):
    def keys(name):
        return [s.toString() for s in window.actions_[name].shortcuts()]

    assert "Ctrl+R" in keys("run")
    assert "Ctrl+." in keys("stop") and "Esc" in keys("stop")
    assert QKeySequence(QKeySequence.StandardKey.Open).toString() in keys("open")
    assert QKeySequence(QKeySequence.StandardKey.Save).toString() in keys("save")
    assert QKeySequence(QKeySequence.StandardKey.Quit).toString() in keys("quit")


def test_startup_does_not_import_torch(tmp_path):
    code = ("import sys\n"
            "from PySide6.QtWidgets import QApplication\n"
            "app = QApplication([])\n"
            "from mgd_gui.main_window import MainWindow\n"
            "w = MainWindow(probe=False)\n"
            "w.show(); app.processEvents()\n"
            "print('torch' in sys.modules)\n"
            "w.close()\n")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", MGD_STUDIO_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_python_m_mgd_gui_help():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "mgd_gui", "--help"], capture_output=True, text=True, env=env,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0 and "--demo" in out.stdout


def test_the_studio_process_ends_cleanly_when_its_window_closes():
    # closed while a background look-up may still import torch: the process ends with 0, no abort
    # in a destructor (benchmarks/studio_exit.py measures how fast)
    from benchmarks.studio_exit import one_try

    seconds, code, errors = one_try(0.5)
    assert seconds is not None and code == 0, errors[-2000:]
    assert "terminate called" not in errors
