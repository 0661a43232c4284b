"""Tests for torchloader/order/sampler.py: ChunkedSampler, a thin shell over chunking.py."""

from __future__ import annotations

import itertools
import json
import pickle

import numpy as np
import pytest
import torch
import torch.distributed as dist
from helpers import free_port
from torch.utils.data import DataLoader, DistributedSampler

from torchloader.order.chunking import epoch_order
from torchloader.order.sampler import ChunkedSampler


class IndexDataset(torch.utils.data.Dataset):
    """Sample ``i`` is ``i``: what a loader yields is the sampler's order.

    At module level so that spawned DataLoader workers can import it.
    """

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


class SizedDataset:
    """``n`` float32 samples of ``shape``; ``known`` adds a ``sample_nbytes`` attribute."""

    def __init__(self, n, shape=(10,), known=None):
        self.n, self.shape = n, shape
        if known is not None:
            self.sample_nbytes = known

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return torch.zeros(self.shape), index


def _sampler(n, **kwargs):
    kwargs.setdefault("chunk_size", 4)
    return ChunkedSampler(range(n), **kwargs)


def _error(exc_type, call):
    with pytest.raises(exc_type) as info:
        call()
    return str(info.value)


# ----------------------------------------------------------------- validation


def test_both_chunk_size_and_ram_budget_is_an_error():
    message = _error(ValueError, lambda: ChunkedSampler(range(10), chunk_size=2, ram_budget="1KiB"))
    assert message == (
        "give exactly one of chunk_size (samples) or ram_budget (bytes) (got chunk_size=2, ram_budget='1KiB')"
    )


def test_neither_chunk_size_nor_ram_budget_is_an_error():
    message = _error(ValueError, lambda: ChunkedSampler(range(10)))
    assert message == (
        "give exactly one of chunk_size (samples) or ram_budget (bytes) (got chunk_size=None, ram_budget=None)"
    )


@pytest.mark.parametrize(
    ("name", "value", "type_name"),
    [
        ("chunk_size", "4", "str"),
        ("chunk_size", 4.0, "float"),
        ("chunk_size", True, "bool"),
        ("seed", "0", "str"),
        ("seed", 1.5, "float"),
        ("num_replicas", 2.0, "float"),
        ("rank", "0", "str"),
    ],
)
def test_bad_types_are_named(name, value, type_name):
    kwargs = {"chunk_size": 4, name: value}
    message = _error(TypeError, lambda: ChunkedSampler(range(10), **kwargs))
    assert message == f"{name} must be an int (got {value!r}, a {type_name})"


@pytest.mark.parametrize(
    ("name", "value", "minimum"),
    [("chunk_size", 0, 1), ("chunk_size", -3, 1), ("seed", -1, 0), ("num_replicas", 0, 1)],
)
def test_out_of_range_values_are_named(name, value, minimum):
    kwargs = {"chunk_size": 4, name: value}
    message = _error(ValueError, lambda: ChunkedSampler(range(10), **kwargs))
    assert message == f"{name} must be >= {minimum} (got {name}={value})"


@pytest.mark.parametrize(("num_replicas", "rank"), [(1, 1), (2, 2), (4, 7)])
def test_rank_must_be_below_num_replicas(num_replicas, rank):
    message = _error(ValueError, lambda: _sampler(10, num_replicas=num_replicas, rank=rank))
    assert message == (f"rank must be in [0, {num_replicas - 1}] for num_replicas={num_replicas} (got rank={rank})")


@pytest.mark.parametrize("data_source", [[], range(0), IndexDataset(0)])
def test_empty_data_source_is_an_error(data_source):
    message = _error(ValueError, lambda: ChunkedSampler(data_source, chunk_size=4))
    assert message == "data_source is empty; a sampler needs at least one sample"


def test_numpy_integers_are_accepted():
    s = ChunkedSampler(range(10), chunk_size=np.int64(4), seed=np.uint8(3))
    assert (s.chunk_size, s.seed) == (4, 3)
    assert type(s.chunk_size) is int


# ---------------------------------------------------------------- ram_budget


