"""Tests for torchloader/order/chunking.py: the chunk plan and the epoch order.

The order is checked by its invariants over a grid of parameters (and a
hypothesis property), never against golden lists.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchloader import ChunkedSampler
from torchloader._core.units import parse_bytes
from torchloader.order import chunking
from torchloader.order.chunking import chunk_size_for_budget, epoch_order, epoch_ranges

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4

# ------------------------------------------------------ chunk_size_for_budget


@pytest.mark.parametrize("sample", [1, 3, 40, 1000, 3 * MiB])
@pytest.mark.parametrize("budget", [3 * MiB, 3 * MiB + 1, 10**9, "1GiB", "512MB"])
def test_chunk_size_for_budget_is_the_most_samples_that_fit(budget, sample):
    size = chunk_size_for_budget(budget, sample)
    assert size * sample <= parse_bytes(budget) < (size + 1) * sample


def test_chunk_size_for_budget_smallest_budget_is_one_sample():
    assert chunk_size_for_budget(400, 400) == 1
    assert chunk_size_for_budget("1KiB", 1024) == 1


def test_chunk_size_for_budget_too_small_names_both_sizes_and_the_fix():
    with pytest.raises(ValueError) as info:
        chunk_size_for_budget("1KiB", 3 * MiB)
    assert str(info.value) == (
        "ram_budget=1024 bytes (1.0 KiB) is smaller than one sample (3145728 bytes); "
        "the smallest budget that works is ram_budget=3145728"
    )


@pytest.mark.parametrize("sample", [0, -4])
def test_chunk_size_for_budget_rejects_empty_samples(sample):
    with pytest.raises(ValueError) as info:
        chunk_size_for_budget(100, sample)
    assert str(info.value) == f"sample_nbytes must be > 0 (got {sample})"


# ------------------------------------------------------------ the epoch order


def _expand(starts, stops):
    if len(starts) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)])


def _per_rank(n, num_replicas, drop_last):
    return n // num_replicas if drop_last else -(-n // num_replicas)


def check_epoch(n, chunk_size, seed, epoch, shuffle, num_replicas, drop_last):
    """Every invariant of one epoch of the chunked order, over all ranks."""
    kw = dict(seed=seed, epoch=epoch, shuffle=shuffle, drop_last=drop_last)
    per_rank = _per_rank(n, num_replicas, drop_last)
    # the line every rank cuts its piece from: all chunks of one replica, in order
    line_starts, line_stops = epoch_ranges(n, chunk_size, **kw)
    line = _expand(line_starts, line_stops)
    assert np.array_equal(np.sort(line), np.arange(n))  # one replica: a permutation
    pieces, orders = [], []
    for rank in range(num_replicas):
        order, lengths = epoch_order(n, chunk_size, num_replicas=num_replicas, rank=rank, **kw)
        starts, stops = epoch_ranges(n, chunk_size, num_replicas=num_replicas, rank=rank, **kw)
        assert order.dtype == np.int64 and lengths.dtype == np.int64
        assert len(order) == per_rank == lengths.sum()
        assert np.array_equal(lengths, stops - starts)
        assert (lengths >= 1).all()  # no empty (sub-)chunks
        bounds = np.cumsum(lengths)[:-1]
        for chunk, a, b in zip(np.split(order, bounds), starts, stops):
            # a (sub-)chunk lies inside one chunk of the data set; a whole chunk is
            # its contiguous range, a part of one (split between two ranks) is a
            # share of it: contiguous without shuffle, random with it
            first = a // chunk_size * chunk_size
            whole = np.arange(first, min(first + chunk_size, n))
            assert a // chunk_size == (b - 1) // chunk_size
            assert len(chunk) == b - a and len(np.unique(chunk)) == len(chunk)
            assert np.isin(chunk, whole).all()
            if (a, b) == (whole[0], whole[-1] + 1) or not shuffle or num_replicas == 1:
                assert np.array_equal(np.sort(chunk), np.arange(a, b))
            if not shuffle:
                assert np.array_equal(chunk, np.arange(a, b))
        pieces.append(_expand(starts, stops))
        orders.append(order)
    # ranks take consecutive equal pieces of the line, padded by repeating it
    total = per_rank * num_replicas
    padded = np.tile(line, -(-total // n) if n else 0)[:total]
    assert np.array_equal(np.concatenate(pieces), padded)
    everything = np.concatenate(orders)
    counts = np.bincount(everything, minlength=n)
    if drop_last:  # disjoint
        assert counts.max(initial=0) <= 1
    else:  # together they cover the data set
        assert counts.min(initial=1) >= 1
    assert len(everything) == total
    if num_replicas == 1:
        check_single_replica(orders[0], n, chunk_size, shuffle)
    return orders


def check_single_replica(order, n, chunk_size, shuffle):
    assert np.array_equal(np.sort(order), np.arange(n))
    if not shuffle:
        assert np.array_equal(order, np.arange(n))
    # every run of chunk_size consecutive positions comes from one chunk
    for k in range(0, n, chunk_size):
        run = order[k : k + chunk_size]
        assert (run // chunk_size == run[0] // chunk_size).all(), (k, run)


SIZES = [1, 2, 7, 10, 16, 33, 64]
CHUNK_SIZES = [1, 3, 4, 16, 50]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_epoch_order_invariants_over_a_grid(n, chunk_size):
    for seed, epoch, shuffle, num_replicas, drop_last in itertools.product(
        [0, 5], [0, 3], [True, False], [1, 2, 3, 4, 8], [False, True]
    ):
        check_epoch(n, chunk_size, seed, epoch, shuffle, num_replicas, drop_last)


def test_epoch_order_invariants_hold_for_random_parameters():
    rng = np.random.default_rng(2024)  # a fixed sweep: the same cases every run
    for _ in range(150):
        n, chunk_size = int(rng.integers(1, 301)), int(rng.integers(1, 81))
        seed, epoch = int(rng.integers(2**32)), int(rng.integers(10**6))
        shuffle, drop_last = bool(rng.integers(2)), bool(rng.integers(2))
        num_replicas = int(rng.integers(1, 10))
        check_epoch(n, chunk_size, seed, epoch, shuffle, num_replicas, drop_last)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 300),
    chunk_size=st.integers(1, 80),
    seed=st.integers(0, 2**32 - 1),
    epoch=st.integers(0, 10**6),
    shuffle=st.booleans(),
    num_replicas=st.integers(1, 9),
    drop_last=st.booleans(),
)
def test_epoch_order_invariants_hold_for_any_parameters(n, chunk_size, seed, epoch, shuffle, num_replicas, drop_last):
    check_epoch(n, chunk_size, seed, epoch, shuffle, num_replicas, drop_last)


@pytest.mark.parametrize("num_replicas", [1, 3])
@pytest.mark.parametrize(("n", "chunk_size"), [(100, 10), (103, 10), (1000, 1000), (50, 1)])
def test_epoch_order_is_a_function_of_seed_and_epoch(n, chunk_size, num_replicas):
    def order(seed, epoch, rank=0):
        return epoch_order(n, chunk_size, seed=seed, epoch=epoch, num_replicas=num_replicas, rank=rank)[0]

    for seed, epoch in itertools.product([0, 1, 12345], [0, 1, 7]):
        assert np.array_equal(order(seed, epoch), order(seed, epoch))
    epochs = [order(0, epoch).tobytes() for epoch in range(8)]
    assert len(set(epochs)) == len(epochs)
    seeds = [order(seed, 3).tobytes() for seed in range(8)]
    assert len(set(seeds)) == len(seeds)


def test_epoch_order_permutes_the_chunks_and_inside_every_chunk():
    n, chunk_size = 400, 20
    chunk_orders, first_chunk_orders = set(), set()
    for epoch in range(6):
        starts, _ = epoch_ranges(n, chunk_size, epoch=epoch)
        order, _ = epoch_order(n, chunk_size, epoch=epoch)
        chunk_orders.add(tuple(starts.tolist()))
        inside = order[np.argsort(order // chunk_size, kind="stable")][:chunk_size]
        first_chunk_orders.add(tuple(inside.tolist()))  # chunk 0, as served
    assert len(chunk_orders) == 6
    assert len(first_chunk_orders) == 6


@pytest.mark.parametrize(("n", "chunk_size"), [(10, 4), (33, 16), (7, 3), (5, 50)])
def test_short_last_chunk_stays_last(n, chunk_size):
    for epoch in range(10):
        starts, stops = epoch_ranges(n, chunk_size, epoch=epoch)
        lengths = stops - starts
        assert (lengths[:-1] == chunk_size).all()
        assert starts[-1] == n - lengths[-1]


def test_chunk_size_of_n_is_a_full_shuffle():
    order, lengths = epoch_order(1000, 1000, seed=1)
    assert lengths.tolist() == [1000]
    assert not np.array_equal(order, np.arange(1000))
    assert np.array_equal(np.sort(order), np.arange(1000))


def test_epoch_order_without_shuffle_example():
    order, lengths = epoch_order(10, 4, shuffle=False)
    assert order.tolist() == list(range(10))
    assert lengths.tolist() == [4, 4, 2]


def test_ranks_split_a_straddling_chunk_into_contiguous_sub_chunks():
    # 10 samples, chunks of 4, 2 ranks without shuffle: rank 0 gets 0..4, rank 1 5..9
    ranges = [epoch_ranges(10, 4, shuffle=False, num_replicas=2, rank=r) for r in (0, 1)]
    assert [(s.tolist(), e.tolist()) for s, e in ranges] == [
        ([0, 4], [4, 5]),
        ([5, 8], [8, 10]),
    ]


def test_padding_repeats_the_start_of_the_line():
    # 5 samples over 4 ranks: 8 slots, the line 0..4 then 0, 1, 2 again
    orders = [epoch_order(5, 2, shuffle=False, num_replicas=4, rank=r)[0] for r in range(4)]
    assert [o.tolist() for o in orders] == [[0, 1], [2, 3], [4, 0], [1, 2]]


def test_more_replicas_than_samples():
    orders = [epoch_order(2, 1, num_replicas=5, rank=r, seed=3)[0] for r in range(5)]
    assert all(len(o) == 1 for o in orders)
    assert set(np.concatenate(orders).tolist()) == {0, 1}
    dropped = [epoch_order(2, 1, num_replicas=5, rank=r, drop_last=True) for r in range(5)]
    assert all(len(o) == 0 and len(lengths) == 0 for o, lengths in dropped)


def test_empty_data_set_gives_an_empty_order():
    order, lengths = epoch_order(0, 4)
    assert order.tolist() == [] and lengths.tolist() == []
    assert order.dtype == np.int64


@pytest.mark.parametrize(
    ("n", "chunk_size", "num_replicas", "error", "message"),
    [
        (-1, 4, 1, ValueError, "n must be >= 0 (got n=-1)"),
        (10, 0, 1, ValueError, "chunk_size must be >= 1 (got chunk_size=0)"),
        (10, -2, 1, ValueError, "chunk_size must be >= 1 (got chunk_size=-2)"),
        (10, 4, 0, ValueError, "num_replicas must be >= 1 (got num_replicas=0)"),
        (10, 2.0, 1, TypeError, "chunk_size must be an int (got 2.0, a float)"),
        (10.0, 2, 1, TypeError, "n must be an int (got 10.0, a float)"),
    ],
)
def test_epoch_order_rejects_bad_sizes(n, chunk_size, num_replicas, error, message):
    with pytest.raises(error) as info:
        epoch_order(n, chunk_size, num_replicas=num_replicas)
    assert str(info.value) == message


def test_epoch_order_and_the_sampler_give_the_same_text_for_the_same_mistake():
    with pytest.raises(ValueError) as pure:
        epoch_order(10, 4, num_replicas=2, rank=2)
    with pytest.raises(ValueError) as sampler:
        ChunkedSampler(range(10), chunk_size=4, num_replicas=2, rank=2)
    assert str(pure.value) == str(sampler.value) == "rank must be in [0, 1] for num_replicas=2 (got rank=2)"
    with pytest.raises(ValueError) as pure:
        epoch_order(10, 4, block_size=4)
    with pytest.raises(ValueError) as sampler:
        ChunkedSampler(range(10), chunk_size=4, block_size=4)
    assert str(pure.value) == str(sampler.value)


@pytest.mark.parametrize("rank", [-1, 2, 3])
def test_epoch_order_rejects_a_rank_outside_the_replicas(rank):
    with pytest.raises(ValueError) as info:
        epoch_ranges(10, 4, num_replicas=2, rank=rank)
    assert str(info.value) == f"rank must be in [0, 1] for num_replicas=2 (got rank={rank})"


def test_chunking_is_pure_numpy():
    tree = ast.parse(Path(chunking.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "numpy", "torchloader"}


def test_all_is_sorted_and_complete():
    assert chunking.__all__ == sorted(chunking.__all__)
    public = {
        name
        for name, value in vars(chunking).items()
        if callable(value) and not name.startswith("_") and getattr(value, "__module__", None) == chunking.__name__
    }
    assert set(chunking.__all__) == public
