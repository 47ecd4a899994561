"""Decode any image a detection dataset may hold into RGB uint8.

ILSVRC alone ships CMYK JPEGs, grayscale images and PNG files named ``.JPEG``;
PIL sniffs the format from the bytes, so the extension is never trusted.
Every failure becomes a one-line `DataError` naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from detect.errors import DataError

# A 20000x20000 header on a tiny payload must not allocate gigabytes: PIL's own
# decompression-bomb guard is lifted to this (ILSVRC's largest images are ~2.5 MP).
MAX_PIXELS = 100_000_000

# EXIF orientations 5..8 rotate by 90 degrees, swapping width and height.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112


def _open(path: Path) -> Image.Image:
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"{path}: image file not found") from None
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an image file")
    Image.MAX_IMAGE_PIXELS = None  # our own, clearer check below replaces PIL's
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image (or an unsupported format)") from None
    except PermissionError:
        raise DataError(f"{path}: image file is not readable (permission denied)") from None
    except OSError as exc:
        raise DataError(f"{path}: truncated or corrupt image ({exc})") from None
    w, h = image.size
    if w * h > MAX_PIXELS:
        image.close()
        raise DataError(f"{path}: image too large ({w}x{h} pixels > {MAX_PIXELS})")
    if w < 1 or h < 1:
        image.close()
        raise DataError(f"{path}: image has no pixels ({w}x{h})")
    return image


def image_size(path: Path) -> tuple[int, int]:
    """`(width, height)` of the decoded, EXIF-oriented image, reading only the header."""
    with _open(path) as image:
        w, h = image.size
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        except Exception:  # a broken EXIF block is not worth rejecting the image for
            orientation = 1
    return (h, w) if orientation in _SWAPPING_ORIENTATIONS else (w, h)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: map the full 16-bit range to 8 bits.
        gray = np.asarray(image, dtype=np.float64)
        gray8 = np.clip(np.round(gray / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray8[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.asarray(image, dtype=np.float64)
        scale = 255.0 if gray.max(initial=0.0) <= 1.0 else 1.0
        gray8 = np.clip(np.round(gray * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray8[:, :, None], 3, axis=2)
    if mode != "RGB":
        with warnings.catch_warnings():
            # "Palette images with Transparency expressed in bytes": alpha is dropped on purpose.
            warnings.simplefilter("ignore", UserWarning)
            image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to a contiguous ``(H, W, 3)`` uint8 RGB array.

    Grayscale, palette, CMYK, alpha and 16-bit images are converted (alpha is
    dropped); EXIF orientation is applied so boxes annotated on the displayed
    image line up.  Raises `DataError` (one line, naming the file) for missing,
    empty, truncated, corrupt or non-image files.
    """
    path = Path(path)
    with _open(path) as image:
        try:
            image.load()
            oriented = ImageOps.exif_transpose(image)
            array = _to_rgb_array(oriented)
        except DataError:
            raise
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{path}: truncated or corrupt image ({exc})") from None
    return np.ascontiguousarray(array)