@pytest.mark.parametrize(
    ("budget", "chunk_size"),
    [(40, 1), (79, 1), (80, 2), (4000, 100), ("4000B", 100), ("1KiB", 25), ("1KB", 25), ("1MiB", 26214)],
)
def test_ram_budget_measures_the_first_sample(budget, chunk_size):
    # a sample is a float32 tensor of 10 (40 bytes) and an int label (8 bytes)
    s = ChunkedSampler(SizedDataset(100, shape=(8,)), ram_budget=budget)
    assert s.chunk_size == chunk_size


@pytest.mark.parametrize(("budget", "chunk_size"), [(1000, 1), ("1MiB", 1048), ("8KB", 8)])
def test_ram_budget_uses_sample_nbytes_when_the_dataset_knows_it(budget, chunk_size):
    s = ChunkedSampler(SizedDataset(5, known=1000), ram_budget=budget)
    assert s.chunk_size == chunk_size


def test_ram_budget_smaller_than_one_sample_says_what_works():
    message = _error(ValueError, lambda: ChunkedSampler(SizedDataset(5), ram_budget=39))
    assert message == (
        "ram_budget=39 bytes (39 B) is smaller than one sample (48 bytes); "
        "the smallest budget that works is ram_budget=48"
    )
    assert ChunkedSampler(SizedDataset(5), ram_budget=48).chunk_size == 1


def test_ram_budget_of_a_bad_type_is_named():
    message = _error(TypeError, lambda: ChunkedSampler(SizedDataset(5), ram_budget=1.5))
    assert message == "ram_budget=1.5: size must be an int or a string like '8GiB' (got float)"


def test_ram_budget_unreadable_string_is_named():
    message = _error(ValueError, lambda: ChunkedSampler(SizedDataset(5), ram_budget="lots"))
    assert message == ("ram_budget='lots': cannot read 'lots' as a size; write e.g. '8GiB', '512MB' or 1048576")


# ---------------------------------------------------------------- the order

GRID_N = [1, 5, 10, 16, 37]
GRID_CHUNK = [1, 3, 4, 16, 40]


