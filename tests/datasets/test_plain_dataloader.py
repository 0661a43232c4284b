"""A plain ``DataLoader(ds, batch_size=..., shuffle=...)`` reads each batch in one go.

torch's DataLoader hands ``ds.__getitems__`` a batch's indices; our datasets answer
with one batched read (JPEGs decoded into one buffer, one gather of rows), as views
of that batch, so the DataLoader's collate sees exactly the items ``ds[i]`` gives.
Each test compares with the same DataLoader over a copy of the dataset that has no
``__getitems__`` (torch then fetches ``ds[i]`` one by one), batch for batch.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from helpers import IGNORE_FORK_WARNING
from PIL import Image
from torch.utils.data import DataLoader, Subset, default_collate

from torchloader import PackedDataset, PathDataset, PreloadedDataset, pack
from torchloader._core import shared_batches
from torchloader.datasets import _dataloader

pytestmark = IGNORE_FORK_WARNING

N = 21


def one_by_one(ds):
    """The same dataset read as torch reads one without ``__getitems__``."""
    kind = type(ds)
    plain = type(f"OneByOne{kind.__name__}", (kind,), {"__getitems__": None})
    copy = plain.__new__(plain)
    copy.__dict__.update(ds.__dict__)
    return copy


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain")
    rng = np.random.default_rng(0)
    for i in range(N):
        (root / "src" / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "src" / f"c{i % 3}" / f"{i}.{'jpg' if i % 2 else 'png'}")
    pack(str(root / "src"), str(root / "packed"), num_workers=0, progress=False)
    return root


def make(kind, folder):
    if kind == "path":
        return PathDataset.from_folder(folder / "src")
    if kind == "packed":
        return PackedDataset(folder / "packed")
    x = torch.arange(N * 3 * 4 * 5, dtype=torch.uint8).view(N, 3, 4, 5)
    return PreloadedDataset(x, torch.arange(N) % 3)


def batches(ds, **options):
    loader = DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(7), **options)
    return [tuple(t.clone() for t in batch) for batch in loader]


def same(a, b):
    return len(a) == len(b) and all(
        len(p) == len(q) and all(torch.equal(s, t) and s.dtype == t.dtype for s, t in zip(p, q)) for p, q in zip(a, b)
    )


@pytest.mark.parametrize("kind", ["path", "preloaded", "packed"])
@pytest.mark.parametrize("workers", [0, 2])
def test_a_plain_dataloader_gives_the_batches_of_one_by_one_reads(folder, kind, workers):
    ds = make(kind, folder)
    options = {"num_workers": workers, "multiprocessing_context": "fork" if workers else None}
    got = batches(ds, **options)
    assert same(got, batches(one_by_one(ds), **options))
    assert len(got) == -(-N // 4) and got[0][0].shape[0] == 4


def test_a_plain_dataloader_reads_a_path_dataset_a_batch_at_a_time(folder, monkeypatch):
    ds = make("path", folder)
    runs, singles = [], []
    read_samples_into, getitem = PathDataset.read_samples_into, PathDataset.__getitem__

    def counted_read(self, indices, *args, **kwargs):
        runs.append(len(indices))
        return read_samples_into(self, indices, *args, **kwargs)

    def counted_getitem(self, index):
        if isinstance(index, int):
            singles.append(index)
        return getitem(self, index)

    monkeypatch.setattr(PathDataset, "read_samples_into", counted_read)
    monkeypatch.setattr(PathDataset, "__getitem__", counted_getitem)

    batches(ds)

    assert runs == [3] * 5  # per batch of 4, the first sample fixes the layout and 3 go into the buffer
    assert len(singles) == 6  # one per batch, the first; the last batch (1 sample) is read alone


def test_a_collate_fn_of_your_own_gets_the_items_one_by_one(folder):
    ds = make("path", folder)
    items = next(iter(DataLoader(ds, batch_size=4, collate_fn=list)))
    assert len(items) == 4 and all(isinstance(item, tuple) and len(item) == 2 for item in items)
    for k, (x, y) in enumerate(items):
        want_x, want_y = ds[k]
        assert torch.equal(x, want_x) and x.stride() == want_x.stride() and torch.equal(y, want_y)


def test_images_of_mixed_sizes_reach_a_padding_collate_one_by_one(tmp_path):
    for i, size in enumerate([(6, 5), (6, 5), (4, 7), (6, 5), (3, 3)]):
        (tmp_path / "a").mkdir(exist_ok=True)
        Image.fromarray(np.full((*size, 3), i, np.uint8)).save(tmp_path / "a" / f"{i}.png")
    ds = PathDataset.from_folder(tmp_path)

    shapes = [[tuple(x.shape) for x, _ in items] for items in DataLoader(ds, batch_size=5, collate_fn=list)]

    assert shapes == [[(3, 6, 5), (3, 6, 5), (3, 4, 7), (3, 6, 5), (3, 3, 3)]]
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        next(iter(DataLoader(ds, batch_size=5)))  # the default collate, as without torchloader


def test_a_transform_or_skipping_keeps_the_one_by_one_reads(folder, monkeypatch):
    runs = []
    read_samples_into = PathDataset.read_samples_into
    monkeypatch.setattr(
        PathDataset, "read_samples_into", lambda s, i, *a, **k: runs.append(len(i)) or read_samples_into(s, i, *a, **k)
    )
    flipped = PathDataset.from_folder(folder / "src", transform=lambda x: x.flip(-1))
    skipping = PathDataset.from_folder(folder / "src", on_error="skip")

    assert same(batches(flipped), batches(one_by_one(flipped)))
    assert same(batches(skipping), batches(one_by_one(skipping)))
    assert runs == []


def test_a_subset_of_a_path_dataset_is_read_a_batch_at_a_time(folder):
    ds = make("path", folder)
    part = Subset(ds, list(range(3, N)))
    assert same(batches(part), batches(Subset(one_by_one(ds), list(range(3, N)))))


def test_the_default_collate_hands_on_a_contiguous_batch_without_a_copy():
    ds = PreloadedDataset(torch.arange(40, dtype=torch.float32).view(10, 4), torch.arange(10))
    items = ds.__getitems__([7, 2, 5])

    x, y = default_collate(items)

    assert x.data_ptr() == items[0][0].data_ptr() and y.data_ptr() == items[0][1].data_ptr()  # the batch itself
    assert type(x) is torch.Tensor and x.tolist() == ds.x[[7, 2, 5]].tolist() and y.tolist() == [7, 2, 5]


def test_rows_in_another_order_or_changed_by_a_collate_are_stacked_as_before():
    ds = PreloadedDataset(torch.arange(40, dtype=torch.float32).view(10, 4), torch.arange(10))
    items = ds.__getitems__([7, 2, 5])[::-1]
    x, _ = default_collate(items)
    assert x.tolist() == ds.x[[5, 2, 7]].tolist() and x.data_ptr() != items[0][0].data_ptr()

    square = PreloadedDataset(torch.arange(3 * 2 * 2, dtype=torch.float32).view(3, 2, 2))
    rows = square.__getitems__([0, 1, 2])
    rows[1] = rows[1].t()  # same memory, another view: not the batch's row
    x = default_collate(rows)
    assert torch.equal(x, torch.stack([square[0], square[1].t(), square[2]]))


def test_the_default_collate_hands_on_a_channels_last_batch_as_it_was_read():
    images = torch.arange(4 * 2 * 3 * 3, dtype=torch.uint8).view(4, 2, 3, 3).permute(0, 3, 1, 2)  # channels-last
    ds = PreloadedDataset(images)
    x = default_collate(ds.__getitems__([3, 0]))
    assert torch.equal(x, images[[3, 0]]) and x.stride() == ds[[3, 0]].stride()


def test_through_torchs_fetch_and_default_collate_the_batch_is_ds_of_indices(folder, monkeypatch):
    ds = make("path", folder)
    made = []
    rows = _dataloader.rows
    monkeypatch.setattr(_dataloader, "rows", lambda batch: made.append(len(batch)) or rows(batch))
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    want_x, want_y = ds[[0, 1, 2, 3]]
    assert torch.equal(x, want_x) and x.stride() == want_x.stride() and not x.is_contiguous()  # channels-last
    assert torch.equal(y, want_y) and made == []  # no row was made

    x, _ = next(iter(DataLoader(ds, batch_size=4, collate_fn=lambda items: default_collate(items))))
    assert torch.equal(x, want_x) and x.stride() == want_x.stride() and made == [4, 4]  # rows, put back whole


@pytest.mark.parametrize("kind", ["path", "preloaded", "packed"])
def test_batches_kept_from_workers_never_change(folder, kind, monkeypatch):
    # A worker reuses the shared memory of a batch once the main process lets it go
    # (NOTE [ reused shared batches ]); batches kept, not copied, must stay as read.
    leases = []  # made in this process as lent batches arrive (the workers' reducer is left alone)
    lease = shared_batches._Lease.__init__
    monkeypatch.setattr(shared_batches._Lease, "__init__", lambda self, *args: leases.append(1) or lease(self, *args))
    ds = make(kind, folder)
    loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork", persistent_workers=True)
    want = [tuple(t.clone() for t in batch) for batch in DataLoader(one_by_one(ds), batch_size=2)]
    copies = [tuple(t.clone() for t in batch) for batch in loader]  # each let go at once
    every_other = [batch for k, batch in enumerate(loader) if k % 2 == 0]  # the others let go
    kept = list(loader)  # more batches than a worker has slots: fresh memory past them
    assert same(copies, want) and same(every_other, want[::2]) and same(kept, want)
    assert len(leases) > 2 * shared_batches.MAX_SLOTS  # more than the workers' slots: slots were reused


class CountingMap(dict):
    """``shared_batches._MAPPED`` counting the slots whose memory reached this process."""

    def __init__(self):
        super().__init__()
        self.mapped = 0

    def __setitem__(self, key, value):
        self.mapped += 1
        super().__setitem__(key, value)


@pytest.mark.skipif(not shared_batches._CACHES, reason="every batch carries its storage here")
def test_a_workers_slot_crosses_to_the_main_process_once_and_goes_when_the_worker_does(folder, monkeypatch):
    # Sending shared memory opens a socket connection per storage (NOTE [ reused shared
    # batches ]): a slot's memory is sent once, later batches name it.
    monkeypatch.setattr(shared_batches, "_MAPPED", CountingMap())
    ds = make("preloaded", folder)
    loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork", persistent_workers=True)
    want = [tuple(t.clone() for t in batch) for batch in DataLoader(one_by_one(ds), batch_size=2)]
    try:
        epochs = [[tuple(t.clone() for t in batch) for batch in loader] for _ in range(4)]
    finally:
        loader._iterator._shutdown_workers()
    assert all(same(epoch, want) for epoch in epochs)
    slots = 2 * shared_batches.MAX_SLOTS * 2  # workers x slots x (x, y)
    assert shared_batches._MAPPED.mapped <= slots < 4 * len(want) * 2  # fewer than the storages sent
    with shared_batches._MAPPED_LOCK:
        shared_batches._forget_exited(keep=None)
    assert not shared_batches._MAPPED  # the workers are gone: so are their slots here


def test_a_row_is_a_plain_tensor_to_everything_else():
    ds = PreloadedDataset(torch.arange(12, dtype=torch.float32).view(3, 4))
    row = ds.__getitems__([2, 0])[0]
    assert isinstance(row, torch.Tensor) and row.tolist() == [8.0, 9.0, 10.0, 11.0]
    assert type(row * 2) is torch.Tensor and type(row.clone()) is torch.Tensor
    copy = pickle.loads(pickle.dumps(row))
    assert type(copy) is torch.Tensor and copy.tolist() == row.tolist()
    assert not hasattr(copy, "_batch")  # what a view pickles (its storage), not a second reference


def test_a_spawned_worker_puts_the_batch_back_too(folder):
    # the worker imports torchloader when it unpickles the dataset, and with it the collate entry
    ds = make("packed", folder)
    options = {"num_workers": 1, "multiprocessing_context": "spawn"}
    assert same(batches(ds, **options), batches(one_by_one(ds)))
