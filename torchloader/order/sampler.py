"""``ChunkedSampler``: the chunked order of :mod:`torchloader.order.chunking` as a torch Sampler."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
from torch.utils.data import DistributedSampler

from torchloader._core.checks import check_block, check_int
from torchloader.order._arguments import check_chunking, check_replicas
from torchloader.order._epoch_iterator import EpochIterator
from torchloader.order._frameworks import sharded_by_framework
from torchloader.order.cached import cache_aware, snapshot
from torchloader.order.chunking import epoch_order

__all__ = ["ChunkedSampler"]


class ChunkedSampler(DistributedSampler):
    """Yield indices chunk by chunk: RAM-sized contiguous ranges, shuffled per epoch.

    Each epoch permutes the order of the chunks and the order inside every
    chunk, so each run of ``chunk_size`` consecutive indices comes from one
    contiguous range of the data set (with one replica). Chunks are dealt to
    ranks so that ranks have equal lengths and cover the data set (padded) or
    are disjoint (``drop_last``), like ``DistributedSampler``.

    Args:
        data_source: the dataset (only ``len`` is used, and one sample's byte size
            when ``ram_budget`` is given: ``data_source.sample_nbytes`` if it has
            one, else the size of ``data_source[0]``).
        chunk_size: samples per chunk. Exactly one of ``chunk_size`` and
            ``ram_budget`` must be given.
        ram_budget: bytes one chunk may take (int, or a string like ``"8GiB"``).
        shuffle: permute chunks and samples; ``False`` yields ``0 .. N-1``.
        seed: the order is a function of ``(seed, epoch)`` only.
        drop_last: drop the tail to make ranks equal instead of padding.
        num_replicas, rank: default from ``torch.distributed``, looked up when
            a pass starts (a sampler made before the process group exists,
            as Lightning and Accelerate scripts do, still gives each rank its share).
        block_size: if given (< chunk_size), a chunk is made of blocks of this
            many contiguous samples drawn from random places instead of one
            contiguous range: each block is still one sequential read, but a
            chunk mixes far more of the data set (see ``shuffle_quality``).

    Every pass is a new epoch (one left early too: a ``break``, Lightning stopping
    after ``len(loader)`` batches) unless :meth:`set_epoch` or :meth:`load_state_dict`
    said which epoch comes next.

    It is a ``torch.utils.data.DistributedSampler`` (without calling its
    constructor): Lightning then leaves it in place under DDP and calls its
    ``set_epoch``, instead of splitting this rank's share once more. Under
    Accelerate, whose ``prepare`` splits the batches between processes itself,
    a pass iterated by Accelerate's batch sharding yields the order of all
    ranks (see ``torchloader/order/_frameworks.py``).

    Example:
        >>> sampler = ChunkedSampler(range(10), chunk_size=4, seed=3)
        >>> [sorted(c.tolist()) for c in sampler.chunks()]
        [[4, 5, 6, 7], [0, 1, 2, 3], [8, 9]]
        >>> len(list(sampler))
        10
    """

    def __init__(
        self,
        data_source: Sized,
        *,
        chunk_size: int | None = None,
        ram_budget: int | str | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        block_size: int | None = None,
    ) -> None:
        self.num_samples = len(data_source)
        plan = getattr(data_source, "cache_plan", None)  # a remote pack: epochs ordered by its cache
        self._plan = plan() if callable(plan) else None
        self._cached: dict[int, tuple[list[int], int | None]] = {}  # (shards read first, room) as an epoch began
        if self.num_samples == 0:
            raise ValueError("data_source is empty; a sampler needs at least one sample")
        self.chunk_size = check_chunking(data_source, chunk_size, ram_budget)
        check_replicas(num_replicas, rank)  # given ones now; the defaults when a pass starts
        self._replicas = (num_replicas, rank)
        self._global = False  # this pass: all ranks' order (a framework splits it)
        self.shuffle = bool(shuffle)
        self.seed = check_int("seed", seed)
        self.drop_last = bool(drop_last)
        self.block_size = None if block_size is None else check_block(block_size, self.chunk_size)
        self.epoch = 0
        self._start = 0  # indices of this epoch already consumed before a resume
        self._current: EpochIterator | None = None  # the latest pass, even when done
        self._told = True  # the next pass is self.epoch (set, restored or just advanced)
        self.generation = 0  # counts passes begun and epochs set: what a pass began under

    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        """Ranks the data set is split between (``torch.distributed``'s, unless given)."""
        return 1 if self._global else check_replicas(*self._replicas)[0]

    @property
    def rank(self) -> int:  # type: ignore[override]
        """This process's rank (``torch.distributed``'s, unless given)."""
        return 0 if self._global else check_replicas(*self._replicas)[1]

    def begin_pass(self, *, global_order: bool = False) -> tuple[int, int]:
        """``(epoch, start)`` of a pass that begins now: the epoch after the last
        pass unless it was told (see the class docstring), from the resume position.

        ``global_order``: this pass yields the order of all ranks, for a framework
        that splits it between processes itself.
        """
        if not self._told:
            self.epoch, self._start = self.epoch + 1, 0
        self._told = False
        self.generation += 1
        self._global = global_order
        start, self._start = self._start, 0
        return self.epoch, start

    def end_pass(self, epoch: int) -> None:
        """A pass of ``epoch`` handed out its last index: the next pass is the next epoch."""
        if epoch == self.epoch and not self._told:
            self.epoch += 1
            self._told = True

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next pass.

        Setting the epoch that :meth:`load_state_dict` restored keeps its resume
        position, so the usual ``for epoch in ...: sampler.set_epoch(epoch)``
        loop resumes mid-epoch.
        """
        epoch = check_int("epoch", epoch)
        if epoch != self.epoch:
            self._start = 0
        self.epoch = epoch
        self._current = None
        self._told = True
        self.generation += 1

    def _order(self) -> tuple[np.ndarray, np.ndarray]:
        return self.order_of(self.epoch)

    def order_of(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, chunk_lengths)`` of ``epoch`` on this rank (see ``chunking.epoch_order``;
        over a remote pack whose cache cannot hold this rank's share, ``cached.cache_aware``)."""
        order, lengths = epoch_order(
            self.num_samples,
            self.chunk_size,
            seed=self.seed,
            epoch=epoch,
            shuffle=self.shuffle,
            num_replicas=self.num_replicas,
            rank=self.rank,
            drop_last=self.drop_last,
            block_size=self.block_size,
        )
        if self._plan is None:
            return order, lengths
        if epoch not in self._cached:  # the cache as this epoch begins, kept for its resume
            self._cached = {e: c for e, c in self._cached.items() if e >= min(epoch, self.epoch) - 1}
            self._cached[epoch] = snapshot(self._plan, order)
        cached, room = self._cached[epoch]
        return cache_aware(order, lengths, self._plan, cached, (self.seed, epoch, self.rank), room)

    def chunks(self) -> list[np.ndarray]:
        """This epoch's chunks for this rank, in order, as index arrays."""
        order, lengths = self._order()
        return np.split(order, np.cumsum(lengths)[:-1]) if len(lengths) else []

    def indices(self) -> np.ndarray:
        """The indices the next pass yields (all of its epoch, less any resumed part)."""
        return self.order_of(self.indices_epoch())[0][self.indices_start() :]

    def indices_epoch(self) -> int:
        """The epoch the next pass yields."""
        return self.epoch if self._told else self.epoch + 1

    def indices_start(self) -> int:
        """Where in its epoch's order the next pass starts (a resume position, or 0)."""
        return self._start if self._told else 0

    def __len__(self) -> int:
        """Indices per epoch on this rank (of all ranks, asked by Accelerate's sharding)."""
        replicas = 1 if sharded_by_framework() else self.num_replicas
        return self.length(replicas)

    def length(self, num_replicas: int | None = None) -> int:
        """Indices per epoch of one rank of ``num_replicas`` (default: this pass's)."""
        replicas = self.num_replicas if num_replicas is None else num_replicas
        if self.drop_last:
            return self.num_samples // replicas
        return -(-self.num_samples // replicas)

    def __iter__(self) -> Iterator[int]:
        epoch, start = self.begin_pass(global_order=sharded_by_framework())
        self._current = EpochIterator(self, self.order_of(epoch)[0][start:], start)
        return self._current

    def _finish_epoch(self, iterator: EpochIterator) -> None:
        if iterator is self._current:
            self.end_pass(iterator.epoch)

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where this epoch stands, for :meth:`load_state_dict` after a restart.

        Args:
            consumed: indices of the latest pass the training loop has used. Defaults
                to how many this sampler has yielded, which is ahead of the loop
                when a ``DataLoader`` prefetches: pass ``batches_done * batch_size``.
                It counts in the epoch of the latest pass even when the sampler
                has handed all of it out (and so moved on to the next epoch).
        """
        current = self._current
        epoch = self.epoch if current is None else current.epoch
        if consumed is None:
            if current is None:
                epoch, consumed = self.indices_epoch(), self.indices_start()
            elif current.finished:  # yielded all of it: the next epoch, from its start
                epoch, consumed = self.epoch, 0
            else:
                consumed = current.position
        return {
            "epoch": epoch,
            "consumed": self._check_consumed(consumed),
            "seed": self.seed,
            "num_samples": self.num_samples,
            "chunk_size": self.chunk_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "num_replicas": self.num_replicas,
            "rank": self.rank,
            "block_size": self.block_size,
            **_cache_state(self._cached.get(epoch)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next pass yields exactly what the interrupted pass had left."""
        missing = [key for key in ("epoch", "consumed", *_CONFIG_KEYS) if key not in state]
        if missing:
            raise ValueError(
                f"not a ChunkedSampler state: it lacks {missing}; pass what ChunkedSampler.state_dict() returned"
            )
        for key in _CONFIG_KEYS:
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume: the saved state has {key}={state[key]!r} but this "
                    f"sampler has {key}={getattr(self, key)!r}; build the sampler with "
                    f"the same arguments as the run that saved it"
                )
        consumed = self._check_consumed(state["consumed"])
        self.set_epoch(state["epoch"])
        self._start = consumed
        self._resume_cache(state)

    def _resume_cache(self, state: dict[str, Any]) -> None:
        """The cache the saved epoch was ordered by (``order/cached.py``), for its resume."""
        room = state.get("cache_room", state.get("cache_limit"))  # cache_limit: saved by 0.1 (the same use)
        if self._plan is None and room is not None:
            raise ValueError(
                f"cannot resume: the saved epoch was ordered by the cache of a remote pack (room for {room} "
                f"bytes of shards); resume it over the same URL"
            )
        if self._plan is not None:  # none saved: ordered as a local pack would be
            self._cached[state["epoch"]] = (list(state.get("cached", [])), room)

    def _check_consumed(self, consumed: Any) -> int:
        consumed = check_int("consumed", consumed)
        if consumed > self.length():
            raise ValueError(
                f"consumed={consumed} is more than len(sampler)={self.length()}, the indices of one epoch on this rank"
            )
        return consumed

    def __repr__(self) -> str:
        return (
            f"ChunkedSampler(num_samples={self.num_samples}, chunk_size={self.chunk_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch}, "
            f"drop_last={self.drop_last}, num_replicas={self.num_replicas}, "
            f"rank={self.rank}, block_size={self.block_size})"
        )


def _cache_state(cache: tuple[list[int], int | None] | None) -> dict[str, Any]:
    # cache_limit: the same number, for torchloader 0.1 (which orders by the same function of it)
    return {} if cache is None else {"cached": cache[0], "cache_room": cache[1], "cache_limit": cache[1]}


_CONFIG_KEYS = (
    "seed",
    "num_samples",
    "chunk_size",
    "shuffle",
    "drop_last",
    "num_replicas",
    "rank",
    "block_size",
)
