"""Opening an image file safely: raster formats decoded in this process, nothing else.

Pillow picks a decoder from a file's content, whatever its name, and some of its decoders
start external programs (EPS and PostScript run Ghostscript) or read formats that are not
pictures. Every image the engine reads (data folders, streamed data, "try an image") is
opened by :func:`open_image`: its first bytes must be those of an allowed raster format
(:data:`ALLOWED_FORMATS`), and Pillow is asked for those decoders only, so any other
content is refused with its path named before a decoder sees it.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import DataError

#: Pillow format names of the raster decoders an image may use (all in-process libraries).
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
#: bytes read from a file's start to recognise its format
SNIFF_BYTES = 16


def sniff_format(head: bytes) -> str | None:
    """The allowed format whose signature ``head`` (a file's first bytes) starts with, else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):  # TIFF, BigTIFF
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _describe(head: bytes) -> str:
    """A short, printable view of a file's first bytes for the refusal message."""
    text = head[:10].decode("latin-1")
    shown = "".join(ch if 32 <= ord(ch) < 127 else "." for ch in text)
    return f"it starts with {shown!r}" if head else "it is empty"


def check_image_file(path: str | Path) -> str:
    """The format of the image file at ``path``; :class:`DataError` naming the file when its
    content is not one of :data:`ALLOWED_FORMATS` (whatever its extension) or it cannot be read."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image ({exc.strerror or exc})") from None
    fmt = sniff_format(head)
    if fmt is None:
        allowed = ", ".join(ALLOWED_FORMATS)
        raise DataError(f"{path}: not an image in an allowed format ({allowed}): {_describe(head)}; "
                        "remove the file or convert it")
    return fmt


def open_image(path: str | Path):
    """``PIL.Image.open`` of an allowed raster image (see :func:`check_image_file`), with only
    that format's decoder allowed; use it as a context manager, as ``Image.open``."""
    from PIL import Image

    fmt = check_image_file(path)
    return Image.open(path, formats=[fmt])


#: Pillow modes of gray images
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


def _cover_box(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """(resized width and height, crop box) that scale the shorter side to ``size`` and keep the centre square."""
    scale = size / min(width, height)
    w, h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (w - size) // 2, (h - size) // 2
    return (w, h), (left, top, left + size, top + size)


def read_image(path: Path, size: int, fit: str = "stretch"):
    """(pixels as a uint8 array H x W (gray) or H x W x 3, is_gray) resized to size x size:
    ``fit="stretch"`` resizes the whole image to the square, ``"cover"`` keeps the aspect ratio
    (shorter side to ``size``, centre square kept)."""
    import numpy as np
    from PIL import Image

    try:
        with open_image(path) as img:
            img.load()
            mode = img.mode
            gray = mode in GRAY_MODES
            if mode.startswith("I;16"):
                arr = np.asarray(img, dtype=np.float32) / 257.0  # 16-bit -> 8-bit
                img = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), mode="L")
            elif gray:
                img = img.convert("L")
            else:
                img = img.convert("RGB")
                if mode in ("P", "PA"):  # a palette of grays (e.g. a grayscale GIF) is gray
                    r, g, b = img.split()
                    if r.tobytes() == g.tobytes() == b.tobytes():
                        img, gray = r, True
            if fit == "cover" and img.size != (size, size):
                resized, box = _cover_box(img.size[0], img.size[1], size)
                img = img.resize(resized, Image.Resampling.BILINEAR).crop(box)
            elif img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).copy(), gray
    except DataError:
        raise
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, ValueError, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read the image ({reason})") from None
