"""The toolbar's drop-downs: presets and devices."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QWidget

from mgd_gui import paths

CUSTOM = "(custom)"


def preset_description(path: Path) -> str:
    """The first comment lines of a preset file, for its tooltip."""
    lines = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("# ").rstrip())
    except OSError:
        pass
    return "\n".join(lines) or path.name


class PresetCombo(QComboBox):
    """Every YAML file in ``resources/presets``; choosing one emits its path."""

    preset_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setToolTip("Load a preset experiment: the bundled demo or one of the paper's teacher/student pairs")
        self.setMinimumContentsLength(14)
        self.reload()
        self.activated.connect(self._activated)

    def reload(self) -> None:
        self.blockSignals(True)
        self.clear()
        self.addItem(CUSTOM, None)
        for path in paths.preset_paths():
            self.addItem(path.stem, str(path))
            self.setItemData(self.count() - 1, preset_description(path), Qt.ItemDataRole.ToolTipRole)
        self.blockSignals(False)

    def _activated(self, index: int) -> None:
        path = self.itemData(index)
        if path:
            self.preset_chosen.emit(path)

    def show_preset(self, path: str | None) -> None:
        """Show which preset the form holds (``None``: edited or loaded from elsewhere)."""
        index = self.findData(str(path)) if path else 0
        self.blockSignals(True)
        self.setCurrentIndex(max(0, index))
        self.blockSignals(False)


class DeviceCombo(QComboBox):
    """auto, cpu, and the GPUs found by the background probe (name and memory)."""

    device_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setToolTip("Device the run trains on: auto picks a GPU when there is one, else the CPU")
        self.setMinimumContentsLength(12)
        self.found: list[tuple[str, str]] = []
        self.probed = False
        self._fill()
        self.activated.connect(lambda i: self.device_chosen.emit(self.itemData(i)))

    def _fill(self, current: str | None = None) -> None:
        current = current if current is not None else (self.currentData() or "auto")
        self.blockSignals(True)
        self.clear()
        self.addItem("auto", "auto")
        self.addItem("cpu", "cpu")
        for value, label in self.found:
            self.addItem(label, value)
        self.blockSignals(False)
        self.show_device(current)

    def set_found(self, found: list[tuple[str, str]]) -> None:
        self.found = list(found)
        self.probed = True
        self._fill()

    def available(self, device: str) -> bool:
        if device in ("auto", "cpu") or not self.probed:
            return True
        values = {v for v, _ in self.found}
        return device in values or (device == "cuda" and any(v.startswith("cuda") for v in values))

    def show_device(self, device: str) -> None:
        index = self.findData(device)
        if index < 0:
            label = device if self.available(device) else f"{device} (not found)"
            self.blockSignals(True)
            self.addItem(label, device)
            self.blockSignals(False)
            index = self.count() - 1
        self.blockSignals(True)
        self.setCurrentIndex(index)
        self.blockSignals(False)
