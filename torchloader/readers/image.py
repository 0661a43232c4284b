"""``ImageReader``: one image file as a tensor.

Images become ``uint8`` tensors of shape ``C x H x W``. JPEG files decode through
libjpeg-turbo directly when ``simplejpeg`` is installed (a dependency where it ships
wheels: Linux, macOS and Windows on x86-64 and ARM64), 1.9x Pillow's rate per core, and
through Pillow otherwise. Both give identical pixels: simplejpeg is used only for
the cases where it was checked to match Pillow bit for bit (``mode="RGB"`` of
YCbCr and greyscale JPEGs, ``mode="L"`` of greyscale JPEGs); everything else
(CMYK, ``mode="L"`` of a colour JPEG, where libjpeg's luma differs from
Pillow's ``convert("L")`` by up to ~25 levels) goes through Pillow. A JPEG that
libjpeg only warns about (``Corrupt JPEG data: 1 extraneous bytes before marker
0xd9``) is decoded by Pillow, as it would be without simplejpeg; a truncated one
raises ``OSError: image file is truncated`` as Pillow does (unless
``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is set: then Pillow's grey fill).
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image

from torchloader.readers._decode import pillow_pixels
from torchloader.readers._files import open_regular, read_bytes
from torchloader.readers._orientation import jpeg_transposes
from torchloader.readers._tensor import to_tensor

try:  # libjpeg-turbo without Pillow's per-image overhead
    import simplejpeg
except ImportError:  # pragma: no cover - exercised where simplejpeg is absent
    simplejpeg = None

__all__ = ["ImageReader"]

_MODES = ("RGB", "L", "RGBA", "keep")


class ImageReader:
    """Read an image file into a ``uint8`` tensor ``C x H x W``.

    The tensor is a ``C x H x W`` view of the decoded ``H x W x C`` pixels (as
    torchvision's ``pil_to_tensor`` returns), so the only copy is the one that
    stacks the batch. A multi-frame file (animated GIF, multi-page TIFF) gives
    its first frame only.

    Args:
        mode: ``"RGB"`` (default, 3 channels), ``"L"`` (1 channel), ``"RGBA"``
            (4 channels) or ``"keep"`` (as stored; palette images are expanded to
            RGB/RGBA, 16-bit images keep their wider dtype). In ``"RGB"``, ``"L"``
            and ``"RGBA"``, 16-bit greyscale is scaled to 8 bits as
            ``(v + 128) // 257`` (``round(v * 255 / 65535)``; Pillow's own
            ``convert`` would clip it to white), and 32-bit integer or float
            images raise ``ValueError`` (use ``"keep"`` for their exact values).
        decoder: ``"auto"`` (libjpeg-turbo for JPEG where available), or
            ``"pillow"`` to always use Pillow.
        exif_transpose: turn each image as its EXIF orientation tag says, as
            ``PIL.ImageOps.exif_transpose`` does (a phone photo taken upright
            comes out upright). Off by default: the pixels as stored, so a
            rotated photo comes out sideways, as with ``Image.open`` alone.
        fast_dct: decode JPEGs with libjpeg-turbo's fast integer DCT and fast chroma
            upsampling: about 8% faster here, at the cost of Pillow's exact pixels (a mean
            difference of 1.5 levels, up to 38 at colour edges, measured on photo crops;
            tested). Off by default.

    Example:
        >>> reader = ImageReader("L", exif_transpose=True)
        >>> reader
        ImageReader(mode='L', decoder='auto', exif_transpose=True)
    """

    def __init__(
        self, mode: str = "RGB", *, decoder: str = "auto", exif_transpose: bool = False, fast_dct: bool = False
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES} (got {mode!r})")
        if decoder not in ("auto", "pillow"):
            raise ValueError(f"decoder must be 'auto' or 'pillow' (got {decoder!r})")
        if not isinstance(exif_transpose, bool):
            raise TypeError(f"exif_transpose must be True or False (got {exif_transpose!r})")
        if not isinstance(fast_dct, bool):
            raise TypeError(f"fast_dct must be True or False (got {fast_dct!r})")
        self.mode = mode
        self.decoder = decoder
        self.exif_transpose = exif_transpose
        self.fast_dct = fast_dct

    def __repr__(self) -> str:
        fast = ", fast_dct=True" if getattr(self, "fast_dct", False) else ""
        return f"ImageReader(mode={self.mode!r}, decoder={self.decoder!r}, exif_transpose={self.exif_transpose}{fast})"

    @property
    def turbo_options(self) -> dict[str, bool]:
        """simplejpeg's options for this reader (``fast_dct``)."""
        fast = getattr(self, "fast_dct", False)  # (a reader pickled before fast_dct existed)
        return {"fastdct": fast, "fastupsample": fast}

    def __call__(self, path: str) -> torch.Tensor:
        path = os.fspath(path)
        if self.decoder == "auto" and simplejpeg is not None and _is_jpeg(path):
            array = self.pixels(read_bytes(path), path)
        else:
            with open_regular(path) as f:
                array = self._decode_pillow(f, path)
        return self._tensor(array)

    def decode(self, data: bytes | memoryview | np.ndarray, name: str) -> torch.Tensor:
        """What ``reader(path)`` gives for a file holding ``data`` (a ``torchloader pack
        --encoded`` sample; ``name`` is named in errors). A JPEG is told by its bytes."""
        return self._tensor(self.pixels(data, name))

    def pixels(self, data: bytes | memoryview | np.ndarray, name: str) -> np.ndarray:
        """The ``H x W`` or ``H x W x C`` pixels of the image in ``data``, as ``__call__`` decodes them."""
        array = self._decode_turbo(data) if self.decoder == "auto" and simplejpeg is not None else None
        return self._decode_pillow(io.BytesIO(data), name) if array is None else array

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        if array.ndim == 2:
            array = array[:, :, None]
        # A C x H x W view of the H x W x C pixels, as torchvision's pil_to_tensor
        # gives: the one copy happens where the batch is stacked. to_tensor copies
        # Pillow's read-only arrays (and fixes big-endian 16-bit ones).
        return to_tensor(array).permute(2, 0, 1)

    def read_into(self, path: str, out: np.ndarray) -> bool:
        """Decode ``path`` straight into ``out`` where that is exact; else return False.

        ``out`` is an ``H x W x C`` ``uint8`` array (the memory of a channels-last
        batch or chunk slot). A JPEG whose size, channels and colour space fit (and,
        with ``exif_transpose``, that needs no turning) is decoded by libjpeg-turbo
        into it: no temporary array, no copy. Anything else (another format, size
        or colour space, CMYK, no simplejpeg) returns False and writes nothing, so
        the caller reads the file the ordinary way and reports any mismatch. A JPEG
        libjpeg warns about is decoded by Pillow into ``out``; one that cannot be
        decoded raises (``out`` then holds part of it).
        """
        if not _is_jpeg(path) or not self._fits(out):
            return False
        return self.decode_into(read_bytes(path), path, out)

    def decode_into(self, data: bytes | memoryview | np.ndarray, name: str, out: np.ndarray) -> bool:
        """``read_into`` for a file holding ``data`` (``name`` is named in errors)."""
        if not self._fits(out):
            return False
        found = self._turbo_exact(data)
        if found is None or found[1:] != out.shape[:2]:
            return False
        try:
            simplejpeg.decode_jpeg(data, colorspace=found[0], buffer=out, **self.turbo_options)
        except ValueError:  # libjpeg warned (strict): Pillow's pixels, or its error
            out[...] = self._decode_pillow(io.BytesIO(data), name).reshape(out.shape)
        return True

    def _fits(self, out: np.ndarray) -> bool:
        """Whether libjpeg-turbo may decode into ``out`` in this mode at all."""
        into = _TURBO_INTO.get(self.mode)
        if into is None or self.decoder != "auto" or simplejpeg is None:
            return False
        return out.dtype == np.uint8 and out.shape[2:] == (into[1],) and out.flags.c_contiguous

    def _turbo_exact(self, data: bytes) -> tuple[str, int, int] | None:
        """(simplejpeg colour space, height, width) where libjpeg-turbo decodes
        ``data`` exactly as Pillow would, else None (Pillow must decide)."""
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            return None  # let Pillow report what is wrong with the file
        limit = Image.MAX_IMAGE_PIXELS  # above it, Pillow's decompression-bomb guard decides
        if colorspace not in _TURBO_EXACT.get(self.mode, ()) or (limit is not None and height * width > limit):
            return None
        if self.exif_transpose and jpeg_transposes(data):  # after the limit: Pillow opens it
            return None
        return _TURBO_INTO[self.mode][0], height, width

    def _decode_turbo(self, data: bytes) -> np.ndarray | None:
        """Decode with libjpeg-turbo, or return None where Pillow must decide."""
        found = self._turbo_exact(data)
        if found is None:
            return None
        try:
            return simplejpeg.decode_jpeg(data, colorspace=found[0], **self.turbo_options)
        except ValueError:  # strict: libjpeg warned, or failed; Pillow decides which
            return None

    def _decode_pillow(self, fp: io.BufferedIOBase, path: str) -> np.ndarray:
        return pillow_pixels(fp, path, self.mode, exif_transpose=self.exif_transpose)


# Colour spaces whose libjpeg-turbo decode equals Pillow's, per mode (tested),
# and what simplejpeg decodes to for each mode.
_TURBO_EXACT = {"RGB": ("YCbCr", "Gray"), "L": ("Gray",)}
_TURBO_INTO = {"RGB": ("RGB", 3), "L": ("GRAY", 1)}


def _is_jpeg(path: str) -> bool:
    return path[-4:].lower() == ".jpg" or path[-5:].lower() == ".jpeg"
