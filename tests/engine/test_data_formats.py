"""No data file runs a program: only allowed raster formats are decoded, whatever a file is named.

PostScript, EPS and PDF content named ``.png``/``.jpg`` would be handed by Pillow to its EPS
plugin, which starts Ghostscript. These tests hold without Ghostscript (Pillow's EPS plugin is
made to fail the test if it is ever asked) and, where ``gs`` is installed, also check that the
PostScript's own marker file is never written.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.imagefolder import load_imagefolder
from engine.data.images import ALLOWED_FORMATS, open_image
from engine.errors import DataError


def postscript(marker: Path) -> bytes:
    """A PostScript program that writes ``marker`` (proof that it ran), then draws nothing."""
    return (f"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
            f"({marker}) (w) file dup (ran) writestring closefile\nshowpage\n").encode()


def hostile_files(marker: Path) -> dict[str, bytes]:
    ps = postscript(marker)
    dos_eps = b"\xc5\xd0\xd3\xc6" + (30).to_bytes(4, "little") + len(ps).to_bytes(4, "little") + bytes(18) + ps
    return {
        "ps.png": ps,
        "eps.jpg": dos_eps,  # the binary EPS header Pillow also recognises
        "pdf.png": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        "loop.jpg": b"%!PS\n{ } loop\n",  # Ghostscript would never end
    }


@pytest.fixture
def eps_never_asked(monkeypatch):
    """Fail the test if Pillow's EPS plugin is asked to open or render anything."""
    from PIL import EpsImagePlugin

    def asked(*args, **kwargs):
        raise AssertionError("Pillow's EPS plugin was asked to open a data file")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", asked)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", asked)


def image_folder(root: Path, extra: dict[str, bytes] | None = None) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    for name, data in (extra or {}).items():
        (root / "train" / "b" / name).write_bytes(data)
    return root


@pytest.mark.parametrize("name", ["ps.png", "eps.jpg", "pdf.png", "loop.jpg"])
@pytest.mark.parametrize("in_memory", ["on", "off"])
def test_a_non_raster_file_named_as_an_image_is_refused_fast_with_its_path(tmp_path, eps_never_asked,
                                                                           name, in_memory):
    marker = tmp_path / "marker"
    root = image_folder(tmp_path / "data", {name: hostile_files(marker)[name]})
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        load_imagefolder(root, image_size=8, in_memory=in_memory)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert str(root / "train" / "b" / name) in message and "not an image in an allowed format" in message
    assert "\n" not in message
    assert not marker.exists()


def test_the_image_opener_refuses_every_hostile_file_and_never_starts_ghostscript(tmp_path, eps_never_asked):
    marker = tmp_path / "marker"
    for name, data in hostile_files(marker).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DataError, match="not an image in an allowed format"):
            open_image(path)
    assert not marker.exists()


@pytest.mark.skipif(shutil.which("gs") is None, reason="needs Ghostscript to show that it is never started")
def test_with_ghostscript_installed_the_postscript_marker_is_never_written(tmp_path):
    marker = tmp_path / "marker"
    ps = tmp_path / "direct.eps"
    ps.write_bytes(postscript(marker))
    Image.open(ps).load()  # the unsafe path: Pillow runs gs, which runs the program
    assert marker.exists(), "the test's PostScript does not write its marker; it proves nothing"
    marker.unlink()
    root = image_folder(tmp_path / "data", {"ps.png": postscript(marker)})
    with pytest.raises(DataError, match="ps.png"):
        load_imagefolder(root, image_size=8, in_memory="on")
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ALLOWED_FORMATS)
def test_every_allowed_raster_format_still_opens_under_any_name(tmp_path, eps_never_asked, fmt):
    pixels = np.full((6, 5, 3), 200, dtype=np.uint8)
    path = tmp_path / "picture.png"  # a misleading extension is fine when the content is allowed
    Image.fromarray(pixels).save(path, format=fmt)
    with open_image(path) as img:
        img.load()
        assert img.format in (fmt, "MPO") and img.size == (5, 6)


def test_try_an_image_refuses_postscript(tmp_path, eps_never_asked):
    from engine.review import Preprocessing, prepare_image

    marker = tmp_path / "marker"
    path = tmp_path / "cat.jpg"
    path.write_bytes(postscript(marker))
    prep = Preprocessing(classes=["a", "b"], channels=3, size=(8, 8), mean=(0.5,) * 3, std=(0.2,) * 3)
    with pytest.raises(DataError, match="cat.jpg: not an image in an allowed format"):
        prepare_image(path, prep)
    assert not marker.exists()
