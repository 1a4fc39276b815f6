"""Icons drawn for MGD Studio (SVG files in ``resources/icons``)."""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtGui import QIcon

from mgd_gui import paths


@lru_cache(maxsize=None)
def icon(name: str) -> QIcon:
    path = paths.icon_path(name)
    return QIcon(str(path)) if path.is_file() else QIcon()
