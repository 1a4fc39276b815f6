"""Persistent settings (window layout, theme, last folders) in an INI file under the
appdirs config folder (or ``$MGD_STUDIO_HOME/config`` for tests)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSettings

from mgd_gui import paths


class Settings:
    """A thin typed wrapper over QSettings in INI format at :func:`paths.settings_file`."""

    def __init__(self, path=None):
        path = path or paths.settings_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._qs = QSettings(str(path), QSettings.Format.IniFormat)

    def get(self, key: str, default: Any = None, kind: type | None = None) -> Any:
        value = self._qs.value(key, default)
        if kind is bool and isinstance(value, str):  # INI stores booleans as text
            return value.lower() in ("true", "1", "yes")
        if kind is not None and value is not None:
            try:
                return kind(value)
            except (TypeError, ValueError):
                return default
        return value

    def set(self, key: str, value: Any) -> None:
        self._qs.setValue(key, value)

    def sync(self) -> None:
        self._qs.sync()
