"""The chunked order: pure NumPy functions of (n, chunk size, seed, epoch, rank).

A data set of ``n`` samples is cut into contiguous chunks of ``chunk_size``
indices (the last may be shorter); a chunk is a contiguous region on disk and the
unit that is loaded into RAM at once. Each epoch:

1. the order of the full chunks is permuted (``rng(seed, epoch)``); a shorter
   last chunk stays last, so that (with one replica) every run of
   ``chunk_size`` consecutive positions is one chunk and a batch size that
   divides ``chunk_size`` never mixes two chunks;
2. the chunks, laid end to end, form one line of ``n`` indices; it is padded by
   repeating its start (or, with ``drop_last``, cut) to a multiple of
   ``num_replicas``, and rank ``r`` takes the ``r``-th equal piece. A chunk that
   straddles two pieces is split between the two ranks by position in a
   permutation of the chunk drawn from (seed, epoch, chunk), so each gets a new
   random share of it every epoch (without ``shuffle``: two contiguous
   sub-chunks). As with ``DistributedSampler``, ranks have equal lengths and
   together cover the data set (padded) or are disjoint (``drop_last``);
3. the order inside every (sub-)chunk is permuted (``rng(seed, epoch, rank)``).

Trade-off: only ``chunk_size`` samples need to be in RAM, but a batch can only
mix samples of one chunk: two neighbours in this order come from the same chunk
with probability about ``1 - 1 / chunk_size``, against ``chunk_size / n`` for a
full shuffle; sort order within the data set (e.g. files grouped by class)
therefore leaks into batches when chunks are small. ``chunk_size = n`` is a
full shuffle. The ``n % chunk_size`` samples of a short last chunk always come
at the end of an epoch, so a ``DataLoader(drop_last=True)`` drops samples of
that chunk only: all of them, every epoch, when ``n % batch_size >= n %
chunk_size``. Pick a ``chunk_size`` that divides ``n``, or keep
``drop_last=False``.
"""

from __future__ import annotations

import numpy as np

from torchloader._core.checks import check_block, check_int, check_rank
from torchloader._core.units import format_bytes, parse_bytes

__all__ = ["chunk_size_for_budget", "epoch_order", "epoch_ranges"]


def chunk_size_for_budget(ram_budget: int | str, sample_nbytes: int) -> int:
    """How many samples of ``sample_nbytes`` fit in ``ram_budget``.

    Raises:
        ValueError: the budget holds less than one sample; the message gives both
            byte counts and the smallest budget that works.
    """
    budget = parse_bytes(ram_budget)
    if sample_nbytes <= 0:
        raise ValueError(f"sample_nbytes must be > 0 (got {sample_nbytes})")
    if budget < sample_nbytes:
        raise ValueError(
            f"ram_budget={budget} bytes ({format_bytes(budget)}) is smaller than one "
            f"sample ({sample_nbytes} bytes); the smallest budget that works is "
            f"ram_budget={sample_nbytes}"
        )
    return budget // sample_nbytes