@pytest.mark.parametrize("n", GRID_N)
@pytest.mark.parametrize("chunk_size", GRID_CHUNK)
def test_single_replica_yields_whole_chunks_in_turn(n, chunk_size):
    for seed, epoch in itertools.product([0, 9], [0, 1, 4]):
        s = _sampler(n, chunk_size=chunk_size, seed=seed)
        s.set_epoch(epoch)
        order = list(s)
        assert all(type(i) is int for i in order)
        assert sorted(order) == list(range(n))
        for k in range(0, n, chunk_size):  # each run of chunk_size is one chunk
            assert len({i // chunk_size for i in order[k : k + chunk_size]}) == 1
        s.set_epoch(epoch)
        chunks = s.chunks()
        assert np.concatenate(chunks).tolist() == order
        for chunk in chunks:
            assert sorted(chunk.tolist()) == list(range(chunk.min(), chunk.max() + 1))
        assert order == epoch_order(n, chunk_size, seed=seed, epoch=epoch)[0].tolist()


@pytest.mark.parametrize("n", GRID_N)
@pytest.mark.parametrize("chunk_size", GRID_CHUNK)
def test_no_shuffle_yields_zero_to_n(n, chunk_size):
    s = _sampler(n, chunk_size=chunk_size, shuffle=False)
    for _ in range(2):
        assert list(s) == list(range(n))


def test_the_order_is_a_function_of_seed_and_epoch():
    def order(seed, epoch):
        s = _sampler(200, chunk_size=20, seed=seed)
        s.set_epoch(epoch)
        return tuple(s)

    assert order(3, 2) == order(3, 2)
    assert len({order(0, epoch) for epoch in range(6)}) == 6
    assert len({order(seed, 1) for seed in range(6)}) == 6


def test_the_epoch_advances_after_a_complete_pass():
    s = _sampler(50, chunk_size=7, seed=1)
    expected = []
    for epoch in range(3):
        ref = _sampler(50, chunk_size=7, seed=1)
        ref.set_epoch(epoch)
        expected.append(list(ref))
    assert s.epoch == 0
    assert [list(s) for _ in range(3)] == expected
    assert s.epoch == 3


def test_a_new_pass_after_an_abandoned_one_is_the_next_epoch():
    s = _sampler(50, chunk_size=7)
    reference = _sampler(50, chunk_size=7)
    full = [list(reference), list(reference)]
    head = list(itertools.islice(s, 10))
    assert head == full[0][:10] and s.epoch == 0
    assert list(s) == full[1] and s.epoch == 2  # as a DataLoader's next pass: a new epoch


def test_set_epoch_after_an_abandoned_pass_gives_that_epoch():
    s = _sampler(50, chunk_size=7)
    full = list(_sampler(50, chunk_size=7))
    list(itertools.islice(s, 10))
    s.set_epoch(0)
    assert list(s) == full and s.epoch == 1


def test_set_epoch_during_a_pass_wins_over_the_auto_advance():
    s = _sampler(20)
    it = iter(s)
    next(it)
    s.set_epoch(5)
    list(it)  # the old pass runs out
    assert s.epoch == 5


@pytest.mark.parametrize("rank", [-1, 1])
def test_a_rank_outside_the_replicas_is_named_with_the_range(rank):
    message = _error(ValueError, lambda: ChunkedSampler(range(10), chunk_size=4, num_replicas=1, rank=rank))
    assert message == f"rank must be in [0, 0] for num_replicas=1 (got rank={rank})"


@pytest.mark.parametrize("epoch", [-1, "1", 1.0])
def test_set_epoch_checks_its_argument(epoch):
    with pytest.raises((TypeError, ValueError)) as info:
        _sampler(10).set_epoch(epoch)
    if epoch == -1:
        assert str(info.value) == "epoch must be >= 0 (got epoch=-1)"
    else:
        kind = type(epoch).__name__
        assert str(info.value) == f"epoch must be an int (got {epoch!r}, a {kind})"


@pytest.mark.parametrize("n", [1, 7, 10, 33])
@pytest.mark.parametrize("num_replicas", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("drop_last", [False, True])
def test_len_matches_distributed_sampler(n, num_replicas, drop_last):
    for rank in range(num_replicas):
        s = _sampler(n, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        ref = DistributedSampler(range(n), num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        assert len(s) == len(ref) == len(list(s)) == len(s.indices())


# --------------------------------------------------------------- distributed


@pytest.mark.parametrize("n", [1, 2, 9, 10, 31, 64])
@pytest.mark.parametrize("chunk_size", [1, 4, 11, 64])
@pytest.mark.parametrize("num_replicas", [2, 3, 5])
def test_ranks_are_equal_and_disjoint_or_covering(n, chunk_size, num_replicas):
    for seed, epoch, drop_last, shuffle in itertools.product([0, 7], [0, 3], [False, True], [True, False]):
        per_rank = []
        for rank in range(num_replicas):
            s = _sampler(
                n,
                chunk_size=chunk_size,
                seed=seed,
                shuffle=shuffle,
                drop_last=drop_last,
                num_replicas=num_replicas,
                rank=rank,
            )
            s.set_epoch(epoch)
            chunks = s.chunks()
            order = list(s)  # (moves on to the next epoch)
            assert np.concatenate(chunks or [np.zeros(0, np.int64)]).tolist() == order
            for chunk in chunks:  # inside one chunk of the data set
                lo, hi = int(chunk.min()), int(chunk.max())
                assert lo // chunk_size == hi // chunk_size
                if not shuffle:  # a contiguous range (with shuffle: a random share of it)
                    assert sorted(chunk.tolist()) == list(range(lo, hi + 1))
            per_rank.append(order)
        assert len({len(order) for order in per_rank}) == 1  # equal lengths
        everything = [i for order in per_rank for i in order]
        if drop_last:
            assert len(set(everything)) == len(everything) == n - n % num_replicas
        else:
            assert set(everything) == set(range(n))
            assert len(everything) == -(-n // num_replicas) * num_replicas
        if not shuffle:  # same samples padded or dropped as DistributedSampler
            ref = itertools.chain.from_iterable(
                DistributedSampler(range(n), num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=drop_last)
                for rank in range(num_replicas)
            )
            assert sorted(everything) == sorted(ref)


@pytest.fixture
def process_group():
    port = free_port()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_replicas_default_from_torch_distributed(process_group, monkeypatch):
    assert dist.is_initialized()
    s = _sampler(10)
    assert (s.num_replicas, s.rank) == (1, 0)
    assert list(s) == list(_sampler(10, num_replicas=1, rank=0))
    # what a 4-process group would report on its rank 2
    monkeypatch.setattr(dist, "get_world_size", lambda *args, **kwargs: 4)
    monkeypatch.setattr(dist, "get_rank", lambda *args, **kwargs: 2)
    s = _sampler(10)
    assert (s.num_replicas, s.rank) == (4, 2)
    assert list(s) == list(_sampler(10, num_replicas=4, rank=2))
    s = _sampler(10, num_replicas=2, rank=1)  # explicit arguments win
    assert (s.num_replicas, s.rank) == (2, 1)


def test_replicas_default_to_one_without_torch_distributed(monkeypatch):
    assert not dist.is_initialized()
    monkeypatch.setattr(dist, "get_world_size", lambda *args, **kwargs: 4)
    s = _sampler(10)
    assert (s.num_replicas, s.rank) == (1, 0)


# ------------------------------------------------------------------- resume


def _epoch(n, epoch, **kwargs):
    s = _sampler(n, **kwargs)
    s.set_epoch(epoch)
    return list(s)


def _positions(length, chunk_size):
    """Resume points: the start, one in, mid-chunk, a chunk boundary, the last, the end."""
    return sorted({p for p in (0, 1, chunk_size // 2, chunk_size, length - 1, length) if 0 <= p <= length})


@pytest.mark.parametrize(("n", "chunk_size"), [(1, 1), (10, 4), (23, 5), (23, 23), (40, 8)])
@pytest.mark.parametrize("num_replicas", [1, 3])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [True, False])
def test_resume_yields_what_an_uninterrupted_run_would(n, chunk_size, num_replicas, drop_last, shuffle):
    for rank, epoch in itertools.product(range(num_replicas), [0, 2]):
        config = dict(
            chunk_size=chunk_size, seed=11, shuffle=shuffle, drop_last=drop_last, num_replicas=num_replicas, rank=rank
        )
        this, following = _epoch(n, epoch, **config), _epoch(n, epoch + 1, **config)
        for consumed in _positions(len(this), chunk_size):
            s = _sampler(n, **config)
            s.set_epoch(epoch)
            it = iter(s)
            assert [next(it) for _ in range(consumed)] == this[:consumed]
            state = json.loads(json.dumps(s.state_dict()))  # plain data for checkpoints
            if 0 < consumed == len(this):  # all handed out: the next epoch, from 0
                assert (state["epoch"], state["consumed"]) == (epoch + 1, 0)
                rest = following
            else:
                assert (state["epoch"], state["consumed"]) == (epoch, consumed)
                rest = this[consumed:]
            fresh = _sampler(n, **config)
            fresh.load_state_dict(state)
            assert fresh.indices().tolist() == rest
            assert list(fresh) == rest
            assert fresh.epoch == state["epoch"] + 1
            if rest is not following:
                assert list(fresh) == following


@pytest.mark.parametrize(("n", "chunk_size"), [(10, 4), (23, 5), (40, 8)])
@pytest.mark.parametrize("num_replicas", [1, 2])
def test_resume_then_later_epochs_continue_the_stream(n, chunk_size, num_replicas):
    for rank in range(num_replicas):
        config = dict(chunk_size=chunk_size, seed=4, num_replicas=num_replicas, rank=rank)
        stream = [_epoch(n, epoch, **config) for epoch in range(4)]
        length = len(stream[0])
        for consumed in _positions(length, chunk_size):
            s = _sampler(n, **config)
            s.set_epoch(1)
            list(s)  # the pass ran ahead of the training loop (prefetch)
            state = s.state_dict(consumed=consumed)
            assert (state["epoch"], state["consumed"]) == (1, consumed)
            fresh = _sampler(n, **config)
            fresh.load_state_dict(state)
            assert list(fresh) == stream[1][consumed:]
            assert fresh.epoch == 2
            assert list(fresh) == stream[2]
            # the usual loop, which sets the epoch every time, resumes as well
            loop = _sampler(n, **config)
            loop.load_state_dict(state)
            got = []
            for epoch in range(state["epoch"], 4):
                loop.set_epoch(epoch)
                got.append(list(loop))
            assert got == [stream[1][consumed:], stream[2], stream[3]]


def test_resume_at_the_end_yields_nothing_then_the_next_epoch():
    s = _sampler(10, seed=2)
    s.set_epoch(3)
    state = s.state_dict(consumed=10)
    fresh = _sampler(10, seed=2)
    fresh.load_state_dict(state)
    assert list(fresh) == []
    assert fresh.epoch == 4
    assert list(fresh) == _epoch(10, 4, seed=2)


def test_next_and_take_can_be_mixed_across_blocks():
    n = 10_000  # more than one block of Python ints
    full = _epoch(n, 0, chunk_size=700, seed=1)
    s = _sampler(n, chunk_size=700, seed=1)
    it = iter(s)
    got = [next(it) for _ in range(5)] + it.take(3).tolist()
    got += [next(it) for _ in range(4100)] + it.take(5000).tolist() + list(it)
    assert got == full
    assert s.epoch == 1 and it.take(4).tolist() == [] and list(it) == []
    assert s.epoch == 1


def test_state_dict_counts_what_the_sampler_has_yielded():
    s = _sampler(20, chunk_size=6)
    assert s.state_dict()["consumed"] == 0
    it = iter(s)
    for k in range(1, 20):
        next(it)
        assert (s.state_dict()["epoch"], s.state_dict()["consumed"]) == (0, k)
    next(it)
    assert (s.state_dict()["epoch"], s.state_dict()["consumed"]) == (1, 0)


def test_state_dict_describes_the_configuration():
    s = _sampler(10, chunk_size=3, seed=5, drop_last=True, num_replicas=3, rank=1)
    assert s.state_dict(consumed=2) == {
        "epoch": 0,
        "consumed": 2,
        "seed": 5,
        "num_samples": 10,
        "chunk_size": 3,
        "shuffle": True,
        "drop_last": True,
        "num_replicas": 3,
        "rank": 1,
        "block_size": None,
    }


def test_state_dict_after_set_epoch_starts_that_epoch():
    s = _sampler(10)
    list(s)
    s.set_epoch(5)
    assert (s.state_dict()["epoch"], s.state_dict(consumed=3)["epoch"]) == (5, 5)


@pytest.mark.parametrize(
    ("consumed", "exc_type", "message"),
    [
        (11, ValueError, "consumed=11 is more than len(sampler)=10, the indices of one epoch on this rank"),
        (-1, ValueError, "consumed must be >= 0 (got consumed=-1)"),
        ("3", TypeError, "consumed must be an int (got '3', a str)"),
    ],
)
def test_bad_consumed_is_an_error(consumed, exc_type, message):
    assert _error(exc_type, lambda: _sampler(10).state_dict(consumed=consumed)) == message
    state = {**_sampler(10).state_dict(), "consumed": consumed}
    assert _error(exc_type, lambda: _sampler(10).load_state_dict(state)) == message


@pytest.mark.parametrize(
    ("key", "saved", "current"),
    [
        ("seed", 1, 0),
        ("num_samples", 11, 10),
        ("chunk_size", 5, 4),
        ("shuffle", False, True),
        ("drop_last", True, False),
        ("num_replicas", 2, 1),
        ("rank", 1, 0),
    ],
)
def test_load_state_dict_with_another_configuration_is_an_error(key, saved, current):
    state = {**_sampler(10).state_dict(), key: saved}
    assert _error(ValueError, lambda: _sampler(10).load_state_dict(state)) == (
        f"cannot resume: the saved state has {key}={saved!r} but this sampler has "
        f"{key}={current!r}; build the sampler with the same arguments as the run "
        f"that saved it"
    )


def test_load_state_dict_of_something_else_is_an_error():
    state = _sampler(10).state_dict()
    del state["consumed"], state["seed"]
    assert _error(ValueError, lambda: _sampler(10).load_state_dict(state)) == (
        "not a ChunkedSampler state: it lacks ['consumed', 'seed']; pass what ChunkedSampler.state_dict() returned"
    )


def test_set_epoch_to_another_epoch_drops_a_loaded_position():
    s = _sampler(10)
    s.load_state_dict(_sampler(10).state_dict(consumed=6))
    s.set_epoch(1)
    assert list(s) == _epoch(10, 1)


# ------------------------------------------------------- DataLoader, pickle


def _loader_order(sampler, n, **kwargs):
    loader = DataLoader(IndexDataset(n), batch_size=4, sampler=sampler, **kwargs)
    return torch.cat(list(loader)).tolist()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_works_as_the_sampler_of_a_dataloader(num_workers):
    s = _sampler(30, chunk_size=8, seed=6)
    got = [_loader_order(s, 30, num_workers=num_workers) for _ in range(2)]
    assert got == [_epoch(30, 0, chunk_size=8, seed=6), _epoch(30, 1, chunk_size=8, seed=6)]


def test_works_with_spawned_dataloader_workers():
    # one worker: the sampler runs in this process; a spawned worker only has to get the
    # dataset by pickle (a second would be another interpreter importing torch)
    s = _sampler(12, chunk_size=5, seed=6)
    got = _loader_order(s, 12, num_workers=1, multiprocessing_context="spawn")
    assert got == _epoch(12, 0, chunk_size=5, seed=6)


def test_resume_a_prefetching_dataloader_from_batches_done():
    n, batch_size = 40, 4
    config = dict(chunk_size=8, seed=3)
    full = _epoch(n, 0, **config) + _epoch(n, 1, **config)
    for stop in (3, 9):  # 9 of 10 batches: the workers have fetched the whole epoch
        s = _sampler(n, **config)
        loader = DataLoader(IndexDataset(n), batch_size=batch_size, sampler=s, num_workers=2)
        done = list(itertools.islice(loader, stop))
        state = s.state_dict(consumed=stop * batch_size)
        del loader
        fresh = _sampler(n, **config)
        fresh.load_state_dict(state)
        rest = [_loader_order(fresh, n, num_workers=2) for _ in range(2)]
        assert torch.cat(done).tolist() + rest[0] + rest[1] == full


def test_pickle_round_trip_gives_the_same_order():
    s = _sampler(50, chunk_size=7, seed=8, num_replicas=2, rank=1)
    for _ in range(3):
        copy = pickle.loads(pickle.dumps(s))
        assert repr(copy) == repr(s)
        assert list(copy) == list(s)
    s.load_state_dict(s.state_dict(consumed=5))
    copy = pickle.loads(pickle.dumps(s))
    assert list(copy) == list(s)


def test_pickle_mid_pass_keeps_the_position():
    s = _sampler(50, chunk_size=7)
    it = iter(s)
    [next(it) for _ in range(12)]
    copy = pickle.loads(pickle.dumps(s))
    assert copy.state_dict() == s.state_dict()
    fresh = _sampler(50, chunk_size=7)
    fresh.load_state_dict(copy.state_dict())
    assert list(fresh) == list(it)


def test_repr_shows_the_configuration():
    s = _sampler(10, chunk_size=3, seed=2, num_replicas=2, rank=1)
    s.set_epoch(4)
    assert repr(s) == (
        "ChunkedSampler(num_samples=10, chunk_size=3, shuffle=True, seed=2, epoch=4, "
        "drop_last=False, num_replicas=2, rank=1, block_size=None)"
    )


def test_chunks_is_empty_when_a_rank_gets_nothing():
    s = _sampler(2, chunk_size=1, num_replicas=3, rank=2, drop_last=True)
    assert (len(s), s.chunks(), list(s)) == (0, [], [])
    assert s.epoch == 1  # an empty pass is still a complete pass


@pytest.mark.parametrize("num_replicas", [1, 2, 3])
@pytest.mark.parametrize(("n", "chunk_size", "block_size"), [(100, 20, 4), (103, 30, 7), (50, 49, 1)])
def test_blocks_make_chunks_of_chunk_size_from_contiguous_blocks(n, chunk_size, block_size, num_replicas):
    seen = []
    for rank in range(num_replicas):
        s = _sampler(n, chunk_size=chunk_size, block_size=block_size, seed=4, num_replicas=num_replicas, rank=rank)
        chunks = s.chunks()
        assert [len(c) for c in chunks[:-1]] == [chunk_size] * (len(chunks) - 1)
        assert list(s) == [int(i) for c in chunks for i in c]
        for chunk in chunks:  # every chunk is made of whole runs of block_size samples
            runs = np.split(np.sort(chunk), np.flatnonzero(np.diff(np.sort(chunk)) != 1) + 1)
            assert len(runs) <= -(-len(chunk) // block_size) + 2
        seen.extend(list(s))
    assert set(seen) == set(range(n))


def test_block_size_must_be_smaller_than_chunk_size():
    with pytest.raises(ValueError) as err:
        _sampler(10, chunk_size=4, block_size=4)
    assert str(err.value) == (
        "block_size must be smaller than chunk_size (got block_size=4, chunk_size=4); "
        "leave it None for chunks of one block"
    )
