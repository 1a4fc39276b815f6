"""The experiment being edited, without Qt: where it came from (a file, a preset, a run, a
duplicate), the set-up as last loaded or saved, and so whether the form's set-up is unsaved.

The form holds the set-up itself; the window tells the document what happened (:meth:`loaded`,
:meth:`saved`, :meth:`from_run`, :meth:`duplicated`) and asks it what to show (:meth:`title`)
and whether edits would be lost (:meth:`is_dirty`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

APP_TITLE = "MGD Studio"


class Document:
    def __init__(self) -> None:
        self.file: Path | None = None  # where Save writes (None: Save asks)
        self.preset: str | None = None  # the preset it is, unchanged
        self.origin = "untitled"  # what it is, for the title
        self._clean: dict | None = None  # the set-up as last loaded or saved (None: anything goes)
        self._preset_dict: dict | None = None

    def loaded(self, path: Path, cfg: Any, *, is_preset: bool) -> None:
        """A file or a bundled preset was loaded into the form."""
        from engine.config import to_dict

        self.preset = str(path) if is_preset else None
        self._preset_dict = to_dict(cfg) if is_preset else None
        self.file = None if is_preset else Path(path)
        self.origin = f"{Path(path).stem} (preset)" if is_preset else Path(path).name
        self._clean = to_dict(cfg)

    def untitled(self, cfg: Any) -> None:
        from engine.config import to_dict

        self.file, self.preset, self._preset_dict = None, None, None
        self.origin, self._clean = "untitled", to_dict(cfg)

    def saved(self, path: Path, cfg: Any) -> None:
        from engine.config import to_dict

        self.file, self.preset, self._preset_dict = Path(path), None, None
        self.origin, self._clean = Path(path).name, to_dict(cfg)

    def from_run(self, label: str, cfg: Any) -> None:
        """A run's set-up was opened (Save asks where: it is not the run's file)."""
        from engine.config import to_dict

        self.file, self.preset, self._preset_dict = None, None, None
        self.origin, self._clean = f"run {label}", to_dict(cfg)

    def duplicated(self, cfg: Any) -> None:
        """A run's set-up as a new experiment: never saved, so closing or replacing it asks."""
        self.file, self.preset, self._preset_dict = None, None, None
        self.origin, self._clean = f"{cfg.name} (new)", {}

    def shown_preset(self, cfg: Any) -> str | None:
        """The preset the toolbar shows for the form's set-up: the loaded one while unchanged."""
        from engine.config import to_dict

        return self.preset if self.preset and self._preset_dict == to_dict(cfg) else None

    def is_dirty(self, cfg: Any, unreadable: bool = False) -> bool:
        """True when the form's set-up (``cfg``; ``unreadable``: some field's text does not parse)
        holds edits that are not in the file, preset or run it came from."""
        from engine.config import to_dict

        return unreadable or (self._clean is not None and to_dict(cfg) != self._clean)

    def title(self) -> str:
        return f"{self.origin}[*] — {APP_TITLE}"
