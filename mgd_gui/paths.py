"""Where MGD Studio keeps things: run folders, settings, bundled resources.

``MGD_STUDIO_HOME`` (an environment variable) puts runs and settings under one folder,
for tests and portable installs; otherwise appdirs gives the platform's usual places.
"""

from __future__ import annotations

import os
from pathlib import Path

import appdirs

APP_NAME = "MGD Studio"
APP_AUTHOR = "MGD Studio"
HOME_ENV = "MGD_STUDIO_HOME"


def _home() -> Path | None:
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    home = _home()
    return home if home else Path(appdirs.user_data_dir(APP_NAME, APP_AUTHOR))


def runs_root() -> Path:
    """The folder every run folder goes into."""
    return data_dir() / "runs"


def queue_file() -> Path:
    """The studio's queue of runs (pending comparisons), kept between launches."""
    return data_dir() / "queue.json"


def config_dir() -> Path:
    home = _home()
    return home / "config" if home else Path(appdirs.user_config_dir(APP_NAME, APP_AUTHOR))


def settings_file() -> Path:
    return config_dir() / "settings.ini"


def resources_dir() -> Path:
    """The repository's ``resources/`` folder (icons, presets, demo data)."""
    return Path(__file__).resolve().parents[1] / "resources"


def icon_path(name: str) -> Path:
    return resources_dir() / "icons" / f"{name}.svg"


def preset_paths() -> list[Path]:
    """Every YAML preset in ``resources/presets``, the demo first, then by name."""
    folder = resources_dir() / "presets"
    if not folder.is_dir():
        return []
    paths = [p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()]
    return sorted(paths, key=lambda p: (p.stem != "demo", p.stem.lower()))


def demo_preset() -> Path:
    return resources_dir() / "presets" / "demo.yaml"
