"""Tests for torchloader/chunked/_fill.py: reading samples into a chunk buffer (threads)."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
import torch

from torchloader import PathDataset, PreloadedDataset, SampleLoadError
from torchloader._core.layout import SampleLayout
from torchloader.chunked._fill import (
    ChunkFiller,
    check_sample,
    fill_batched,
    fill_slots,
    read_sample,
    storage_runs,
)


class Numbered:
    """Sample ``i`` is ``(full(shape, i), i)``; counts reads; may fail or dawdle."""

    def __init__(self, n, shape=(2, 3), *, fail_at=None, delay=0.0, odd=None):
        self.n, self.shape, self.fail_at, self.delay, self.odd = n, shape, fail_at, delay, odd or {}
        self.reads, self.threads = [], set()
        self.returned = threading.Event()  # set by a test once fill() has returned
        self.late_reads = 0  # reads that started after that

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if self.returned.is_set():
            self.late_reads += 1
        self.reads.append(index)
        self.threads.add(threading.current_thread().name)
        if index == self.fail_at:
            raise KeyError("boom")
        time.sleep(self.delay)
        x = torch.full(self.odd.get(index, self.shape), float(index))
        return x, index


def _filler(ds, workers=0):
    filler = ChunkFiller(ds, workers)
    filler.layout  # noqa: B018 - reads the first sample now, as a ChunkedLoader does when it is built
    return filler


def _buffer(filler, n):
    return filler.layout.allocate(n, pin=False)


def _first(ds):
    return 0, SampleLayout.of(*read_sample(ds, 0))


# --- one sample --------------------------------------------------------------------


def test_read_sample_splits_x_and_y_into_tensors():
    x, y = read_sample(Numbered(3), 2)
    assert torch.equal(x, torch.full((2, 3), 2.0))
    assert y.dtype == torch.int64 and y.item() == 2
    x, y = read_sample(PreloadedDataset(torch.arange(3)), 1)
    assert x.item() == 1 and y is None


def test_read_sample_names_the_index_of_a_failure():
    with pytest.raises(SampleLoadError) as info:
        read_sample(Numbered(5, fail_at=3), 3)
    assert str(info.value) == "could not load sample 3: KeyError: 'boom'"
    assert (info.value.index, info.value.path) == (3, None)
    assert isinstance(info.value.__cause__, KeyError)


def test_read_sample_passes_a_sample_load_error_on_unchanged(tmp_path):
    ds = PathDataset([str(tmp_path / "gone.npy")])
    with pytest.raises(SampleLoadError) as info:
        read_sample(ds, 0)
    assert str(info.value).startswith(f"could not load sample 0 from '{tmp_path / 'gone.npy'}': ")
    assert info.value.path == str(tmp_path / "gone.npy")


_EXPECTED = "x (2, 3) torch.float32, y () torch.int64"
_ADVICE = (
    "; samples must share one shape and dtype to be stacked into one tensor. "
    "Resize or crop them to one size in the dataset's transform"
    " (images: decode=RandomResizedCrop(size) or CenterCrop(size) crops them as they decode)"
)


@pytest.mark.parametrize(
    ("x", "y", "got"),
    [
        (torch.zeros(3, 2), torch.tensor(1), "x (3, 2) torch.float32, y () torch.int64"),
        (torch.zeros(2, 3, dtype=torch.float64), torch.tensor(1), "x (2, 3) torch.float64, y () torch.int64"),
        (torch.zeros(2, 3), torch.tensor([1, 2]), "x (2, 3) torch.float32, y (2,) torch.int64"),
        (torch.zeros(2, 3), None, "x (2, 3) torch.float32"),
    ],
)
def test_a_sample_unlike_the_first_is_refused_naming_both(x, y, got):
    first = (0, SampleLayout.of(torch.zeros(2, 3), torch.tensor(0)))
    with pytest.raises(ValueError) as info:
        check_sample(first, 4, x, y)
    assert str(info.value) == f"sample 4 has {got} but sample 0 has {_EXPECTED}{_ADVICE}"


def test_a_sample_like_the_first_passes():
    first = (0, SampleLayout.of(torch.zeros(2, 3), torch.tensor(0)))
    check_sample(first, 1, torch.ones(2, 3).t().contiguous().t(), torch.tensor(5))  # strides may differ


# --- filling slots ------------------------------------------------------------------


def test_fill_slots_writes_each_sample_into_its_slot():
    ds = Numbered(10)
    buffer = _buffer(_filler(ds), 3)

    fill_slots(ds, _first(ds), buffer, np.array([2, 0, 1]), np.array([5, 7, 9]))

    assert buffer.x[:, 0, 0].tolist() == [7.0, 9.0, 5.0]
    assert buffer.y.tolist() == [7, 9, 5]


def test_fill_slots_checks_every_sample_against_the_first():
    ds = Numbered(10, odd={6: (3, 2)})
    buffer = _buffer(_filler(ds), 3)
    with pytest.raises(ValueError, match=r"^sample 6 has x \(3, 2\) .* but sample 0 has x \(2, 3\)"):
        fill_slots(ds, _first(ds), buffer, np.arange(3), np.array([5, 6, 7]))


def test_fill_slots_reads_nothing_once_stopped():
    ds, stop = Numbered(10), threading.Event()
    first, buffer = _first(ds), _buffer(_filler(ds), 3)
    ds.reads.clear()
    stop.set()
    fill_slots(ds, first, buffer, np.arange(3), np.array([1, 2, 3]), stop)
    assert ds.reads == []


def test_fill_batched_fills_the_first_slots_with_one_gather():
    ds = PreloadedDataset(torch.arange(20).reshape(10, 2), torch.arange(10) * 10)
    filler = _filler(ds)
    buffer = _buffer(filler, 4)

    fill_batched(ds, buffer, np.array([7, 1, 4]))

    assert buffer.x[:3].tolist() == [[14, 15], [2, 3], [8, 9]]
    assert buffer.y[:3].tolist() == [70, 10, 40]
    assert filler.batched


@pytest.mark.parametrize(("n", "parts"), list(itertools.product([0, 1, 5, 17], [1, 2, 3, 8])))
def test_storage_runs_split_the_slots_into_sorted_runs(n, parts):
    indices = np.random.default_rng(n * 10 + parts).permutation(100)[:n]

    runs = storage_runs(indices, parts)

    assert len(runs) == min(parts, n)
    assert sorted(np.concatenate(runs).tolist() if runs else []) == list(range(n))  # every slot once
    assert max((len(r) for r in runs), default=0) - min((len(r) for r in runs), default=0) <= 1
    ordered = np.concatenate([indices[r] for r in runs]) if runs else indices
    assert (np.diff(ordered) > 0).all()  # runs follow the storage order, one after another


# --- ChunkFiller -------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_the_filler_writes_the_samples_of_a_shuffled_chunk(workers):
    ds = Numbered(30)
    filler = _filler(ds, workers)
    indices = np.random.default_rng(0).permutation(np.arange(10, 30))
    buffer = _buffer(filler, 20)

    filler.fill(buffer, indices, threading.Event())
    filler.close()

    assert buffer.x[:, 1, 2].tolist() == indices.astype(float).tolist()
    assert buffer.y.tolist() == indices.tolist()
    assert not filler.batched


def test_filler_threads_are_named_for_the_library():
    ds = Numbered(30)
    filler = _filler(ds, 2)
    filler.fill(_buffer(filler, 20), np.arange(20), threading.Event())
    filler.close()
    worker_threads = ds.threads - {threading.current_thread().name}
    assert worker_threads and all(name.startswith("torchloader-fill") for name in worker_threads)


def test_a_closed_filler_fills_again():
    ds = Numbered(10)
    filler = _filler(ds, 2)
    buffer = _buffer(filler, 4)
    filler.fill(buffer, np.array([1, 2, 3, 4]), threading.Event())
    filler.close()
    filler.fill(buffer, np.array([5, 6, 7, 8]), threading.Event())
    filler.close()
    assert buffer.y.tolist() == [5, 6, 7, 8]
    assert not [t for t in threading.enumerate() if t.name.startswith("torchloader-fill")]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stopped_filler_reads_nothing_more(workers):
    ds, stop = Numbered(10), threading.Event()
    filler = _filler(ds, workers)
    ds.reads.clear()
    stop.set()
    filler.fill(_buffer(filler, 8), np.arange(8), stop)
    filler.close()
    assert ds.reads == []


def test_a_thread_error_is_raised_after_every_thread_has_let_go_of_the_buffer():
    """The other threads stop early, and fill() returns only once they have."""
    ds = Numbered(20, fail_at=1, delay=0.005)
    filler = _filler(ds, 2)
    ds.reads.clear()

    with pytest.raises(SampleLoadError, match=r"^could not load sample 1: KeyError: 'boom'$"):
        filler.fill(_buffer(filler, 20), np.arange(20), threading.Event())
    ds.returned.set()
    filler.close()

    assert ds.late_reads == 0
    assert len(ds.reads) < 20  # the rest of the chunk was dropped, not read


def test_the_layout_comes_from_the_first_sample_read_once():
    ds = Numbered(5, shape=(4,))
    filler = ChunkFiller(ds, 0)
    layout = filler.layout
    assert filler.layout is layout  # taken once
    assert filler.first == (0, layout)
    assert layout.x_shape == (4,) and layout.y_dtype == torch.int64


def test_a_fill_needs_no_call_before_it():
    # the layout is read when first needed: fill() before anything else works
    ds = Numbered(6, shape=(4,))
    buffer = ChunkFiller(ds, 0).layout.allocate(6, pin=False)
    filler = ChunkFiller(ds, 2)
    try:
        assert filler.fill(buffer, np.arange(6)[::-1].copy(), threading.Event()) == []
    finally:
        filler.close()
    assert buffer.x[:, 0].tolist() == [5, 4, 3, 2, 1, 0]
