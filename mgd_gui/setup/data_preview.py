"""A grid of a few training images with their labels, and the data set's sizes."""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QGridLayout, QGroupBox, QLabel, QVBoxLayout, QWidget

from mgd_gui import theme

THUMB = 36  # pixels per thumbnail side


def to_pixmap(image: np.ndarray, side: int = THUMB) -> QPixmap:
    """A uint8 H x W x C array (C = 1 or 3) as a pixmap scaled to ``side`` without smoothing."""
    image = np.ascontiguousarray(image)
    h, w, c = image.shape
    if c == 1:
        img = QImage(image.data, w, h, w, QImage.Format.Format_Grayscale8)
    else:
        image = np.ascontiguousarray(image[:, :, :3])
        img = QImage(image.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    img = img.copy()  # own the pixels: the numpy buffer goes away
    return QPixmap.fromImage(img).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                         Qt.TransformationMode.FastTransformation)


class DataPreview(QGroupBox):
    columns = 6

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Preview", parent)
        layout = QVBoxLayout(self)
        self.info = QLabel("Loading the data set…")
        self.info.setWordWrap(True)
        layout.addWidget(self.info)
        self.grid = QGridLayout()
        self.grid.setSpacing(4)
        layout.addLayout(self.grid)
        self.overview: dict[str, Any] | None = None

    def _clear(self) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget():
                item.widget().deleteLater()

    def show_loading(self) -> None:
        self.info.setText("Loading the data set…")
        self.info.setStyleSheet("")

    def show_error(self, message: str) -> None:
        self._clear()
        self.overview = None
        self.info.setText(f"Cannot preview: {message}")
        self.info.setStyleSheet(f"color: {theme.error_color()};")

    def show_pending(self, message: str) -> None:
        """The data set is to be downloaded by the run (nothing to preview yet; not an error)."""
        self._clear()
        self.overview = None
        self.info.setText(message)
        self.info.setStyleSheet(f"color: {theme.muted_color()};")

    def show_overview(self, overview: dict[str, Any]) -> None:
        self._clear()
        self.overview = overview
        c, (h, w) = overview["in_channels"], overview["image_size"]
        classes = overview["classes"]
        names = ", ".join(classes[:12]) + (", …" if len(classes) > 12 else "")
        self.info.setText(f"<b>{len(classes)} classes</b> ({names})<br>"
                          f"{overview['train_size']:,} training / {overview['test_size']:,} test images, "
                          f"{c}×{h}×{w}")
        self.info.setStyleSheet("")
        for i, (image, label) in enumerate(overview["samples"]):
            cell = QWidget()
            v = QVBoxLayout(cell)
            v.setContentsMargins(0, 0, 0, 0)
            v.setSpacing(0)
            pic = QLabel()
            pic.setPixmap(to_pixmap(image))
            pic.setAlignment(Qt.AlignmentFlag.AlignCenter)
            text = QLabel(label)
            text.setAlignment(Qt.AlignmentFlag.AlignCenter)
            text.setStyleSheet(f"color: {theme.muted_color()}; font-size: 10px;")
            v.addWidget(pic)
            v.addWidget(text)
            self.grid.addWidget(cell, i // self.columns, i % self.columns)
