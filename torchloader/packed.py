"""``PackedDataset``: a packed directory read through memory maps, no decoding.

Samples come back like ``PathDataset``'s (images as ``C x H x W`` uint8 views
of the stored ``H x W x C`` pixels, labels as 0-dim int64 tensors). ``gather``
reads a whole list of indices at once, shard by shard in storage order, and a
run of consecutive indices is one slice of one file: this is how
``ChunkedLoader`` fills a RAM chunk with sequential reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .shards import Manifest

__all__ = ["PackedDataset"]


class PackedDataset(Dataset):
    """The samples of a directory written by ``torchloader pack``.

    Args:
        root: the packed directory.
        transform, target_transform: as for ``PathDataset`` (applied per sample
            in ``ds[i]``; ``gather`` returns the stored pixels).

    Raises:
        FileNotFoundError, ValueError: a missing, interrupted or foreign directory,
            or a shard that does not match the manifest (the file and the fix are named).

    Example:
        >>> ds = PackedDataset("data/train.packed")  # doctest: +SKIP
        >>> x, y = ds[0]; xb, yb = ds.gather([5, 6, 7])  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        self.root = os.fspath(root)
        self.manifest = Manifest.read(self.root)
        self.transform = transform
        self.target_transform = target_transform
        self._stops = np.array([s.stop for s in self.manifest.shards], dtype=np.int64)
        self._images = self.manifest.options.get("layout") == "HWC"
        self._shards: list[np.ndarray] | None = None  # memory maps, opened on first use
        self._labels: np.ndarray | None = None

    @property
    def classes(self) -> list[str] | None:
        return self.manifest.classes

    @property
    def labels(self) -> np.ndarray | None:
        """int64 labels of every sample (None for unlabelled data)."""
        self._open()
        return self._labels

    @property
    def sample_nbytes(self) -> int:
        x = int(np.prod(self.manifest.sample_shape)) * np.dtype(self.manifest.dtype).itemsize
        return x + (8 if self.manifest.labels is not None else 0)

    def __len__(self) -> int:
        return self.manifest.count

    def _open(self) -> list[np.ndarray]:
        if self._shards is None:
            self._shards = [self._map(s.file, s.stop - s.start) for s in self.manifest.shards]
            if self.manifest.labels is not None:
                self._labels = self._map(self.manifest.labels["file"], self.manifest.count, labels=True)
        return self._shards

    def _map(self, name: str, count: int, *, labels: bool = False) -> np.ndarray:
        path = os.path.join(self.root, name)
        shape = (count,) if labels else (count, *self.manifest.sample_shape)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"cannot map '{path}' ({type(exc).__name__}: {exc}): the packed directory "
                f"is damaged; `torchloader verify {self.root}` lists what differs, and "
                f"`torchloader pack SRC {self.root} --overwrite` rebuilds it"
            ) from exc
        if array.shape != shape:
            raise ValueError(
                f"'{path}' holds {array.shape}, the manifest says {shape}; re-pack with "
                f"`torchloader pack SRC {self.root} --overwrite`"
            )
        return array

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples")
        index = index % len(self)
        shards = self._open()
        k = int(np.searchsorted(self._stops, index, side="right"))
        x = self._tensor(np.array(shards[k][index - self.manifest.shards[k].start]), batch=False)
        if self.transform is not None:
            x = self.transform(x)
        if self._labels is None:
            return x
        y = torch.scalar_tensor(int(self._labels[index]), dtype=torch.int64)
        return x, y if self.target_transform is None else self.target_transform(y)

    def gather(self, indices: Sequence[int] | np.ndarray) -> Any:
        """The samples at ``indices`` as one batch, read shard by shard in storage order."""
        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(indices, kind="stable")
        ordered = indices[order]
        out = np.empty((len(indices), *self.manifest.sample_shape), dtype=self.manifest.dtype)
        shards = self._open()
        bounds = np.searchsorted(ordered, np.concatenate(([0], self._stops)))
        for k, shard in enumerate(shards):
            a, b = int(bounds[k]), int(bounds[k + 1])
            if a == b:
                continue
            local = ordered[a:b] - self.manifest.shards[k].start
            if local[-1] - local[0] + 1 == len(local):  # a run: one sequential slice
                out[order[a:b]] = shard[local[0] : local[-1] + 1]
            else:
                out[order[a:b]] = shard[local]
        x = self._tensor(out, batch=True)
        if self._labels is None:
            return x
        return x, torch.from_numpy(np.asarray(self._labels[indices]))

    def _tensor(self, array: np.ndarray, *, batch: bool) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if not self._images:
            return tensor
        return tensor.permute(0, 3, 1, 2) if batch else tensor.permute(2, 0, 1)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shards"] = state["_labels"] = None  # each process maps the files itself
        return state

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"PackedDataset({self.root!r}, n={m.count}, shape={tuple(m.sample_shape)}, "
            f"dtype={m.dtype}, shards={len(m.shards)}, classes={len(m.classes or [])})"
        )
