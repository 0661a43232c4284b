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

from collections.abc import Iterable, Iterator, Sized
from itertools import islice
from typing import Any

import numpy as np
from torch.utils.data import BatchSampler, DistributedSampler

from torchloader._core.checks import check_int
from torchloader.order.sampler import ChunkedSampler

__all__ = ["EpochIndices", "IndexBatchSampler", "shuffled_batches"]


class EpochIndices(np.ndarray):
    """A batch's indices that also say which ``epoch`` of a loader seeded ``seed``
    they belong to, so that a dataset seeds each sample's transform from
    ``(seed, epoch, index)`` (see NOTE [ per-sample randomness ]). They keep
    both across pickling, on their way to a DataLoader worker."""

    seed: int | None = None
    epoch: int | None = None

    @classmethod
    def copy_of(cls, indices: Any, seed: int | None, epoch: int | None) -> EpochIndices:
        """A new int64 array (owning its memory) of ``indices``, tagged ``(seed, epoch)``."""
        values = np.asarray(indices, dtype=np.int64)
        batch = np.ndarray.__new__(cls, values.shape, dtype=np.int64)
        batch[...] = values
        batch.seed, batch.epoch = seed, epoch
        return batch

    def __array_finalize__(self, source: Any) -> None:
        self.seed = getattr(source, "seed", None)
        self.epoch = getattr(source, "epoch", None)

    def __reduce__(self) -> Any:
        rebuild, args, state = super().__reduce__()  # type: ignore[misc]
        return rebuild, args, (state, self.seed, self.epoch)

    def __setstate__(self, state: Any) -> None:
        array_state, self.seed, self.epoch = state
        super().__setstate__(array_state)


class IndexBatchSampler(BatchSampler, DistributedSampler):
    """Group the indices of ``sampler`` into ``int64`` arrays of ``batch_size``.

    Args:
        sampler: any sampler or iterable of indices; a ``ChunkedSampler`` hands
            over whole slices of its order instead of one index at a time, and
            its seed and epoch travel with each batch (:class:`EpochIndices`)
            for the dataset's per-sample random transforms.
        batch_size: indices per batch.
        drop_last: drop a last batch shorter than ``batch_size``.

    A ``torch.utils.data.BatchSampler`` (Accelerate keeps it as one) and a
    ``DistributedSampler`` (Lightning leaves it in place under DDP); see NOTE
    [ samplers under Lightning and Accelerate ]. Neither constructor is called.

    Example:
        >>> [b.tolist() for b in IndexBatchSampler(range(5), 2)]
        [[0, 1], [2, 3], [4]]
    """

    def __init__(self, sampler: Iterable[int], batch_size: int, *, drop_last: bool = False) -> None:
        self.sampler = sampler
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[np.ndarray]:
        indices = iter(self.sampler)
        take = getattr(indices, "take", None)
        seed, epoch = getattr(self.sampler, "seed", None), getattr(indices, "epoch", None)
        while True:
            if take is not None:  # a copy, not a view of the sampler's order
                batch = EpochIndices.copy_of(take(self.batch_size), seed, epoch)
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
        return f"IndexBatchSampler({self.sampler!r}, batch_size={self.batch_size}, drop_last={self.drop_last})"


def shuffled_batches(
    dataset: Sized, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool
) -> IndexBatchSampler:
    """Index arrays of ``batch_size`` over a full shuffle of ``dataset`` per epoch.

    Under ``torch.distributed`` each rank gets its share of that shuffle, a new
    random share every epoch, as with ``DistributedSampler``.
    """
    # One chunk of the whole data set is a full shuffle, drawn from (seed, epoch);
    # ranks split it in a permutation drawn per epoch (see torchloader/order/chunking.py).
    order = ChunkedSampler(dataset, chunk_size=max(1, len(dataset)), shuffle=shuffle, seed=seed)
    return IndexBatchSampler(order, batch_size, drop_last=drop_last)
