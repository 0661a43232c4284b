"""Pillow's side of :class:`~torchloader.ImageReader`: open, orient, convert.

* 16-bit greyscale (``I;16``, ``I;16B``, ``I;16L``) read as ``"RGB"``/``"L"``/
  ``"RGBA"`` is scaled to 8 bits, ``(v + 128) // 257`` (``round(v * 255 / 65535)``),
  where Pillow's ``convert`` would clip every value above 255 to white. 32-bit
  integer (``I``) and float (``F``) images have no one right scaling and are
  refused; ``mode="keep"`` returns their exact values.
* Multi-frame files (animated GIF, multi-page TIFF): the first frame only.
* With ``exif_transpose``, the image is turned as ``PIL.ImageOps.exif_transpose``
  turns it (:mod:`torchloader.readers._orientation` says, from a JPEG's bytes,
  whether it would be, so that only those leave libjpeg-turbo's fast path).
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["pillow_pixels"]

_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N")
_UNSCALED = ("I", "F")


def pillow_pixels(fp: BinaryIO, path: str, mode: str, *, exif_transpose: bool = False) -> np.ndarray:
    """The ``H x W`` or ``H x W x C`` pixels of the image in ``fp`` (read from ``path``).

    Example:
        >>> import io
        >>> buffer = io.BytesIO()
        >>> Image.fromarray(np.full((2, 3), 65535, np.uint16)).save(buffer, "PNG")
        >>> pillow_pixels(buffer, "white.png", "L").tolist()
        [[255, 255, 255], [255, 255, 255]]
    """
    try:
        image = Image.open(fp)
    except UnidentifiedImageError:  # as Pillow words it when given the path itself
        raise UnidentifiedImageError(f"cannot identify image file {path!r}") from None
    with image:
        if exif_transpose:  # in place: no copy where nothing turns
            ImageOps.exif_transpose(image, in_place=True)
        return _convert(image, path, mode)


def _convert(image: Image.Image, path: str, mode: str) -> np.ndarray:
    """The pixels of ``image`` in ``mode`` (``"RGB"``, ``"L"``, ``"RGBA"`` or ``"keep"``)."""
    transparent = image.mode == "P" and "transparency" in image.info
    if mode == "keep":
        if image.mode == "P":
            image = image.convert("RGBA" if transparent else "RGB")
        return np.asarray(image)
    if image.mode in _WIDE_GREY:
        return _grey_as(_to_uint8(np.asarray(image)), mode)
    if image.mode in _UNSCALED:
        raise ValueError(
            f"{path!r} is a {_describe(image.mode)} image (Pillow mode {image.mode!r}); "
            f"ImageReader(mode={mode!r}) would clip its values to 0..255. Read it with "
            f"ImageReader('keep') for the exact values and scale them in a transform"
        )
    if transparent and mode != "RGBA":
        # P -> RGB/L warns for a transparency table; via RGBA gives the same
        # pixels without the warning.
        image = image.convert("RGBA")
    return np.asarray(image.convert(mode))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit values to 8 bits, rounded: ``(v + 128) // 257`` == ``round(v * 255 / 65535)``."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _grey_as(grey: np.ndarray, mode: str) -> np.ndarray:
    """``H x W`` grey as Pillow's ``convert(mode)`` of an ``"L"`` image lays it out."""
    if mode == "L":
        return grey
    channels = [grey] * 3 + ([np.full_like(grey, 255)] if mode == "RGBA" else [])
    return np.stack(channels, axis=-1)


def _describe(mode: str) -> str:
    return "32-bit integer" if mode == "I" else "32-bit float"
