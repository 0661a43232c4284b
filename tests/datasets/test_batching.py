"""Tests for torchloader/datasets/batching.py: IndexBatchSampler, batches of indices as arrays."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, SubsetRandomSampler

from torchloader.datasets.batching import IndexBatchSampler
from torchloader.order import sampler as sampler_module
from torchloader.order.sampler import ChunkedSampler


class GatherDataset(torch.utils.data.Dataset):
    """``x[i] = (i, 2i)``, ``y[i] = i``; ``__getitem__`` takes an index array.

    At module level so that spawned DataLoader workers could import it.
    """

    def __init__(self, n: int) -> None:
        self.x = torch.arange(n).repeat_interleave(2).view(n, 2) * torch.tensor([1, 2])
        self.y = torch.arange(n)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        assert isinstance(index, np.ndarray) and index.dtype == np.int64
        index = torch.from_numpy(index)
        return self.x[index], self.y[index]


def _batches(n_batches, batch_size, drop_last):
    return n_batches // batch_size if drop_last else -(-n_batches // batch_size)


def _chunked(n, **kwargs):
    kwargs.setdefault("chunk_size", 8)
    return ChunkedSampler(range(n), **kwargs)


def _epoch(n, epoch, **kwargs):
    s = _chunked(n, **kwargs)
    s.set_epoch(epoch)
    return list(s)


def check_batches(batches, order, batch_size, drop_last):
    """The batches are ``order`` cut into ``batch_size`` pieces, as int64 arrays."""
    expected = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    if drop_last and expected and len(expected[-1]) < batch_size:
        expected.pop()
    assert [b.tolist() for b in batches] == [list(e) for e in expected]
    for batch in batches:
        assert isinstance(batch, np.ndarray)
        assert batch.dtype == np.int64 and batch.ndim == 1
        assert batch.flags.owndata  # a copy, never a view of the sampler's order


SAMPLERS = {
    "range": lambda n: range(n),
    "list": lambda n: list(range(n))[::-1],
    "sequential": lambda n: SequentialSampler(range(n)),
    "chunked": lambda n: _chunked(n, chunk_size=5, seed=2),
    "chunked-rank": lambda n: _chunked(n, chunk_size=3, num_replicas=3, rank=2),
    "chunked-no-shuffle": lambda n: _chunked(n, shuffle=False),
}


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
@pytest.mark.parametrize("n", [1, 5, 16, 17, 40])
def test_batches_cover_the_samplers_order_exactly(kind, n):
    for batch_size, drop_last in itertools.product([1, 3, 4, 16, 64], [False, True]):
        source = SAMPLERS[kind](n)
        order = list(SAMPLERS[kind](n))  # the same order: a fresh sampler, same epoch
        batches = list(IndexBatchSampler(source, batch_size, drop_last=drop_last))
        check_batches(batches, order, batch_size, drop_last)
        assert len(IndexBatchSampler(source, batch_size, drop_last=drop_last)) == len(batches)
        assert len(batches) == _batches(len(order), batch_size, drop_last)


def test_random_sampler_batches_follow_its_generator():
    def random_sampler():
        return RandomSampler(range(30), generator=torch.Generator().manual_seed(5))

    batches = list(IndexBatchSampler(random_sampler(), 7))
    check_batches(batches, list(random_sampler()), 7, drop_last=False)


def test_samplers_that_yield_tensors_work():
    def subset():
        return SubsetRandomSampler(torch.arange(10, 30), generator=torch.Generator().manual_seed(1))

    batches = list(IndexBatchSampler(subset(), 4))
    check_batches(batches, [int(i) for i in subset()], 4, drop_last=False)


def test_plain_iterators_work_but_have_no_len():
    batches = list(IndexBatchSampler(iter(range(10)), 4))
    check_batches(batches, list(range(10)), 4, drop_last=False)
    with pytest.raises(TypeError) as info:
        len(IndexBatchSampler(iter(range(10)), 4))
    assert str(info.value) == "the wrapped sampler has no len()"


def test_chunked_sampler_hands_over_slices(monkeypatch):
    def no_single_indices(self):
        raise AssertionError("IndexBatchSampler must use take(), not next()")

    expected = _epoch(20, 0, seed=1)
    monkeypatch.setattr(sampler_module.EpochIterator, "__next__", no_single_indices)
    s = _chunked(20, seed=1)
    batches = list(IndexBatchSampler(s, 6))
    check_batches(batches, expected, 6, drop_last=False)
    assert s.epoch == 1  # a pass through take() completes the epoch too


class _TakeSampler:
    """An iterable whose iterator offers ``take``: recorded to show it is used."""

    def __init__(self, n):
        self.n, self.calls = n, []

    def __len__(self):
        return self.n

    def __iter__(self):
        order, owner = np.arange(self.n)[::-1], self

        class _It:
            position = 0

            def __iter__(self):
                return self

            def __next__(self):
                raise AssertionError("next() called")

            def take(self, count):
                owner.calls.append(count)
                out = order[self.position : self.position + count]
                self.position += len(out)
                return out

        return _It()


def test_any_iterator_with_take_gets_the_fast_path():
    source = _TakeSampler(10)
    batches = list(IndexBatchSampler(source, 4))
    check_batches(batches, list(range(10))[::-1], 4, drop_last=False)
    assert source.calls == [4, 4, 4, 4]  # the last call finds the end


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_must_be_at_least_one(batch_size):
    with pytest.raises(ValueError) as info:
        IndexBatchSampler(range(4), batch_size)
    assert str(info.value) == f"batch_size must be >= 1 (got batch_size={batch_size})"


@pytest.mark.parametrize("batch_size", [2.5, True, "4", None, np.float32(2)])
def test_batch_size_must_be_an_int(batch_size):
    with pytest.raises(TypeError) as info:
        IndexBatchSampler(range(4), batch_size)
    assert str(info.value) == f"batch_size must be an int (got {batch_size!r}, a {type(batch_size).__name__})"


def test_set_epoch_is_forwarded():
    s = _chunked(30, seed=3)
    batches = IndexBatchSampler(s, 4)
    batches.set_epoch(5)
    assert s.epoch == 5
    assert np.concatenate(list(batches)).tolist() == _epoch(30, 5, seed=3)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("n", "chunk_size", "batch_size"), [(30, 8, 4), (30, 30, 7), (9, 2, 4)])
def test_epochs_advance_through_the_batch_sampler(n, chunk_size, batch_size, drop_last):
    s = _chunked(n, chunk_size=chunk_size, seed=9)
    batches = IndexBatchSampler(s, batch_size, drop_last=drop_last)
    passes = [list(batches) for _ in range(4)]
    for epoch, got in enumerate(passes):
        check_batches(got, _epoch(n, epoch, chunk_size=chunk_size, seed=9), batch_size, drop_last)
    assert len({np.concatenate(p).tobytes() for p in passes}) == 4
    assert s.epoch == 4


def test_resume_through_the_batch_sampler():
    config = dict(chunk_size=8, seed=4)
    full = list(IndexBatchSampler(_chunked(40, **config), 6))
    s = _chunked(40, **config)
    head = list(itertools.islice(IndexBatchSampler(s, 6), 3))
    state = s.state_dict()
    assert state["consumed"] == 18
    fresh = _chunked(40, **config)
    fresh.load_state_dict(state)
    rest = list(IndexBatchSampler(fresh, 6))
    assert [b.tolist() for b in head + rest] == [b.tolist() for b in full]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_serves_gathered_batches(num_workers):
    n, batch_size = 50, 8
    s = _chunked(n, chunk_size=16, seed=1)
    loader = DataLoader(
        GatherDataset(n),
        batch_size=None,
        sampler=IndexBatchSampler(s, batch_size),
        num_workers=num_workers,
    )
    for epoch in range(2):
        got = list(loader)
        assert [len(y) for _, y in got] == [8] * 6 + [2]
        for x, y in got:
            assert torch.equal(x, torch.stack([y, 2 * y], dim=1))
        assert torch.cat([y for _, y in got]).tolist() == _epoch(n, epoch, chunk_size=16, seed=1)
    assert len(loader) == 7


@pytest.mark.parametrize("kind", ["range", "chunked", "chunked-rank"])
def test_pickle_round_trip_gives_the_same_batches(kind):
    batches = IndexBatchSampler(SAMPLERS[kind](23), 4, drop_last=True)
    for _ in range(2):
        copy = pickle.loads(pickle.dumps(batches))
        assert repr(copy) == repr(batches)
        assert [b.tolist() for b in copy] == [b.tolist() for b in batches]


def test_repr_shows_the_configuration():
    assert repr(IndexBatchSampler(range(5), 2, drop_last=True)) == (
        "IndexBatchSampler(range(0, 5), batch_size=2, drop_last=True)"
    )


# --- shuffled_batches under torch.distributed ------------------------------------------


def _as_rank(monkeypatch, rank, world):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: world)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: rank)


def test_ranks_get_a_new_random_share_of_the_full_shuffle_every_epoch(monkeypatch):
    from torchloader.datasets.batching import shuffled_batches

    shares = {}
    for rank in range(2):
        _as_rank(monkeypatch, rank, 2)
        batches = shuffled_batches(range(40), 8, shuffle=True, seed=3, drop_last=False)
        for epoch in range(3):
            batches.set_epoch(epoch)
            shares[rank, epoch] = sorted(np.concatenate(list(batches)).tolist())
    for epoch in range(3):
        assert not set(shares[0, epoch]) & set(shares[1, epoch])  # disjoint
        assert sorted(shares[0, epoch] + shares[1, epoch]) == list(range(40))  # covering
    assert len({tuple(shares[0, e]) for e in range(3)}) == 3  # a new share each epoch
    assert shares[0, 0] != list(range(20))  # not the first half of the data set


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_dataloader_workers_freeze_the_gc_then_run_the_users_init():
    from torchloader import PreloadedDataset
    from torchloader.datasets._dataloader import FreezeGC

    loader = PreloadedDataset(torch.arange(10)).dataloader(
        5, num_workers=1, worker_init_fn=_record_init, multiprocessing_context="spawn"
    )
    assert isinstance(loader.worker_init_fn, FreezeGC) and loader.worker_init_fn.then is _record_init
    assert sum(len(b) for b in loader) == 10
    assert PreloadedDataset(torch.arange(3)).dataloader(2).worker_init_fn is None  # no workers


def _record_init(worker_id):
    import gc

    assert gc.get_freeze_count() > 0  # frozen before the user's init runs


def test_batch_indices_keep_their_seed_and_epoch_across_pickling():
    import pickle

    from torchloader.datasets._dataloader import WholeBatchWithErrors
    from torchloader.datasets.batching import EpochIndices

    array = pickle.loads(pickle.dumps(EpochIndices.copy_of([3, 1, 2], 7, 4)))
    assert (type(array), array.tolist(), array.seed, array.epoch) == (EpochIndices, [3, 1, 2], 7, 4)
    assert array[1:].epoch == 4  # views keep them too
    batch = pickle.loads(pickle.dumps(WholeBatchWithErrors([1, 2], 3, 5)))
    assert (type(batch), list(batch), batch.seed, batch.epoch) == (WholeBatchWithErrors, [1, 2], 3, 5)
