"""Reading images into one format: H x W x 3 uint8 RGB.

Decoding uses Pillow. Every problem — missing file, empty file, unknown format,
truncated or corrupt data — raises :class:`ImageReadError` naming the file and the
problem; nothing is returned half-decoded and no warning is left as the only signal.

Conversions:

* grayscale (``L``, ``1``) is replicated to three channels;
* palette images are expanded (through RGBA when they carry transparency);
* images with alpha (``RGBA``, ``LA``, ``PA``) are composited onto black: transparent
  pixels become black, whatever colour they happened to store;
* 16-bit images (``I;16*`` and ``I`` modes) are scaled to 8 bits with ``round(v / 257)``
  (65535 -> 255), values outside 0..65535 clipped;
* other modes (``CMYK``, ``YCbCr``, ``LAB``, ``HSV``) go through Pillow's RGB conversion;
* the EXIF orientation tag is applied (as an image viewer and ``cv2.imread`` do), so the
  array is the upright picture a person would annotate;
* multi-frame files (GIF, TIFF) give their first frame.

Floating-point images (mode ``F``) are rejected: their value range is not defined.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["ImageReadError", "read_image", "save_png", "tile_grid", "to_rgb_uint8"]


class ImageReadError(ValueError):
    """An image file that cannot be read; the message names the file and the problem."""


class _UnsupportedModeError(ValueError):
    pass


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _alpha_onto_black(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[..., :3].astype(np.float32)
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.clip(np.rint(rgb * a), 0, 255).astype(np.uint8)


def to_rgb_uint8(im) -> np.ndarray:  # im: PIL.Image.Image
    """Convert a loaded Pillow image to an H x W x 3 uint8 RGB array (see module doc)."""
    mode = im.mode
    if mode in _SIXTEEN_BIT:
        a = np.asarray(im).astype(np.float64)
        a = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
    if mode == "F" or mode.startswith("I;") or mode.startswith("F;"):
        raise _UnsupportedModeError(
            f"unsupported pixel mode {mode!r} (floating-point or unusual integer image)"
        )
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    elif mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "La"):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBa":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        return _alpha_onto_black(np.asarray(im, dtype=np.uint8))
    if mode in ("L", "1"):
        g = np.asarray(im.convert("L"), dtype=np.uint8)
        return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2))
    if mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an H x W x 3 uint8 RGB array.

    Raises :class:`ImageReadError` (a ``ValueError``) when the file is missing, is not a
    regular file, is empty, cannot be identified as an image, is truncated or corrupt, has
    zero width or height, or has an unsupported pixel format.
    """
    from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: image file does not exist")
    if not p.is_file():
        raise ImageReadError(f"{p}: not a regular file")
    try:
        nbytes = p.stat().st_size
    except OSError as e:
        raise ImageReadError(f"{p}: cannot stat image file: {e}") from e
    if nbytes == 0:
        raise ImageReadError(f"{p}: empty image file (0 bytes)")

    # A global ImageFile.LOAD_TRUNCATED_IMAGES = True (set by some libraries) would make
    # Pillow pad truncated files silently; refuse to read in that state.
    if getattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False):
        raise ImageReadError(
            f"{p}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set to True in this process, so "
            "truncated files would be padded silently; unset it before reading images"
        )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(p) as im:
                im.load()
                if im.width == 0 or im.height == 0:
                    raise ImageReadError(f"{p}: image has zero size ({im.width}x{im.height})")
                fmt = im.format
                im2 = ImageOps.exif_transpose(im)
                arr = to_rgb_uint8(im2)
        for w in caught:
            msg = str(w.message).lower()
            if "truncat" in msg or "corrupt" in msg or "premature" in msg:
                raise ImageReadError(f"{p}: truncated or corrupt image data ({w.message})")
    except ImageReadError:
        raise
    except _UnsupportedModeError as e:
        raise ImageReadError(f"{p}: {e}") from e
    except FileNotFoundError as e:
        raise ImageReadError(f"{p}: image file does not exist") from e
    except UnidentifiedImageError as e:
        raise ImageReadError(f"{p}: not a recognised image format (unreadable or corrupt file)") from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{p}: image is too large to decode safely ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as e:
        # Pillow reports truncated / corrupt data as OSError ("image file is truncated"),
        # SyntaxError (broken headers) or ValueError, depending on the codec.
        raise ImageReadError(f"{p}: corrupt or truncated image data ({type(e).__name__}: {e})") from e
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{p}: decoded to an unexpected array shape {arr.shape} (format {fmt})")
    return arr


def tile_grid(rows, pad: int = 2) -> np.ndarray:
    """Tiles in rows -> one uint8 image on a white background.

    ``rows`` is a sequence of rows, each a sequence of uint8 (H, W, C) tiles or ``None``
    (left blank); every tile has the same shape. ``pad`` white pixels separate the tiles
    and frame the grid: (rows * (H + pad) + pad, cols * (W + pad) + pad, C).
    """
    first = next(t for row in rows for t in row if t is not None)
    h, w, c = first.shape
    cols = max(len(row) for row in rows)
    grid = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for r, row in enumerate(rows):
        for k, tile in enumerate(row):
            if tile is None:
                continue
            if tile.shape != first.shape:
                raise ValueError(f"grid tile ({r}, {k}) has shape {tile.shape}, expected {first.shape}")
            top, left = pad + r * (h + pad), pad + k * (w + pad)
            grid[top : top + h, left : left + w] = tile
    return grid


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write a uint8 (H, W, 1 | 3) image as PNG, atomically (grey when one channel)."""
    from PIL import Image

    from fer.utils.io import atomic_path

    img = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
