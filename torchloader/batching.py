"""``IndexBatchSampler``: batches of indices as arrays, for datasets that gather.

``torch.utils.data.BatchSampler`` yields Python lists, and a ``DataLoader`` with
``batch_size=256`` then calls ``dataset[i]`` 256 times and stacks the results.
For data already in RAM that per-sample work is most of the cost. This sampler
yields one ``int64`` NumPy array per batch, meant for
``DataLoader(dataset, batch_size=None, sampler=IndexBatchSampler(...))``, so the
dataset serves each batch with one gather (see ``PreloadedDataset``). Arrays,
not tensors: they cross to worker processes as a few bytes of pickle instead of
a shared-memory segment each.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sized
from itertools import islice
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Sampler

from .sampler import ChunkedSampler

__all__ = ["BatchLoader", "IndexBatchSampler", "SkippedBack", "batch_dataloader", "shuffled_batches"]


class IndexBatchSampler(Sampler[np.ndarray]):
    """Group the indices of ``sampler`` into ``int64`` arrays of ``batch_size``.

    Args:
        sampler: any sampler or iterable of indices; a ``ChunkedSampler`` hands
            over whole slices of its order instead of one index at a time.
        batch_size: indices per batch.
        drop_last: drop a last batch shorter than ``batch_size``.

    Example:
        >>> [b.tolist() for b in IndexBatchSampler(range(5), 2)]
        [[0, 1], [2, 3], [4]]
    """

    def __init__(
        self, sampler: Iterable[int], batch_size: int, *, drop_last: bool = False
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int (got {batch_size!r})")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[np.ndarray]:
        indices = iter(self.sampler)
        take = getattr(indices, "take", None)
        while True:
            if take is not None:
                batch = np.array(take(self.batch_size), dtype=np.int64)  # a copy, not a view
            else:
                batch = np.fromiter(islice(indices, self.batch_size), dtype=np.int64)
            if len(batch) == 0 or (self.drop_last and len(batch) < self.batch_size):
                return
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler) if isinstance(self.sampler, Sized) else None
        if n is None:
            raise TypeError("the wrapped sampler has no len()")
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Forward to the wrapped sampler (as ``DistributedSampler.set_epoch``)."""
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return (
            f"IndexBatchSampler({self.sampler!r}, batch_size={self.batch_size}, "
            f"drop_last={self.drop_last})"
        )


def shuffled_batches(
    dataset: Sized, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool
) -> IndexBatchSampler:
    """Index arrays of ``batch_size`` over a full shuffle of ``dataset`` per epoch.

    Under ``torch.distributed`` each rank gets its share of that shuffle, a new
    random share every epoch, as with ``DistributedSampler``.
    """
    # One chunk of the whole data set is a full shuffle, drawn from (seed, epoch);
    # ranks split it in a permutation drawn per epoch (see torchloader/chunking.py).
    order = ChunkedSampler(dataset, chunk_size=max(1, len(dataset)), shuffle=shuffle, seed=seed)
    return IndexBatchSampler(order, batch_size, drop_last=drop_last)


def batch_dataloader(
    dataset: Any, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool,
    reports_skipped: bool = False, **kwargs: Any,
) -> DataLoader:  # fmt: skip
    """A ``DataLoader`` that hands ``dataset`` one index array per batch.

    ``DataLoader(dataset, batch_size=None, sampler=IndexBatchSampler(...))``: the
    dataset's ``dataset[indices]`` builds the whole batch, and the DataLoader's
    per-sample fetch and collate are skipped. Other keyword arguments
    (``num_workers``, ``pin_memory``, ...) pass through. ``reports_skipped``: a
    :class:`BatchLoader`, which asks for :class:`SkippedBack` batches and brings the
    samples ``on_error="skip"`` left out back from the workers into ``dataset.errors``.
    """
    for key in ("sampler", "batch_sampler", "collate_fn"):
        if key in kwargs:
            raise TypeError(
                f"dataloader() sets {key} itself; for your own {key} build "
                f"DataLoader(ds, batch_size=None, sampler=IndexBatchSampler(...))"
            )
    sampler = shuffled_batches(dataset, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
    if kwargs.get("num_workers", 0) > 0:
        kwargs["worker_init_fn"] = FreezeGC(kwargs.get("worker_init_fn"))
    if reports_skipped:
        sampler = _SkippedBackSampler(sampler.sampler, batch_size, drop_last=drop_last)
        return BatchLoader(dataset, batch_size=None, sampler=sampler, **kwargs)
    return DataLoader(dataset, batch_size=None, sampler=sampler, **kwargs)


class SkippedBack(np.ndarray):
    """Batch indices that ask ``dataset[indices]`` for ``(batch, skipped)``: how the
    workers of ``ds.dataloader()`` send back the samples ``on_error="skip"`` left out."""


class _SkippedBackSampler(IndexBatchSampler):
    def __iter__(self) -> Iterator[np.ndarray]:
        for batch in super().__iter__():
            yield batch.view(SkippedBack)


class BatchLoader(DataLoader):
    """A ``DataLoader`` whose batches are read whole by the dataset (``ds.dataloader()``).

    A worker sends each batch with the samples ``on_error="skip"`` left out of
    it; this loader hands out the batch and records the rest in
    :attr:`errors`, the dataset's own log, in the main process.
    """

    @property
    def errors(self) -> Any:
        """The dataset's :class:`ErrorLog` (``ds.errors``)."""
        return self.dataset.errors  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return _Unwrapped(super().__iter__(), self.errors)


class _Unwrapped:
    """Torch's DataLoader iterator, handing out the batches of its ``(batch, skipped)``
    items and recording the skipped samples in ``errors``."""

    def __init__(self, iterator: Any, errors: Any) -> None:
        self._iterator = iterator
        self._errors = errors

    def __iter__(self) -> _Unwrapped:
        return self

    def __next__(self) -> Any:
        batch, skipped = next(self._iterator)
        if skipped:
            self._errors.record(skipped, stacklevel=3)
        return batch

    def __len__(self) -> int:
        return len(self._iterator)

    def __getattr__(self, name: str) -> Any:  # the workers, ... of torch's iterator
        return getattr(self._iterator, name)


class FreezeGC:
    """A ``worker_init_fn`` that first moves the objects a worker inherited out of
    the garbage collector's reach (``gc.freeze()``), then runs ``then``.

    A forked worker's first full collection writes to every tracked object it
    inherited, and so copies their pages: ~36 MiB per worker measured here, even
    though the dataset's paths are not Python objects (benchmarks/stress_worker_memory.py).
    """

    def __init__(self, then: Callable[[int], Any] | None = None) -> None:
        self.then = then

    def __call__(self, worker_id: int) -> None:
        gc.freeze()
        if self.then is not None:
            self.then(worker_id)
