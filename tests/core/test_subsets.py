"""Tests for torchloader/_core/subsets.py: a loader reads a plain ``Subset`` through to its dataset.

The reference is always the subset itself, read as torch's DataLoader reads it:
what ``ChunkedLoader(subset)`` yields must equal ``DataLoader(subset, sampler=loader.sampler)``,
value for value, however the subset is built.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from torchloader import ChunkedLoader, PackedDataset, PreloadedDataset, pack
from torchloader._core.subsets import ReadThrough

N = 20


def base():
    """Sample i: x full of i, y = 100 + i."""
    return PreloadedDataset(torch.arange(N).repeat_interleave(3).view(N, 3), torch.arange(N) + 100)


def batches(loader):
    return [(x.tolist(), y.tolist()) for x, y in loader]


def reference(loader, dataset):
    plain = DataLoader(dataset, batch_size=loader.batch_size, sampler=loader.sampler, drop_last=loader.drop_last)
    return batches(plain)


def check(dataset, **options):
    loader = ChunkedLoader(dataset, 3, chunk_size=5, seed=1, **options)
    try:
        expected = reference(loader, dataset)
        loader.sampler.set_epoch(0)  # the reference's pass moved the sampler on
        loader.set_epoch(0)
        assert batches(loader) == expected
    finally:
        loader.close()
    return loader


@pytest.mark.parametrize(
    "indices",
    [list(range(5, 15)), range(3, 17, 2), torch.tensor([4, 2, 19, 0]), np.array([7, 7, 1]), [-1, 0, -20, 5]],
    ids=["list", "range", "tensor", "array with repeats", "negative"],
)
@pytest.mark.parametrize("workers", [(0, "thread"), (2, "thread"), (2, "process")], ids=["0", "threads", "processes"])
def test_a_subset_yields_what_the_subset_itself_does(indices, workers):
    loader = check(Subset(base(), indices), num_workers=workers[0], worker_type=workers[1])
    assert loader.filler.dataset is not loader.dataset  # looked through, to the PreloadedDataset


def test_nested_subsets_are_looked_through_to_the_innermost_dataset():
    ds = base()
    nested = Subset(Subset(Subset(ds, list(range(2, 18))), [15, 0, 3, 3, 9, -1]), [5, 1, 2])
    through = ReadThrough(nested)
    assert through.dataset is ds and through.inner_indices(np.arange(3)).tolist() == [17, 2, 5]
    check(nested)


class _TransformedSplit(Subset):
    """A split with its own transform: its own __getitem__ must be used."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x + 1000, y

    def __getitems__(self, indices):
        return [self[i] for i in indices]


def test_a_subset_subclass_with_its_own_getitem_is_read_through_that():
    split = _TransformedSplit(base(), [0, 1, 2, 3, 4, 5])
    loader = check(split)
    assert ReadThrough(split).dataset is split and loader.filler.dataset is split
    assert batches(loader)[0][0][0][0] >= 1000


def test_indices_that_are_not_integers_are_left_to_the_subset_to_refuse():
    floats = Subset(base(), np.linspace(0, 19, 4))
    assert ReadThrough(floats).dataset is floats
    with pytest.raises(Exception, match="index|indices|integer"):
        list(ChunkedLoader(floats, 2, chunk_size=4, shuffle=False))


def test_the_subset_s_indices_are_taken_when_the_loader_is_made():
    split = Subset(base(), list(range(8)))
    loader = ChunkedLoader(split, 4, chunk_size=8, shuffle=False)
    split.indices = list(range(10, 18))  # as worker processes would, the loader keeps its copy
    assert [y for _, y in batches(loader)] == [[100, 101, 102, 103], [104, 105, 106, 107]]
    fresh = ChunkedLoader(split, 4, chunk_size=8, shuffle=False)
    assert [y for _, y in batches(fresh)] == [[110, 111, 112, 113], [114, 115, 116, 117]]


def test_a_shape_error_says_whose_sample_numbers_it_gives(tmp_path):
    from torchloader import PathDataset

    paths = []
    for i in range(6):
        np.save(tmp_path / f"{i}.npy", np.zeros((3 if i != 4 else 2,), np.int32))
        paths.append(str(tmp_path / f"{i}.npy"))
    split = Subset(PathDataset(paths), [1, 4, 5])
    with pytest.raises(
        ValueError, match=r"sample 4 has .* \(sample numbers are those of the PathDataset the Subset wraps\)"
    ):
        list(ChunkedLoader(split, 3, chunk_size=3, shuffle=False))


def test_shuffle_quality_of_a_subset_uses_the_wrapped_dataset_s_labels():
    import math
    from collections import Counter

    ds = PreloadedDataset(torch.zeros(400, 2), torch.arange(400) % 10)  # classes interleaved in storage
    # every other sample of each class, class by class: the subset is sorted by class (20 each)
    split = Subset(ds, [i for c in range(10) for i in range(c, 400, 10)][::2])
    # a chunk of 20 subset positions is one class of the wrapped labels; the positions read
    # as indices of ds would give every batch all ten classes (about 1.0), no labels None
    assert ChunkedLoader(split, 20, chunk_size=20).shuffle_quality(0).label_entropy == 0.0

    def entropy(order):  # mean Shannon entropy (bits) of the labels of each batch of 20
        labels = ds.y.numpy()[order].reshape(-1, 20)
        return sum(-sum(k / 20 * math.log2(k / 20) for k in Counter(b.tolist()).values()) for b in labels) / len(labels)

    loader = ChunkedLoader(split, 20, chunk_size=40)  # two classes a chunk: in between
    order = np.asarray(split.indices)[loader.sampler.order_of(0)[0]]
    expected = entropy(order) / entropy(np.random.default_rng(0).permutation(order))  # vs a full shuffle
    assert 0.1 < expected < 0.6
    assert loader.shuffle_quality(0).label_entropy == pytest.approx(expected, rel=1e-12)


@pytest.fixture
def packed(tmp_path):
    for i in range(N):
        (tmp_path / "src" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "src" / f"c{i % 2}" / f"{i:02d}.npy", np.full((2, 2), i, np.uint8))
    pack(str(tmp_path / "src"), str(tmp_path / "packed"), num_workers=0, progress=False)
    return tmp_path / "packed"


@pytest.mark.parametrize("as_subset", [False, True], ids=["dataset", "subset"])
def test_a_packed_dataset_s_transform_is_applied_by_the_chunked_loader(packed, as_subset):
    ds = PackedDataset(packed, transform=lambda x: x.float() / 255)
    dataset = Subset(ds, list(range(0, N, 2))) if as_subset else ds
    loader = ChunkedLoader(dataset, 4, chunk_size=8, shuffle=False)
    xs = torch.cat([x for x, _ in loader])
    assert xs.dtype == torch.float32 and float(xs.max()) <= 1.0
    assert torch.equal(xs, torch.stack([dataset[i][0] for i in range(len(dataset))]))
    assert not loader.filler.batched  # per sample, as ds[i] applies the transform


def test_a_packed_dataset_without_a_transform_is_still_read_by_gather(packed):
    loader = ChunkedLoader(Subset(PackedDataset(packed), [3, 1, 2]), 2, chunk_size=3, shuffle=False)
    assert loader.filler.batched
    check(Subset(PackedDataset(packed), [3, 1, 2, 19, -2]))
