"""The header of an open ``.npy`` file, and a map of its data checked against its size.

``np.load(path, mmap_mode=...)`` opens the file by name a second time; mapping the
file object that was checked (a regular file, of the size its header needs)
leaves no gap between the check and the map. A file shorter than its header says
is refused by name instead of being mapped (reading past its end would end the
process with ``SIGBUS``).
"""

from __future__ import annotations

import os
from typing import BinaryIO, NamedTuple

import numpy as np

__all__ = ["NpyHeader", "map_npy", "read_npy_header"]


class NpyHeader(NamedTuple):
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int  # where the data starts

    @property
    def file_size(self) -> int:
        """The size a complete file with this header has."""
        return self.offset + int(np.prod(self.shape)) * self.dtype.itemsize


def read_npy_header(f: BinaryIO, path: str) -> NpyHeader:
    """The header of the ``.npy`` file ``f`` (read from its start; never unpickles).

    Raises:
        ValueError: not a ``.npy`` file, or one of a dtype holding Python objects.
    """
    f.seek(0)
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if dtype.hasobject:
        raise ValueError(f"{path!r} holds Python objects, which only unpickling can read")
    return NpyHeader(tuple(shape), bool(fortran), dtype, f.tell())


def map_npy(f: BinaryIO, header: NpyHeader, path: str) -> np.ndarray:
    """A copy-on-write map of the data of ``f`` (a complete file, checked)."""
    size = os.fstat(f.fileno()).st_size
    if size != header.file_size:
        raise ValueError(
            f"{path!r} is {size} bytes, its header needs {header.file_size} for "
            f"{header.dtype} {header.shape} (truncated or still being written?)"
        )
    if header.file_size == header.offset:  # nothing to map: mmap refuses length 0
        return np.empty(header.shape, header.dtype, order="F" if header.fortran else "C")
    order = "F" if header.fortran else "C"
    return np.memmap(f, header.dtype, "c", header.offset, header.shape, order)
