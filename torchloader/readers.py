"""How one file becomes a sample: a reader per suffix, replaceable per dataset.

Images become ``uint8`` tensors of shape ``C x H x W``. JPEG files decode through
libjpeg-turbo directly when the optional ``simplejpeg`` package is installed
(``pip install 'torchloader[jpeg]'``), about 2.3x Pillow's rate per core, and
through Pillow otherwise. Both give identical pixels: simplejpeg is used only for
the cases where it was checked to match Pillow bit for bit (``mode="RGB"`` of
YCbCr and greyscale JPEGs, ``mode="L"`` of greyscale JPEGs); everything else
(CMYK, ``mode="L"`` of a colour JPEG, where libjpeg's luma differs from
Pillow's ``convert("L")`` by up to ~25 levels) goes through Pillow.

Nothing runs untrusted bytes as code: ``.npy``/``.npz`` load with
``allow_pickle=False``, ``.pt`` with ``weights_only=True``, and Pillow's
decompression-bomb guard applies to every image (a JPEG larger than
``PIL.Image.MAX_IMAGE_PIXELS`` is handed to Pillow so its guard decides).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

try:  # libjpeg-turbo without Pillow's per-image overhead
    import simplejpeg
except ImportError:  # pragma: no cover - exercised where simplejpeg is absent
    simplejpeg = None

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReader",
    "NpyReader",
    "NpzReader",
    "PtReader",
    "Reader",
    "SuffixReader",
    "read_bytes",
    "to_tensor",
]

Reader = Callable[[str], Union[torch.Tensor, np.ndarray]]
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
_MODES = ("RGB", "L", "RGBA", "keep")


def read_bytes(path: str) -> bytes:
    """The bytes of the file at ``path``: one ``fstat`` and (usually) one ``read``.

    A third faster than ``open(path, "rb").read()`` for small files (no buffered
    file object), which matters when decoding takes only ~80 us per image.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) == size:  # a short read of a regular file is its end
            return data
        parts = [data]
        while block := os.read(fd, max(size, 1 << 16)):
            parts.append(block)
        return b"".join(parts)
    finally:
        os.close(fd)


def to_tensor(value: Any, *, what: str = "reader output") -> torch.Tensor:
    """Turn a tensor or NumPy array into a CPU tensor without copying when possible.

    Non-native byte order is converted (torch has no big-endian tensors); object
    arrays are refused because they can only hold pickled Python objects.
    """
    if isinstance(value, torch.Tensor):
        return value
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{what} must be a torch.Tensor or numpy.ndarray "
            f"(got {type(value).__name__})"
        )
    if value.dtype.hasobject:
        raise TypeError(f"{what} is an object array; only numeric arrays can be loaded")
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    # torch warns on read-only memory and refuses negative strides: copy those.
    if not value.flags.writeable or any(stride < 0 for stride in value.strides):
        value = np.array(value, order="K")
    return torch.from_numpy(value)


class ImageReader:
    """Read an image file into a ``uint8`` tensor ``C x H x W``.

    The tensor is a ``C x H x W`` view of the decoded ``H x W x C`` pixels (as
    torchvision's ``pil_to_tensor`` returns), so the only copy is the one that
    stacks the batch.

    Args:
        mode: ``"RGB"`` (default, 3 channels), ``"L"`` (1 channel), ``"RGBA"``
            (4 channels) or ``"keep"`` (as stored; palette images are expanded to
            RGB/RGBA, 16-bit images keep their wider dtype).
        decoder: ``"auto"`` (libjpeg-turbo for JPEG where available), or
            ``"pillow"`` to always use Pillow.

    Example:
        >>> reader = ImageReader("L")
        >>> reader.mode
        'L'
    """

    def __init__(self, mode: str = "RGB", *, decoder: str = "auto") -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES} (got {mode!r})")
        if decoder not in ("auto", "pillow"):
            raise ValueError(f"decoder must be 'auto' or 'pillow' (got {decoder!r})")
        self.mode = mode
        self.decoder = decoder

    def __repr__(self) -> str:
        return f"ImageReader(mode={self.mode!r}, decoder={self.decoder!r})"

    def __call__(self, path: str) -> torch.Tensor:
        path = os.fspath(path)
        if self.decoder == "auto" and simplejpeg is not None and _is_jpeg(path):
            data = read_bytes(path)
            array = self._decode_turbo(data)
            if array is None:
                array = self._decode_pillow(path)
        else:
            array = self._decode_pillow(path)
        if array.ndim == 2:
            array = array[:, :, None]
        # A C x H x W view of the H x W x C pixels, as torchvision's pil_to_tensor
        # gives: the one copy happens where the batch is stacked. to_tensor copies
        # Pillow's read-only arrays (and fixes big-endian 16-bit ones).
        return to_tensor(array).permute(2, 0, 1)

    def read_into(self, path: str, out: np.ndarray) -> bool:
        """Decode ``path`` straight into ``out`` where that is exact; else return False.

        ``out`` is an ``H x W x C`` ``uint8`` array (the memory of a channels-last
        batch or chunk slot). A JPEG whose size, channels and colour space fit is
        decoded by libjpeg-turbo into it: no temporary array, no copy. Anything else
        (another format, size or colour space, CMYK, no simplejpeg) returns False
        and writes nothing, so the caller reads the file the ordinary way and
        reports any mismatch.
        """
        into = _TURBO_INTO.get(self.mode)
        if into is None or self.decoder != "auto" or simplejpeg is None or not _is_jpeg(path):
            return False
        if out.dtype != np.uint8 or out.shape[2:] != (into[1],) or not out.flags.c_contiguous:
            return False
        data = read_bytes(path)
        found = self._turbo_exact(data)
        if found is None or found[1:] != out.shape[:2]:
            return False
        simplejpeg.decode_jpeg(data, colorspace=found[0], buffer=out)
        return True

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
        return _TURBO_INTO[self.mode][0], height, width

    def _decode_turbo(self, data: bytes) -> np.ndarray | None:
        """Decode with libjpeg-turbo, or return None where Pillow must decide."""
        found = self._turbo_exact(data)
        return None if found is None else simplejpeg.decode_jpeg(data, colorspace=found[0])

    def _decode_pillow(self, path: str) -> np.ndarray:
        with Image.open(path) as image:
            transparent = image.mode == "P" and "transparency" in image.info
            if self.mode != "keep":
                if transparent and self.mode != "RGBA":
                    # P -> RGB/L warns for a transparency table; via RGBA gives the
                    # same pixels without the warning.
                    image = image.convert("RGBA")
                image = image.convert(self.mode)
            elif image.mode == "P":
                image = image.convert("RGBA" if transparent else "RGB")
            return np.asarray(image)


