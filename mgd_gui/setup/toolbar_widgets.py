"""The toolbar's drop-downs: presets and devices."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QWidget

from mgd_gui import paths

CUSTOM = "(custom)"
#: the device choice "every GPU, one process each" (device cuda, run through torchrun)
ALL_GPUS = "all-gpus"


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
        gpus = self.gpu_count()
        if gpus > 1:
            self.addItem(f"all {gpus} GPUs (one process each)", ALL_GPUS)
            self.setItemData(self.count() - 1, f"Train on all {gpus} GPUs at once: {gpus} processes (torchrun), each "
                             "on its part of every batch, gradients averaged; data.batch_size is the whole batch. "
                             "Pause is not available; Stop keeps the checkpoint.", Qt.ItemDataRole.ToolTipRole)
        self.blockSignals(False)
        if current == ALL_GPUS and gpus < 2:
            current = "cuda"
        self.show_device(current)

    def gpu_count(self) -> int:
        """The CUDA GPUs found by the probe."""
        return sum(value.startswith("cuda") for value, _ in self.found)

    def set_found(self, found: list[tuple[str, str]]) -> None:
        self.found = list(found)
        self.probed = True
        self._fill()

    def available(self, device: str) -> bool:
        if device in ("auto", "cpu") or not self.probed:
            return True
        values = {v for v, _ in self.found}
        return device in values or (device == "cuda" and any(v.startswith("cuda") for v in values))

    def show_device(self, device: str, processes: int = 1) -> None:
        """Show the config's device (``processes`` > 1 on ``cuda``: the all-GPUs choice)."""
        if processes > 1 and device == "cuda" and self.findData(ALL_GPUS) >= 0:
            device = ALL_GPUS
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
