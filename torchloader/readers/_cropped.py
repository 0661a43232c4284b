"""Decode an image file with a decode spec's crop straight into its sample's slot.

The box comes from the spec (``crops.py``), drawn from the image's size as
stored (after EXIF turning where the reader turns), so every path below gives
the same box for the same sample and seed. Then:

- a JPEG that libjpeg-turbo decodes as Pillow would (``ImageReader._turbo_exact``)
  is decoded at the smallest DCT scale of 1/2, 1/4 or 1/8 whose box still has
  1.5x the output's pixels each way (``_MARGIN``) (the other M/8 scales are slower than a full
  decode here: not used), then the box is resized once into the slot;
- a box on whole pixels of what was decoded (``RandomResizedCrop``'s at full scale)
  is cut out and resized by torch's antialiased bilinear ``interpolate`` (torchvision
  v2's path for tensors: 2.7x faster here than Pillow's ``resize``, which also needs
  the decoded image copied into it), within 1 level of torchvision's PIL path
  (Pillow's antialiased bilinear filter; a mean of 0.016 levels on photo crops),
  then flipped; a box between pixels (``CenterCrop``'s, or any at a reduced scale)
  is resized by Pillow from its exact edges;
- anything else (PNG, WebP, CMYK, a JPEG libjpeg warns about, no simplejpeg) is
  decoded by Pillow at full size, as ``ImageReader`` would, then cropped the same way.

Decoding at a smaller scale is not the same as decoding at full size and shrinking:
the difference is measured and tested (``tests/readers/test_crops.py``).
"""

from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from torchloader._core.randomness import draw_seed
from torchloader.readers._files import read_bytes
from torchloader.readers.crops import Crop
from torchloader.readers.image import ImageReader, _is_jpeg, simplejpeg

__all__ = ["channels", "check_decode", "crop_seed", "decode_cropped", "decode_cropped_bytes", "output_shape"]

_CHANNELS = {"RGB": 3, "L": 1, "RGBA": 4}
_SCALES = (8, 4, 2)  # DCT scale denominators tried, smallest image first
# A scaled decode keeps at least this many times the output's pixels each way in the
# box, for the final antialiased resize: measured on 800 photo crops to 32 and 64 px
# against a full decode and the same resize, the mean error was 2.35 levels at 1.0
# (worst image 8.6), 1.27 at 1.5 (worst 6.6), 0.75 at 2.0 (worst 4.0).
_MARGIN = 1.5


def crop_seed(index: int) -> int:
    """The seed of sample ``index``'s crop: one stream for every dataset that crops, so a
    pack and the folder it was made from give the same crop for the same sample."""
    return draw_seed(index, _CROP_STREAM)


_CROP_STREAM = 3  # of draw_seed: apart from the transforms' streams


def channels(reader: ImageReader) -> int:
    """The channels of what ``reader`` decodes (a decode spec needs a fixed number)."""
    if reader.mode not in _CHANNELS:
        raise ValueError(f"decode=... needs an ImageReader mode of {sorted(_CHANNELS)} (got {reader.mode!r})")
    return _CHANNELS[reader.mode]


def decode_cropped(reader: ImageReader, path: str, spec, seed: int, out: np.ndarray) -> None:
    """Decode ``path`` with ``spec``'s box (drawn from ``seed``) into ``out`` (``H x W x C`` uint8)."""
    decode_cropped_bytes(reader, read_bytes(path), path, spec, seed, out, jpeg=_is_jpeg(path))


