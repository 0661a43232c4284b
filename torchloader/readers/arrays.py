"""Readers of arrays and tensors: ``.npy``, ``.npz`` and ``.pt`` files.

Nothing runs untrusted bytes as code: ``.npy``/``.npz`` load with
``allow_pickle=False``, ``.pt`` with ``weights_only=True``. A path that is not a
regular file (a FIFO, a device, a directory) is refused with
:class:`~torchloader.NotRegularFileError`, never waited on.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from torchloader.readers._files import open_regular
from torchloader.readers._npy_header import map_npy, read_npy_header
from torchloader.readers._tensor import to_tensor

__all__ = ["NpyReader", "NpzReader", "PtReader"]


class NpyReader:
    """Read a ``.npy`` file (never unpickling), optionally memory-mapped.

    Args:
        mmap: map the file instead of reading it (copy-on-write, so the file is
            never modified); pages are read when the sample is used. A file
            shorter than its header says is refused; one truncated in place
            while a sample of it is in use ends the process with ``SIGBUS``
            (the kernel's answer to reading a mapped page past the file's end).

    Example:
        >>> NpyReader(mmap=True)
        NpyReader(mmap=True)
    """

    def __init__(self, *, mmap: bool = False) -> None:
        self.mmap = mmap

    def __repr__(self) -> str:
        return f"NpyReader(mmap={self.mmap})"

    def __call__(self, path: str) -> torch.Tensor:
        path = os.fspath(path)
        with open_regular(path) as f:
            if self.mmap:  # the file checked is the file mapped (see _npy_header.py)
                array = map_npy(f, read_npy_header(f, path), path)
            else:
                array = np.load(f, allow_pickle=False)
        return to_tensor(array, what=f"the array in {path!r}")


class NpzReader:
    """Read one named array from a ``.npz`` file (never unpickling).

    Args:
        key: the array's name; ``None`` accepts a file holding exactly one array.

    Example:
        >>> NpzReader("image")
        NpzReader(key='image')
    """

    def __init__(self, key: str | None = None) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"NpzReader(key={self.key!r})"

    def __call__(self, path: str) -> torch.Tensor:
        path = os.fspath(path)
        with open_regular(path) as f, np.load(f, allow_pickle=False) as archive:
            keys = sorted(archive.files)
            key = self.key
            if key is None:
                if len(keys) != 1:
                    raise KeyError(f"{path!r} holds {len(keys)} arrays {keys}; pick one with reader=NpzReader(key=...)")
                key = keys[0]
            elif key not in archive.files:
                raise KeyError(f"{path!r} has no array {key!r} (it has {keys})")
            return to_tensor(archive[key], what=f"array {key!r} in {path!r}")


class PtReader:
    """Read a tensor saved with ``torch.save`` (``weights_only=True``: no code runs).

    Example:
        >>> PtReader()
        PtReader()
    """

    def __repr__(self) -> str:
        return "PtReader()"

    def __call__(self, path: str) -> torch.Tensor:
        path = os.fspath(path)
        with open_regular(path) as f:
            value = torch.load(f, map_location="cpu", weights_only=True)
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{path!r} holds a {type(value).__name__}, expected a tensor; pass a reader that picks the tensor out"
            )
        return value