# Colour spaces whose libjpeg-turbo decode equals Pillow's, per mode (tested),
# and what simplejpeg decodes to for each mode.
_TURBO_EXACT = {"RGB": ("YCbCr", "Gray"), "L": ("Gray",)}
_TURBO_INTO = {"RGB": ("RGB", 3), "L": ("GRAY", 1)}


def _is_jpeg(path: str) -> bool:
    return path[-4:].lower() == ".jpg" or path[-5:].lower() == ".jpeg"


class NpyReader:
    """Read a ``.npy`` file (never unpickling), optionally memory-mapped.

    Args:
        mmap: map the file instead of reading it (copy-on-write, so the file is
            never modified); pages are read when the sample is used.
    """

    def __init__(self, *, mmap: bool = False) -> None:
        self.mmap = mmap

    def __repr__(self) -> str:
        return f"NpyReader(mmap={self.mmap})"

    def __call__(self, path: str) -> torch.Tensor:
        array = np.load(path, mmap_mode="c" if self.mmap else None, allow_pickle=False)
        return to_tensor(array, what=f"the array in {path!r}")


class NpzReader:
    """Read one named array from a ``.npz`` file (never unpickling).

    Args:
        key: the array's name; ``None`` accepts a file holding exactly one array.
    """

    def __init__(self, key: str | None = None) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"NpzReader(key={self.key!r})"

    def __call__(self, path: str) -> torch.Tensor:
        with np.load(path, allow_pickle=False) as archive:
            keys = sorted(archive.files)
            key = self.key
            if key is None:
                if len(keys) != 1:
                    raise KeyError(
                        f"{path!r} holds {len(keys)} arrays {keys}; pick one with "
                        f"reader=NpzReader(key=...)"
                    )
                key = keys[0]
            elif key not in archive.files:
                raise KeyError(f"{path!r} has no array {key!r} (it has {keys})")
            return to_tensor(archive[key], what=f"array {key!r} in {path!r}")


class PtReader:
    """Read a tensor saved with ``torch.save`` (``weights_only=True``: no code runs)."""

    def __repr__(self) -> str:
        return "PtReader()"

    def __call__(self, path: str) -> torch.Tensor:
        value = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{path!r} holds a {type(value).__name__}, expected a tensor; "
                f"pass a reader that picks the tensor out"
            )
        return value


def _default_readers() -> dict[str, Reader]:
    image = ImageReader()
    readers: dict[str, Reader] = {suffix: image for suffix in IMAGE_SUFFIXES}
    readers.update({".npy": NpyReader(), ".npz": NpzReader(), ".pt": PtReader()})
    return readers


class SuffixReader:
    """Pick a reader by the file's suffix (case-insensitive).

    Args:
        readers: suffix -> reader entries that replace or extend the defaults
            (images, ``.npy``, ``.npz``, ``.pt``), e.g. ``{".png": ImageReader("L")}``.

    Example:
        >>> reader = SuffixReader({".png": ImageReader("L")})
        >>> reader.readers[".png"]
        ImageReader(mode='L', decoder='auto')
        >>> ".npy" in reader.suffixes
        True
    """

    def __init__(self, readers: Mapping[str, Reader] | None = None) -> None:
        self.readers = _default_readers()
        for suffix, reader in (readers or {}).items():
            if not suffix.startswith(".") or not callable(reader):
                raise ValueError(
                    f"readers must map a suffix like '.png' to a callable "
                    f"(got {suffix!r}: {reader!r})"
                )
            self.readers[suffix.lower()] = reader

    @property
    def suffixes(self) -> tuple[str, ...]:
        return tuple(sorted(self.readers))

    def __repr__(self) -> str:
        return f"SuffixReader(suffixes={list(self.suffixes)})"

    def read_into(self, path: str, out: np.ndarray) -> bool:
        """Let the suffix's reader write ``path`` straight into ``out``, if it can."""
        reader = self.readers.get(os.path.splitext(path)[1].lower())
        read_into = getattr(reader, "read_into", None)
        return read_into is not None and read_into(path, out)

    def __call__(self, path: str) -> torch.Tensor | np.ndarray:
        suffix = os.path.splitext(path)[1].lower()
        reader = self.readers.get(suffix)
        if reader is None:
            raise ValueError(
                f"no reader for suffix {suffix!r} (known: {', '.join(self.suffixes)}); "
                f"pass reader=... or SuffixReader({{{suffix!r}: your_reader}})"
            )
        return reader(path)
