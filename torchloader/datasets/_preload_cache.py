"""The on-disk cache of ``PreloadedDataset.from_dataset(..., cache=DIR)``.

``DIR/x.npy`` and ``DIR/y.npy`` are plain ``.npy`` files (written through a
memory map while loading, so the data never has to fit in RAM twice) and
``DIR/meta.json`` is written last, through a temporary file and ``os.replace``:
a run that dies while loading leaves no cache that would be mistaken for a
complete one, and the next run starts over.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from torchloader._core.files import write_json_atomic
from torchloader.readers._tensor import to_tensor

__all__ = ["PreloadCache"]

FORMAT = "torchloader.preload-cache"
VERSION = 1


class PreloadCache:
    """A folder holding ``x.npy``, ``y.npy`` (optional) and ``meta.json``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        self._pending: dict[str, np.memmap] = {}

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def exists(self) -> bool:
        return os.path.exists(self._path("meta.json"))

    def allocate(self, n: int, x0: torch.Tensor, y0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Memory-mapped output files of ``n`` samples shaped like ``x0``/``y0``."""
        os.makedirs(self.root, exist_ok=True)
        x = self._map("x", n, x0)
        y = None if y0 is None else self._map("y", n, y0)
        return x, y

    def _map(self, name: str, n: int, like: torch.Tensor) -> torch.Tensor:
        dtype = torch.empty(0, dtype=like.dtype).numpy().dtype
        array = np.lib.format.open_memmap(
            self._path(f"{name}.npy.partial"), mode="w+", dtype=dtype, shape=(n, *like.shape)
        )
        self._pending[name] = array
        return torch.from_numpy(array)

    def commit(self) -> None:
        """Flush the files, move them into place, then write ``meta.json`` last."""
        meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "arrays": {}}
        for name, array in self._pending.items():
            array.flush()
            meta["arrays"][name] = {"shape": list(array.shape), "dtype": array.dtype.str}
            os.replace(self._path(f"{name}.npy.partial"), self._path(f"{name}.npy"))
        self._pending.clear()
        write_json_atomic(self._path("meta.json"), meta)

    def open(self, *, expected_len: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Memory-map the cached arrays (copy-on-write: the files never change)."""
        meta = self._read_meta()
        arrays = {}
        for name, info in meta["arrays"].items():
            array = np.load(self._path(f"{name}.npy"), mmap_mode="c", allow_pickle=False)
            if list(array.shape) != info["shape"]:
                raise ValueError(
                    f"'{self._path(name + '.npy')}' has shape {list(array.shape)} but "
                    f"meta.json says {info['shape']}; delete '{self.root}' to rebuild it"
                )
            arrays[name] = to_tensor(array, what=f"'{self._path(name + '.npy')}'")
        x = arrays["x"]
        if expected_len is not None and len(x) != expected_len:
            raise ValueError(
                f"the cache '{self.root}' holds {len(x)} samples but the dataset has "
                f"{expected_len}; delete the folder or pass another cache= path"
            )
        return x, arrays.get("y")

    def _read_meta(self) -> dict[str, Any]:
        path = self._path("meta.json")
        with open(path) as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(
                f"'{path}' is not a torchloader preload cache of version {VERSION} "
                f"(found format={meta.get('format')!r}, version={meta.get('version')!r}); "
                f"delete '{self.root}' to rebuild it"
            )
        return meta

    def __repr__(self) -> str:
        return f"PreloadCache({self.root!r})"
