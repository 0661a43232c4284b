"""Epochs of a remote pack ordered by its cache: nothing downloaded twice in one epoch.

A ``ChunkedSampler`` over a ``PackedDataset`` at a URL whose cache (``cache_limit``)
cannot hold this rank's share of the data set reorders its epoch, after the usual
chunked order has fixed which samples this rank reads (so every sample still comes
exactly once per epoch, on one rank):

1. this rank's shards that the cache holds when the epoch begins are read first,
   before downloads could evict them;
2. the other shards, in a random order drawn from ``(seed, epoch, rank)``, are read
   in windows of ``W`` shards: a window's shards are downloaded as its chunks need them
   and are all read before the next window's downloads evict them.

``W`` is the number of shards the cache has room for, less three (the chunk being
loaded and what ``ChunkedLoader`` prefetches for the next two). The room is the limit
less the bytes eviction cannot free: the small files (manifest, labels, index) of every
pack cached there. (Sized by the limit alone, a window overflowed a cache of a few
shards, and one pass downloaded five shards twice.)

Inside each group (the cached shards, then each window) the chunks keep the
chunked order; a chunk whose samples lie in two groups is served as two shorter
chunks. The order is a pure function of ``(seed, epoch, rank)`` and the set of
shards cached at the epoch's start and the cache's room then, which
``ChunkedSampler.state_dict`` saves, so a resumed epoch repeats it exactly (a state saved
over a local pack resumes over a remote one in the local order). The cost: a window mixes chunks of ``W`` shards
only, against the whole data set without a cache limit (a cache that holds a
rank's share changes nothing: the order is the chunked order). Processes that share one
cache folder share its limit; give each rank its own ``cache_dir`` (or its share
of the limit) when several read through one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cache_aware", "snapshot", "window_of"]

AHEAD = 3  # shards in use beyond a window: the chunk being loaded and the two prefetched


def window_of(room: int, biggest: int) -> int:
    """Shards per window: those ``room`` bytes hold (shards of at most ``biggest`` bytes),
    less ``AHEAD``; at least one."""
    return max(1, room // max(biggest, 1) - AHEAD)


def snapshot(plan: Any, order: np.ndarray) -> tuple[list[int], int | None]:
    """``(shards to read first, room)`` of ``plan``'s cache as an epoch of ``order`` (this
    rank's indices) begins: this rank's shards cached now (sorted), and the bytes the cache
    has for shards (None: no limit)."""
    room = plan.room()
    needed = set(np.unique(np.searchsorted(plan.stops, order, side="right")).tolist())
    return sorted(k for k in plan.cached() if k in needed), room


def cache_aware(
    order: np.ndarray, lengths: np.ndarray, plan: Any, cached: list[int], key: tuple[int, int, int], room: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, chunk_lengths)``: ``order`` regrouped by the cache (see the module).

    ``plan`` has ``stops`` (one past each shard's last sample) and ``nbytes`` (of each
    shard); ``cached``: the shards to read first (cached as the epoch begins: ``snapshot``);
    ``key``: ``(seed, epoch, rank)``; ``room``: the cache's room for shards then (None: no
    limit, the order unchanged).
    """
    if room is None or not len(order):
        return order, lengths
    nbytes = np.asarray(plan.nbytes, dtype=np.int64)
    shard = np.searchsorted(plan.stops, order, side="right")
    needed = np.unique(shard)
    biggest = int(nbytes.max())
    if int(nbytes[needed].sum()) + AHEAD * biggest <= room:
        return order, lengths  # the whole share fits: no shard is evicted before it is read
    window = window_of(room, biggest)
    is_cached = np.isin(needed, np.asarray(cached, dtype=np.int64))
    rest = needed[~is_cached]
    rest = rest[np.random.default_rng([*key, 1]).permutation(len(rest))]
    group = np.zeros(int(needed.max()) + 1, dtype=np.int64)  # 0: cached
    group[rest] = 1 + np.arange(len(rest)) // window
    groups = group[shard]
    new = np.argsort(groups, kind="stable")  # each group keeps the chunked order
    chunk = np.repeat(np.arange(len(lengths)), lengths)[new]
    groups = groups[new]
    cuts = np.flatnonzero((np.diff(chunk) != 0) | (np.diff(groups) != 0)) + 1
    return order[new], np.diff(np.concatenate([[0], cuts, [len(order)]])).astype(np.int64)