def decode_cropped_bytes(reader: ImageReader, data, name: str, spec, seed: int, out: np.ndarray, *, jpeg=True) -> None:
    """:func:`decode_cropped` of a file holding ``data`` (``name`` is named in errors;
    ``jpeg=False``: Pillow decodes it, as a file whose name is not a JPEG's is decoded)."""
    rng = random.Random(seed)
    turbo = jpeg and reader.decoder == "auto" and simplejpeg is not None
    found = reader._turbo_exact(data) if turbo else None
    if found is not None:
        colorspace, height, width = found
        box = spec.crop(height, width, rng)
        scale = _scale(box, out.shape[:2])
        try:
            pixels = simplejpeg.decode_jpeg(
                data,
                colorspace=colorspace,
                min_height=-(-height // scale),
                min_width=-(-width // scale),
                **reader.turbo_options,
            )
        except ValueError:  # libjpeg warned (strict): Pillow decides, from the same box
            pixels = None
        if pixels is not None:
            _resize_into(pixels, box, pixels.shape[0] / height, pixels.shape[1] / width, out)
            return
    else:
        box = None
    pixels = reader._decode_pillow(io.BytesIO(data), name)
    if box is None:
        box = spec.crop(pixels.shape[0], pixels.shape[1], rng)
    _resize_into(pixels, box, 1.0, 1.0, out)


def _scale(box: Crop, size: tuple[int, int]) -> int:
    """The largest DCT scale denominator that leaves the box ``_MARGIN`` x ``size``."""
    for scale in _SCALES:
        if box.height / scale >= _MARGIN * size[0] and box.width / scale >= _MARGIN * size[1]:
            return scale
    return 1


def _resize_into(pixels: np.ndarray, box: Crop, sy: float, sx: float, out: np.ndarray) -> None:
    """Resize ``box`` of ``pixels`` (decoded at ``sy x sx`` of the stored size) into ``out``."""
    edges = (box.left * sx, box.top * sy, (box.left + box.width) * sx, (box.top + box.height) * sy)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    # (RGBA goes to Pillow, which resizes with premultiplied alpha: hidden colours do not bleed)
    if channels in (1, 3) and all(float(e).is_integer() for e in edges) and out.flags.writeable:
        if not pixels.flags.writeable:  # Pillow's (a PNG, ...): torch views writable arrays only
            pixels = pixels.copy()
        left, top, right, bottom = (int(e) for e in edges)
        region = torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1))[top:bottom, left:right]
        if tuple(region.shape[:2]) != out.shape[:2]:
            # channels-last and dense, torch's vectorised uint8 kernel (a box narrower than the
            # image is not: copying it first measured 71 us against 95 us, and the result is
            # channels-last too, so the copy into the H x W x C slot is a plain one)
            x = region.permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)
            region = F.interpolate(x, size=out.shape[:2], mode="bilinear", antialias=True)[0].permute(1, 2, 0)
        torch.from_numpy(out).view(region.shape).copy_(region.flip(1) if box.flip else region)
        return
    grey = pixels.ndim == 2 or pixels.shape[2] == 1
    image = Image.fromarray(pixels.reshape(pixels.shape[:2]) if grey else pixels)
    out_h, out_w = out.shape[:2]
    edges = (box.left * sx, box.top * sy, (box.left + box.width) * sx, (box.top + box.height) * sy)
    whole = edges == (0, 0, image.width, image.height)
    if sy == sx == 1.0 and all(float(e).is_integer() for e in edges) and not whole:
        image = image.crop(tuple(int(e) for e in edges))  # torchvision's: cut, then resize
        edges = None
    if edges is None or whole:
        resized = image if image.size == (out_w, out_h) else image.resize((out_w, out_h), Image.BILINEAR)
    else:
        resized = image.resize((out_w, out_h), Image.BILINEAR, box=_clamped(edges, image.width, image.height))
    array = np.asarray(resized).reshape(out.shape)
    out[...] = array[:, ::-1] if box.flip else array


def _clamped(edges: tuple[float, ...], width: int, height: int) -> tuple[float, ...]:
    left, top, right, bottom = edges
    return (max(0.0, left), max(0.0, top), min(float(width), right), min(float(height), bottom))


def output_shape(spec, reader: ImageReader) -> tuple[int, int, int]:
    """``H x W x C`` of what ``spec`` decodes through ``reader``."""
    return (*spec.size, channels(reader))


def check_decode(decode: Any, reader: Any) -> Any:
    """``decode`` if it is a decode spec that ``reader`` (an ``ImageReader`` or None) can serve."""
    if not (hasattr(decode, "crop") and hasattr(decode, "size")):
        raise TypeError(
            f"decode must be a decode spec such as RandomResizedCrop(128) or CenterCrop(128) "
            f"(got {decode!r}); a function of the decoded tensor goes in transform=..."
        )
    if reader is not None and not isinstance(reader, ImageReader):
        raise TypeError(f"decode=... crops images as they are decoded: reader must be an ImageReader (got {reader!r})")
    channels(reader or ImageReader())  # a mode with a fixed number of channels
    return decode
