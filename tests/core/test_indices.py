"""Tests for torchloader/_core/indices.py: one rule, one text, for every dataset's indices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from torchloader import PackedDataset, PathDataset, PreloadedDataset, pack
from torchloader._core.indices import as_index_array, check_index, is_batch

N = 4


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("indices")
    for i in range(N):  # classes a, a, b, b: labels 0, 0, 1, 1
        (root / "src" / "ab"[i // 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 5, 3), i, np.uint8)).save(root / "src" / "ab"[i // 2] / f"{i}.png")
    pack(str(root / "src"), str(root / "packed"), num_workers=0, progress=False)
    return {
        "path": PathDataset.from_folder(root / "src"),
        "preloaded": PreloadedDataset(torch.zeros(N, 3, 4, 5, dtype=torch.uint8), torch.tensor([0, 0, 1, 1])),
        "packed": PackedDataset(root / "packed"),
    }


BAD_BATCHES = [
    (
        [0.5, 1.7],
        TypeError,
        "a batch of indices must be a one-dimensional sequence of integers (got float64 with shape (2,))",
    ),
    (
        np.zeros((2, 2), np.int64),
        TypeError,
        "a batch of indices must be a one-dimensional sequence of integers (got int64 with shape (2, 2))",
    ),
    ([0, N], IndexError, f"index {N} is out of range for {N} samples"),
    ([-N - 1], IndexError, f"index {-N - 1} is out of range for {N} samples"),
]


@pytest.mark.parametrize("kind", ["path", "preloaded", "packed"])
@pytest.mark.parametrize(("batch", "error", "message"), BAD_BATCHES)
def test_every_dataset_refuses_a_bad_batch_with_one_text(datasets, kind, batch, error, message):
    with pytest.raises(error) as info:
        datasets[kind][batch]
    assert str(info.value) == message


@pytest.mark.parametrize("kind", ["preloaded", "packed"])
@pytest.mark.parametrize(("batch", "error", "message"), BAD_BATCHES)
def test_gather_refuses_a_bad_batch_with_the_same_text(datasets, kind, batch, error, message):
    with pytest.raises(error) as info:
        datasets[kind].gather(batch)
    assert str(info.value) == message


@pytest.mark.parametrize("kind", ["path", "preloaded", "packed"])
def test_a_single_index_that_is_not_an_integer_is_a_type_error(datasets, kind):
    with pytest.raises(TypeError) as info:
        datasets[kind][1.5]
    assert str(info.value) == "index must be an integer (got float); for a batch pass a list or array of indices"


@pytest.mark.parametrize("kind", ["path", "preloaded", "packed"])
@pytest.mark.parametrize("index", [N, -N - 1])
def test_a_single_index_out_of_range_is_named_the_same_way(datasets, kind, index):
    with pytest.raises(IndexError) as info:
        datasets[kind][index]
    assert str(info.value) == f"index {index} is out of range for {N} samples"


def test_negative_indices_count_from_the_end_in_every_dataset(datasets):
    for ds in datasets.values():
        x, y = ds[[-1, 0]]
        assert y.tolist() == [1, 0] and x.shape == (2, 3, 4, 5)


def test_the_helpers():
    assert check_index(-1, 3) == 2
    assert as_index_array(slice(1, None), 3).tolist() == [1, 2]
    assert as_index_array(torch.tensor([2, -3]), 3).tolist() == [2, 0]
    assert as_index_array([], 3).dtype == np.int64
    assert is_batch([1]) and is_batch(np.arange(2)) and not is_batch(1) and not is_batch(np.int64(1))