def epoch_ranges(
    n: int,
    chunk_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    num_replicas: int = 1,
    rank: int = 0,
    drop_last: bool = False,
    block_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, stops)`` of the contiguous index ranges rank ``rank`` reads this
    epoch, in order (steps 1 and 2 of the module docstring): chunks, or blocks
    when ``block_size`` is given."""
    _check_order_args(n, chunk_size, num_replicas, rank, block_size)
    unit = chunk_size if block_size is None else block_size
    starts = np.arange(0, n, unit, dtype=np.int64)
    stops = np.minimum(starts + unit, n)
    if shuffle:  # a short last chunk stays last; a short block goes anywhere
        count = n // chunk_size if block_size is None else len(starts)
        order = np.random.default_rng([seed, epoch]).permutation(count)
        starts[: len(order)], stops[: len(order)] = starts[order], stops[order]
    per_rank = n // num_replicas if drop_last else -(-n // num_replicas)
    total = per_rank * num_replicas
    if total > n:  # pad by repeating the line from its start, like DistributedSampler
        repeats = -(-total // n)
        starts, stops = np.tile(starts, repeats), np.tile(stops, repeats)
    return _cut(starts, stops, rank * per_rank, (rank + 1) * per_rank)


def _check_order_args(n: int, chunk_size: int, num_replicas: int, rank: int, block_size: int | None = None) -> None:
    check_int("n", n)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    check_rank(rank, check_int("num_replicas", num_replicas, minimum=1))
    if block_size is not None:
        check_block(block_size, chunk_size)


def _cut(starts: np.ndarray, stops: np.ndarray, begin: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """The ranges covering positions [begin, end) of the line the ranges form."""
    ends = np.cumsum(stops - starts)  # line position where each range ends
    first = int(np.searchsorted(ends, begin, side="right"))
    last = int(np.searchsorted(ends, end, side="left"))
    if begin >= end:
        return starts[:0], stops[:0]
    starts, stops = starts[first : last + 1].copy(), stops[first : last + 1].copy()
    line_start = ends[first] - (stops[0] - starts[0])  # line position of starts[0]
    starts[0] += begin - line_start
    stops[-1] -= ends[last] - end
    return starts, stops


def epoch_order(
    n: int,
    chunk_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    num_replicas: int = 1,
    rank: int = 0,
    drop_last: bool = False,
    block_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, chunk_lengths)``: the order rank ``rank`` yields this epoch.

    ``indices`` is the concatenation of this rank's (sub-)chunks, each shuffled
    within itself when ``shuffle``; ``chunk_lengths`` gives their sizes.

    With ``block_size``, the data set is cut into contiguous blocks of that many
    samples instead, the blocks are permuted, and each run of ``chunk_size``
    positions of this rank's line of blocks is a chunk (shuffled within itself):
    a chunk then gathers ``chunk_size / block_size`` blocks from random places,
    so it mixes far more of the data set at the same RAM, while each block is
    still one sequential read.

    Example:
        >>> order, lengths = epoch_order(10, 4, shuffle=False)
        >>> order.tolist(), lengths.tolist()
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [4, 4, 2])
    """
    starts, stops = epoch_ranges(
        n,
        chunk_size,
        seed=seed,
        epoch=epoch,
        shuffle=shuffle,
        num_replicas=num_replicas,
        rank=rank,
        drop_last=drop_last,
        block_size=block_size,
    )
    lengths = stops - starts
    ends = np.cumsum(lengths)
    # indices = concatenated aranges, built without a Python loop over chunks
    offsets = np.repeat(starts - (ends - lengths), lengths)
    indices = np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64) + offsets
    if block_size is not None:  # chunks are runs of chunk_size over the blocks
        full, rest = divmod(len(indices), chunk_size)
        lengths = np.array([chunk_size] * full + ([rest] if rest else []), dtype=np.int64)
    elif shuffle and num_replicas > 1:
        _share_split_chunks(indices, starts, stops, lengths, chunk_size, n, seed, epoch)
    if shuffle and len(indices):
        _shuffle_within(indices, lengths, np.random.default_rng([seed, epoch, rank + 1]))
    return indices, lengths


def _share_split_chunks(
    indices: np.ndarray,
    starts: np.ndarray,
    stops: np.ndarray,
    lengths: np.ndarray,
    chunk_size: int,
    n: int,
    seed: int,
    epoch: int,
) -> None:
    """Give a rank a random share of each chunk it splits with another rank.

    A chunk that straddles two ranks' pieces is split by position; taking that
    position range of the chunk itself would give each rank the same part of
    the chunk in every epoch (all of its part of the data set, with one chunk).
    Instead both ranks take their position range of one permutation of the
    chunk drawn from (seed, epoch, chunk): disjoint, together the chunk, and a
    new share each epoch; the chunk is still one region of the data set.
    """
    ends = np.cumsum(lengths)
    for k, (a, b) in enumerate(zip(starts.tolist(), stops.tolist())):
        chunk = a // chunk_size
        first, last = chunk * chunk_size, min((chunk + 1) * chunk_size, n)
        if (a, b) == (first, last):
            continue  # a whole chunk
        share = np.random.default_rng([seed, epoch, 0, chunk]).permutation(last - first)
        indices[ends[k] - lengths[k] : ends[k]] = first + share[a - first : b - first]


def _shuffle_within(indices: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> None:
    """Permute ``indices`` in place inside each consecutive run of ``lengths``."""
    if len(indices) >= 64 * len(lengths):  # few, long chunks: O(n) shuffles in C
        ends = np.cumsum(lengths)
        for start, stop in zip((ends - lengths).tolist(), ends.tolist()):
            rng.shuffle(indices[start:stop])
    else:  # many tiny chunks: one vectorised sort beats a Python loop
        keys = rng.random(len(indices))
        chunk_ids = np.repeat(np.arange(len(lengths)), lengths)
        indices[:] = indices[np.lexsort((keys, chunk_ids))]
