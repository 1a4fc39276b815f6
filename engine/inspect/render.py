"""Pictures of an inspection as RGB arrays and PNG files (no Qt): maps over images,
image grids, code scatter plots and per-class bars. The studio shows the same arrays."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

HEAT = "jet"  # the usual Grad-CAM colour map: blue (nothing) to red (most)
CELL = 72  # pixels of one image cell in the PNG grids


@functools.lru_cache(maxsize=4)
def colour_table(name: str = HEAT) -> np.ndarray:
    """256 x 3 uint8 colours of a matplotlib colour map."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def image_rgb(image) -> np.ndarray:
    """A uint8 ``C x H x W`` image (1 or 3 channels) as uint8 ``H x W x 3``."""
    arr = np.asarray(image.numpy() if hasattr(image, "numpy") else image)
    if arr.ndim == 2:
        arr = arr[None]
    arr = np.moveaxis(arr, 0, -1)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] != 3:
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(arr.astype(np.uint8))


def heat_rgb(cam: np.ndarray) -> np.ndarray:
    """A map with values in [0, 1] as uint8 ``H x W x 3`` colours."""
    index = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32)) * 255.0, 0, 255).round().astype(np.int64)
    return colour_table()[index]


def overlay(image, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The map's colours laid over the image (uint8 ``H x W x 3``)."""
    base = image_rgb(image).astype(np.float32)
    heat = heat_rgb(cam).astype(np.float32)
    return (base * (1.0 - alpha) + heat * alpha).round().clip(0, 255).astype(np.uint8)


def upscale(rgb: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour scaling to a ``size`` x ``size`` cell (tiny images stay crisp)."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.NEAREST))


def _font(size: int = 11):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap font
        return ImageFont.load_default()


def grid_png(cells: Sequence[Sequence[np.ndarray]], path: Path, *, headers: Sequence[str] = (),
             captions: Sequence[Sequence[str]] = (), cell: int = CELL, title: str = "") -> Path:
    """Write rows of RGB cells as one PNG, with column headers and a caption under each cell
    (a caption is a text or a ``(text, colour)`` pair)."""
    from PIL import Image, ImageDraw

    rows = len(cells)
    cols = max((len(r) for r in cells), default=0)
    pad, head, cap, top = 6, (16 if headers else 0), (14 if captions else 0), (20 if title else 0)
    font, small = _font(12), _font(10)
    width = pad + cols * (cell + pad)
    if title:  # never cut the title off
        width = max(width, 2 * pad + int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=font)))
    height = top + head + pad + rows * (cell + cap + pad)
    canvas = Image.new("RGB", (max(width, 1), max(height, 1)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 3), title, fill="black", font=font)
    for c, text in enumerate(headers):
        draw.text((pad + c * (cell + pad), top + 2), text, fill="black", font=font)
    for r, row in enumerate(cells):
        y = top + head + pad + r * (cell + cap + pad)
        for c, rgb in enumerate(row):
            x = pad + c * (cell + pad)
            canvas.paste(Image.fromarray(upscale(rgb, cell)), (x, y))
            if captions and r < len(captions) and c < len(captions[r]) and captions[r][c]:
                text, colour = (captions[r][c], "#333333") if isinstance(captions[r][c], str) else captions[r][c]
                draw.text((x, y + cell + 1), text, fill=colour, font=small)
    path = Path(path)
    canvas.save(path, format="PNG", optimize=True)
    return path


def thumbnail_png(image, size: int = 64) -> bytes:
    """One test image as a small PNG (for the HTML page's hover)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(upscale(image_rgb(image), size)).save(buffer, format="PNG")
    return buffer.getvalue()


def class_colours(n: int) -> list[str]:
    """``n`` distinct hex colours (tab10, then tab20, then a hue circle)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if n <= 10:
        return [to_hex(colormaps["tab10"](i)) for i in range(n)]
    if n <= 20:
        return [to_hex(colormaps["tab20"](i)) for i in range(n)]
    return [to_hex(colormaps["hsv"](i / n)) for i in range(n)]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # draws without touching pyplot's global backend (the studio runs Qt)
    return fig


def scatter_png(projections: Sequence, classes: Sequence[str], path: Path, title: str = "") -> Path:
    """One granularity's projections side by side (teacher, student), coloured by class."""
    colours = class_colours(len(classes))
    fig = _figure(4.2 * len(projections) + 1.4, 4.2)
    axes = fig.subplots(1, len(projections), squeeze=False)[0]
    for ax, p in zip(axes, projections):
        for c, name in enumerate(classes):
            mask = p.labels == c
            if mask.any():
                ax.scatter(p.points[mask, 0], p.points[mask, 1], s=7, color=colours[c], label=name, alpha=0.8,
                           linewidths=0)
        ax.set_title(f"{p.title}\n5-NN in 2-D {p.separation:.1f}% (chance {p.chance:.1f}%)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(classes) <= 20:
        axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=2, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, format="png")
    return Path(path)


def per_class_png(gain, path: Path, title: str = "") -> Path:
    """Per-class accuracy of two models as paired bars."""
    rows = gain.per_class
    n = len(rows)
    fig = _figure(max(5.0, 0.32 * n + 2.0), 3.4)
    ax = fig.subplots()
    x = np.arange(n)
    a = [r["a"] if r["a"] is not None else 0.0 for r in rows]
    b = [r["b"] if r["b"] is not None else 0.0 for r in rows]
    ax.bar(x - 0.2, a, 0.4, label=f"{gain.names[0]} ({gain.accuracy[0]:.1f}%)", color="#94a3b8")
    ax.bar(x + 0.2, b, 0.4, label=f"{gain.names[1]} ({gain.accuracy[1]:.1f}%)", color="#2563eb")
    ax.set_xticks(x, [r["class"] for r in rows], rotation=90 if n > 12 else 0, fontsize=7 if n > 12 else 9)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.savefig(path, format="png")
    return Path(path)
