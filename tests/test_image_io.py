"""Image decoding: every mode ILSVRC throws at us becomes RGB uint8; broken files give one-line errors."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detect.data.image_io import image_size, load_rgb
from detect.errors import DataError


def _save(tmp_path: Path, image: Image.Image, name: str, fmt: str, **kw) -> Path:
    path = tmp_path / name
    image.save(path, format=fmt, **kw)
    return path


def test_rgb_jpeg(tmp_path):
    arr = load_rgb(_save(tmp_path, Image.new("RGB", (7, 5), (200, 100, 50)), "a.JPEG", "JPEG", quality=100))
    assert arr.shape == (5, 7, 3) and arr.dtype == np.uint8
    assert abs(int(arr[2, 3, 0]) - 200) <= 2


def test_png_named_jpeg_is_sniffed(tmp_path):
    arr = load_rgb(_save(tmp_path, Image.new("RGB", (4, 3), (1, 2, 3)), "png_in_disguise.JPEG", "PNG"))
    assert arr[0, 0].tolist() == [1, 2, 3]


def test_grayscale_becomes_three_equal_channels(tmp_path):
    arr = load_rgb(_save(tmp_path, Image.new("L", (4, 3), 77), "g.png", "PNG"))
    assert arr.shape == (3, 4, 3) and (arr == 77).all()


def test_cmyk_jpeg_converted(tmp_path):
    arr = load_rgb(_save(tmp_path, Image.new("CMYK", (6, 6), (0, 255, 255, 0)), "cmyk.JPEG", "JPEG", quality=100))
    # C=0, M=255, Y=255, K=0 is red.
    r, g, b = arr[3, 3].tolist()
    assert r > 200 and g < 60 and b < 60


def test_palette_and_alpha(tmp_path):
    pal = Image.new("P", (3, 3), 0)
    pal.putpalette([10, 20, 30] + [0] * 765)
    assert load_rgb(_save(tmp_path, pal, "p.png", "PNG"))[1, 1].tolist() == [10, 20, 30]
    rgba = Image.new("RGBA", (3, 3), (9, 8, 7, 0))
    assert load_rgb(_save(tmp_path, rgba, "a.png", "PNG"))[0, 0].tolist() == [9, 8, 7]


def test_16bit_grayscale_scaled_to_8bit(tmp_path):
    img = Image.fromarray(np.full((2, 2), 65535, np.uint16))
    path = _save(tmp_path, img, "deep.png", "PNG")
    assert Image.open(path).mode.startswith("I")
    arr = load_rgb(path)
    # 65535 / 257 = 255 exactly.
    assert (arr == 255).all()


def test_exif_orientation_applied_to_pixels_and_size(tmp_path):
    img = Image.new("RGB", (8, 4), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = _save(tmp_path, img, "rot.JPEG", "JPEG", exif=exif.tobytes())
    assert image_size(path) == (4, 8)
    assert load_rgb(path).shape == (8, 4, 3)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but whose pixel data is a tiny stub."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda tag, data: struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file (0 bytes)"),
        (b"definitely not an image", "not an image"),
        (_png_header_only(20000, 20000), "image too large (20000x20000"),
        (None, "truncated or corrupt image"),
    ],
)
def test_broken_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "broken.JPEG"
    if content is None:
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (5, 5, 5)).save(buf, format="JPEG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_rgb(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="image file not found"):
        load_rgb(tmp_path / "nope.JPEG")


def test_one_pixel_image(tmp_path):
    assert load_rgb(_save(tmp_path, Image.new("RGB", (1, 1), (3, 4, 5)), "one.png", "PNG")).shape == (1, 1, 3)
