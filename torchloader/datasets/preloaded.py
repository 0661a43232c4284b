"""``PreloadedDataset``: the whole data set as tensors in RAM, served by gathers.

When the data fits in RAM, an epoch should be
one ``torch.index_select`` per batch, not ``batch_size`` Python calls and a
per-sample collate: on 28x28 samples a default ``DataLoader(ds, batch_size=256)``
spends most of its time in that per-sample work. ``ds.dataloader(...)`` (or
``batch_size=None`` with an :class:`IndexBatchSampler`) hands the dataset one
index batch at a time; ``ds.batches(...)`` skips the DataLoader altogether.

Workers share the tensors instead of copying them: forked workers inherit the
memory, and for spawned workers torch's pickler moves the tensor to shared
memory once. A data set loaded with ``from_dataset(..., cache=DIR)`` is a
memory-mapped ``.npy`` file and is sent to workers as its path.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from torchloader._core.indices import as_index_array, check_index, is_batch
from torchloader._core.layout import SampleLayout, storage_order
from torchloader._core.shared_batches import take
from torchloader.datasets._dataloader import batch_dataloader, getitems
from torchloader.datasets._load_all import load_all
from torchloader.datasets._preload_cache import PreloadCache
from torchloader.datasets.batching import IndexBatchSampler, shuffled_batches
from torchloader.protocols import MapDataset
from torchloader.readers._tensor import to_tensor

__all__ = ["PreloadedDataset"]


class PreloadedDataset(Dataset):
    """Samples held as two tensors, ``x`` (N x ...) and optional ``y`` (N x ...).

    Args:
        x: tensor or array of samples; the first dimension indexes them.
        y: tensor or array of targets with the same first dimension, or None.

    ``ds[i]`` is ``(x[i], y[i])`` (or ``x[i]``); ``ds[indices]`` with a list,
    array, tensor or slice returns the whole batch from one gather.

    Example:
        >>> ds = PreloadedDataset(torch.arange(12).reshape(6, 2), torch.arange(6))
        >>> xb, yb = ds[[4, 0]]
        >>> xb.tolist(), yb.tolist()
        ([[8, 9], [0, 1]], [4, 0])
        >>> [len(yb) for _, yb in ds.batches(4, shuffle=False)]
        [4, 2]
    """

    def __init__(
        self,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        self.x = to_tensor(x, what="x")
        self.y = None if y is None else to_tensor(y, what="y")
        if self.x.ndim == 0:
            raise ValueError("x must have a first dimension that indexes the samples")
        if self.y is not None and (self.y.ndim == 0 or len(self.y) != len(self.x)):
            raise ValueError(
                f"x and y must have the same first dimension (got x {tuple(self.x.shape)} and y {tuple(self.y.shape)})"
            )
        self._cache: PreloadCache | None = None

    @property
    def sample_nbytes(self) -> int:
        """Bytes of one sample (x and y): what a RAM budget divides by."""
        size = self.x[0].numel() * self.x.element_size()
        if self.y is not None:
            size += self.y[0].numel() * self.y.element_size()
        return size

    def __len__(self) -> int:
        return len(self.x)

    def __getitems__(self, indices: Any) -> list[Any]:
        """What a DataLoader with a batch sampler fetches (see ``_dataloader.getitems``)."""
        return getitems(self, indices)

    def __getitem__(self, index: Any) -> Any:
        if is_batch(index):
            return self.gather(index)
        i = check_index(index, len(self))
        if self.y is None:
            return self.x[i]
        return self.x[i], self.y[i]

    def gather(self, indices: Any) -> Any:
        """The samples at ``indices`` (list, array, tensor or slice) as one batch."""
        if isinstance(indices, slice):
            xb = self.x[indices]
            return xb if self.y is None else (xb, self.y[indices])
        return self._take(torch.from_numpy(as_index_array(indices, len(self))))

    def gather_into(self, indices: Any, out: tuple[torch.Tensor, torch.Tensor | None]) -> bool:
        """Gather the samples at ``indices`` straight into ``out=(x, y)`` (tensors shaped
        like the batch and laid out in memory as the samples are, e.g. a ``ChunkedLoader``
        buffer); False, with nothing written, where the layout differs."""
        index = torch.from_numpy(as_index_array(indices, len(self)))
        if not all(
            _fits(t, src) for t, src in ((out[0], self.x), (out[1], self.y)) if t is not None and src is not None
        ):
            return False
        _index_select(self.x, index, out[0])
        if out[1] is not None and self.y is not None:
            _index_select(self.y, index, out[1])
        return True

    def _take(self, index: torch.Tensor) -> Any:
        xb = _index_select(self.x, index)
        return xb if self.y is None else (xb, _index_select(self.y, index))

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
    ) -> Iterator[Any]:
        """One epoch of batches without a ``DataLoader``: the fastest way to iterate.

        The order is a function of ``(seed, epoch)``; pass a new ``epoch`` each time.
        """
        sampler = self._index_sampler(batch_size, shuffle, seed, drop_last)
        sampler.sampler.set_epoch(epoch)
        order = torch.from_numpy(sampler.sampler.indices())
        if drop_last:
            order = order[: len(order) - len(order) % batch_size]
        x, y = self.x, self.y  # the loop below is the whole cost: keep it bare
        layout = storage_order(x)
        if layout is not None and layout != sorted(layout):  # channels-last: gather stored rows
            stored, inverse = x.permute(layout), [layout.index(d) for d in range(x.ndim)]
            if y is None:
                return (torch.index_select(stored, 0, i).permute(inverse) for i in order.split(batch_size))
            return (
                (torch.index_select(stored, 0, i).permute(inverse), torch.index_select(y, 0, i))
                for i in order.split(batch_size)
            )
        if y is None:
            return (torch.index_select(x, 0, i) for i in order.split(batch_size))
        return ((torch.index_select(x, 0, i), torch.index_select(y, 0, i)) for i in order.split(batch_size))

    def dataloader(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        **kwargs: Any,
    ) -> DataLoader:
        """A ``torch.utils.data.DataLoader`` that serves each batch by one gather.

        It is an ordinary DataLoader whose batch sampler yields whole batches,
        each read by ``__getitems__`` (see ``_dataloader.batch_dataloader``); other keyword arguments
        (``num_workers``, ``pin_memory``, ``persistent_workers``, ...) pass through.
        The order changes every epoch, as a function of ``(seed, epoch)``.

        Example:
            >>> ds = PreloadedDataset(torch.zeros(10, 3), torch.arange(10))
            >>> [tuple(xb.shape) for xb, _ in ds.dataloader(4)]
            [(4, 3), (4, 3), (2, 3)]
        """
        return batch_dataloader(self, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, **kwargs)

    def _index_sampler(self, batch_size: int, shuffle: bool, seed: int, drop_last: bool) -> IndexBatchSampler:
        return shuffled_batches(self, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)

    @classmethod
    def from_dataset(
        cls,
        dataset: MapDataset,
        *,
        num_workers: int | None = None,
        cache: str | None = None,
        progress: bool = True,
    ) -> PreloadedDataset:
        """Load every sample of a map-style dataset into RAM, in parallel.

        Args:
            dataset: any dataset whose samples are ``x`` or ``(x, y)`` of one
                shape and dtype (a resize transform makes images so).
            num_workers: loader processes (default: the usable cores, at most 8).
            cache: a folder; the first run writes ``x.npy``/``y.npy`` there, later
                runs memory-map them instead of loading again.
            progress: show a tqdm progress bar.

        Raises:
            ValueError: samples differ in shape or dtype (both indices are named),
                or the cache was written for a data set of another length.

        Example:
            >>> ds = PreloadedDataset.from_dataset(
            ...     [(torch.ones(2), 1), (torch.zeros(2), 0)], num_workers=0, progress=False)
            >>> ds.y.tolist()
            [1, 0]
        """
        store = PreloadCache(cache) if cache is not None else None
        if store is not None and store.exists():
            return cls._from_cache(store, expected_len=len(dataset))
        allocate = store.allocate if store is not None else _allocate_in_ram
        x, y = load_all(dataset, allocate, num_workers=num_workers, progress=progress)
        if store is None:
            return cls(x, y)
        del x, y  # flush the written maps, then read them back as a clean map
        store.commit()
        return cls._from_cache(store, expected_len=len(dataset))

    @classmethod
    def _from_cache(cls, store: PreloadCache, *, expected_len: int) -> PreloadedDataset:
        x, y = store.open(expected_len=expected_len)
        ds = cls(x, y)
        ds._cache = store
        return ds

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._cache is not None:  # workers map the files themselves
            state["x"] = state["y"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._cache is not None:
            self.x, self.y = self._cache.open(expected_len=None)

    def __repr__(self) -> str:
        y = "None" if self.y is None else f"{tuple(self.y.shape)} {self.y.dtype}"
        cache = "" if self._cache is None else f", cache={self._cache.root!r}"
        return f"PreloadedDataset(x={tuple(self.x.shape)} {self.x.dtype}, y={y}{cache})"


def _index_select(source: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``source[index]`` along dim 0, in ``source``'s memory order (into ``out``)."""
    # index_select, not source[index]: advanced indexing measured 5.8x slower here.
    # On the stored order: rows of a channels-last tensor are then plain memory
    # copies, not an element-by-element transposition (measured 3x slower).
    in_worker = get_worker_info() is not None
    if out is None and not in_worker and source.is_contiguous():  # the common case, bare: no permutes
        return torch.index_select(source, 0, index)
    order = storage_order(source)
    if order is None:
        order = list(range(source.ndim))
    stored = source.permute(order)
    inverse = [order.index(d) for d in range(source.ndim)]
    if out is None and in_worker:
        # In a worker, gather straight into shared memory, as torch's default_collate
        # does, so sending the batch to the main process copies nothing more.
        shape = (index.shape[0], *stored.shape[1:])  # (len() of a tensor is a Python call)
        storage = take(math.prod(shape) * source.element_size())  # a reused slot, see _core/shared_batches.py
        out = torch.empty(0, dtype=source.dtype).set_(storage, 0, shape).permute(inverse)
    if out is None:
        return torch.index_select(stored, 0, index).permute(inverse)
    torch.index_select(stored, 0, index, out=out.permute(order))
    return out


def _allocate_in_ram(n: int, x0: torch.Tensor, y0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    # In the samples' own memory order (images decoded H x W x C are kept
    # channels-last), so loading them is plain copies, and so are the gathers.
    buffer = SampleLayout.of(x0, y0).allocate(n, pin=False)
    return buffer.x, buffer.y


def _fits(out: torch.Tensor, source: torch.Tensor) -> bool:
    """Whether a gather from ``source`` can write into ``out`` as it is laid out."""
    return (
        out.dtype == source.dtype
        and out.shape[1:] == source.shape[1:]
        and storage_order(out) is not None
        and storage_order(out) == storage_order(source)
    )
