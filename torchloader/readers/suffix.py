"""``SuffixReader``: pick a file's reader by its suffix, images and arrays by default."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np
import torch

from torchloader.readers.arrays import NpyReader, NpzReader, PtReader
from torchloader.readers.image import ImageReader

__all__ = ["IMAGE_SUFFIXES", "Reader", "SuffixReader"]

Reader = Callable[[str], torch.Tensor | np.ndarray]
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


def _default_readers(image: Reader) -> dict[str, Reader]:
    readers: dict[str, Reader] = {suffix: image for suffix in IMAGE_SUFFIXES}
    readers.update({".npy": NpyReader(), ".npz": NpzReader(), ".pt": PtReader()})
    return readers


class SuffixReader:
    """Pick a reader by the file's suffix (case-insensitive).

    Args:
        readers: suffix -> reader entries that replace or extend the defaults
            (images, ``.npy``, ``.npz``, ``.pt``), e.g. ``{".png": ImageReader("L")}``.
        image: the reader of every image suffix (default ``ImageReader()``), e.g.
            ``ImageReader(exif_transpose=True)`` for phone photos.

    The default readers refuse a path that is not a regular file (a FIFO, a
    device, a directory) with :class:`NotRegularFileError`; a reader of your own
    gets the path as given, and can open it with
    :func:`torchloader.readers._files.open_regular` to do the same.

    Example:
        >>> reader = SuffixReader({".png": ImageReader("L")})
        >>> reader.readers[".png"]
        ImageReader(mode='L', decoder='auto', exif_transpose=False)
        >>> ".npy" in reader.suffixes
        True
        >>> SuffixReader(image=ImageReader(exif_transpose=True)).readers[".jpg"].exif_transpose
        True
    """

    def __init__(self, readers: Mapping[str, Reader] | None = None, *, image: Reader | None = None) -> None:
        if image is not None and not callable(image):
            raise ValueError(f"image must be a reader, e.g. ImageReader(exif_transpose=True) (got {image!r})")
        self.readers = _default_readers(ImageReader() if image is None else image)
        for suffix, reader in (readers or {}).items():
            if not suffix.startswith(".") or not callable(reader):
                raise ValueError(f"readers must map a suffix like '.png' to a callable (got {suffix!r}: {reader!r})")
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
