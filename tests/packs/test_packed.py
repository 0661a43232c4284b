"""Tests for torchloader/packs/dataset.py: PackedDataset over a packed directory."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from helpers import IGNORE_FORK_WARNING, china, deadline
from PIL import Image
from torch.utils.data import DataLoader

from torchloader import ChunkedLoader, ChunkedSampler, PackedDataset, pack

N, H, W = 23, 6, 5  # 23 images in shards of 4: the last shard is short
SHARDS = [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 23)]


@pytest.fixture(scope="module")
def packed_root(tmp_path_factory):
    """An image pack of three classes, written once for this module (read-only)."""
    root = tmp_path_factory.mktemp("packed")
    for i in range(N):
        path = root / "src" / ("a", "b", "c")[i * 3 // N] / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(china()[7 * i : 7 * i + H, 9 * i : 9 * i + W]).save(path)
    pack(str(root / "src"), str(root / "dst"), shard_bytes=4 * H * W * 3, num_workers=0, progress=False)
    return root / "dst"


@pytest.fixture
def ds(packed_root):
    return PackedDataset(packed_root)


@pytest.fixture
def damaged(packed_root, tmp_path):
    """A copy of the pack that a test may break."""
    shutil.copytree(packed_root, tmp_path / "copy")
    return tmp_path / "copy"


def stored(root):
    """Every stored sample (H x W x C) and label, read with NumPy alone."""
    shards = [np.load(root / f"shard-{k:05d}.npy", allow_pickle=False) for k in range(len(SHARDS))]
    return np.concatenate(shards), np.load(root / "labels.npy", allow_pickle=False)


def stack(ds, indices):
    xs, ys = zip(*(ds[int(i)] for i in indices))
    return torch.stack(xs), torch.stack(ys)


# --- what a pack reads as ------------------------------------------------------------


def test_length_classes_labels_and_sample_size(ds):
    assert len(ds) == N
    assert ds.classes == ["a", "b", "c"]
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 7
    assert ds.sample_nbytes == H * W * 3 + 8
    assert [(s.start, s.stop) for s in ds.manifest.shards] == SHARDS


def test_items_are_chw_uint8_views_of_the_stored_pixels_with_int64_labels(ds, packed_root):
    pixels, labels = stored(packed_root)
    for i in range(N):
        x, y = ds[i]
        assert x.shape == (3, H, W) and x.dtype == torch.uint8
        assert np.array_equal(x.permute(1, 2, 0).numpy(), pixels[i])
        assert y.shape == () and y.dtype == torch.int64 and int(y) == labels[i]


def test_negative_and_numpy_indices_work_like_a_sequence(ds):
    assert torch.equal(ds[-1][0], ds[N - 1][0])
    assert torch.equal(ds[np.int64(5)][0], ds[5][0])


@pytest.mark.parametrize("index", [N, -N - 1, 1000])
def test_an_index_out_of_range_is_an_index_error(ds, index):
    with pytest.raises(IndexError) as err:
        ds[index]
    assert str(err.value) == f"index {index} is out of range for {N} samples"


def test_an_index_that_is_not_an_integer_is_a_type_error(ds):
    with pytest.raises(TypeError) as err:
        ds[1.5]
    assert str(err.value) == "index must be an integer (got float); for a batch pass a list or array of indices"


def test_an_item_is_a_copy_not_the_memory_map(ds):
    x, _ = ds[3]
    before = ds[3][0].clone()
    x.fill_(0)  # writable, and writing it changes nothing on disk or in the map
    assert torch.equal(ds[3][0], before)


def test_transform_and_target_transform_apply_to_items_not_to_gather(packed_root):
    ds = PackedDataset(packed_root, transform=lambda x: x.float() / 255, target_transform=lambda y: y + 10)

    x, y = ds[9]
    xb, yb = ds.gather([9])

    assert x.dtype == torch.float32 and int(y) == 11
    assert xb.dtype == torch.uint8 and yb.tolist() == [1]


def test_repr_shows_the_configuration(ds, packed_root):
    assert repr(ds) == f"PackedDataset({str(packed_root)!r}, n=23, shape=(6, 5, 3), dtype=|u1, shards=6, classes=3)"


# --- gather: one batch equal to stacking items ---------------------------------------------


@pytest.mark.parametrize(
    "indices",
    [
        np.random.default_rng(0).permutation(N)[:10],  # random
        np.random.default_rng(1).integers(0, N, 30),  # random, with repeats
        [1, 2, 5, 9, 13, 22],  # sorted, one or two per shard
        [4, 5, 6, 7],  # one whole shard
        [9, 10],  # a run inside a shard
        [2, 3, 4, 5, 6, 7, 8, 9],  # a run across shard boundaries
        [0, 0, 2],  # repeats spanning as many rows as a run
        [6, 5, 5, 4, 7],  # repeats in one shard, out of order
        [22, 0, 22, 0],
        [3],
        list(range(N))[::-1],
        [-1, -23, 5],  # negative indices count from the end
    ],
)
def test_gather_equals_stacking_items(ds, indices):
    x, y = ds.gather(indices)
    want_x, want_y = stack(ds, indices)
    assert x.dtype == torch.uint8 and x.shape == (len(indices), 3, H, W)
    assert torch.equal(x, want_x) and torch.equal(y, want_y)


@pytest.mark.parametrize("kind", [list, np.array, torch.tensor, lambda v: np.array(v, dtype=np.int32)])
def test_gather_takes_lists_arrays_and_tensors(ds, kind):
    x, y = ds.gather(kind([7, 3, 20]))
    assert torch.equal(x, stack(ds, [7, 3, 20])[0]) and y.tolist() == [0, 0, 2]


def test_gather_of_nothing_is_an_empty_batch(ds):
    x, y = ds.gather([])
    assert x.shape == (0, 3, H, W) and y.shape == (0,)


@pytest.mark.parametrize("indices, bad", [([0, N], N), ([5, -N - 1], -N - 1), ([1000], 1000)])
def test_gather_out_of_range_is_an_index_error_not_garbage(ds, indices, bad):
    with pytest.raises(IndexError) as err:
        ds.gather(indices)
    assert str(err.value) == f"index {bad} is out of range for {N} samples"


@pytest.mark.parametrize(
    "indices, got",
    [([[1, 2]], "int64 with shape (1, 2)"), ([1.0, 2.0], "float64 with shape (2,)"), (3, "int64 with shape ()")],
)
def test_gather_needs_a_flat_list_of_integers(ds, indices, got):
    with pytest.raises(TypeError) as err:
        ds.gather(indices)
    assert str(err.value) == f"a batch of indices must be a one-dimensional sequence of integers (got {got})"


def test_unlabelled_arrays_read_back_as_x_alone(tmp_path):
    (tmp_path / "src").mkdir()
    arrays = [np.full((2, 2), i, dtype=np.float32) for i in range(5)]
    for i, array in enumerate(arrays):
        np.save(tmp_path / "src" / f"{i}.npy", array)
    pack(str(tmp_path / "src"), str(tmp_path / "dst"), shard_bytes=32, num_workers=0, progress=False)

    ds = PackedDataset(tmp_path / "dst")

    assert ds.labels is None and ds.classes is None and ds.sample_nbytes == 16
    assert torch.equal(ds[3], torch.from_numpy(arrays[3]))  # stored as-is, no C x H x W turn
    assert torch.equal(ds.gather([4, 0]), torch.from_numpy(np.stack([arrays[4], arrays[0]])))
    assert "classes=0" in repr(ds)


# --- pickling and loaders ---------------------------------------------------------------


def test_construction_maps_no_shard(damaged):
    ds = PackedDataset(damaged)  # checks the files, maps none
    assert ds._shards is None
    for name in os.listdir(damaged):
        if name.endswith(".npy"):
            os.remove(damaged / name)
    assert len(ds) == N and ds.classes == ["a", "b", "c"]
    with pytest.raises(ValueError, match="cannot open"):
        ds[0]


def test_a_pickled_copy_maps_the_files_itself(ds):
    before = ds[5]
    assert ds.labels is not None  # the maps are open in the original

    state = ds.__getstate__()
    copy = pickle.loads(pickle.dumps(ds))

    assert state["_shards"] is None and state["_labels"] is None
    assert len(pickle.dumps(ds)) < 2000  # the maps are not pickled
    assert torch.equal(copy[5][0], before[0]) and torch.equal(copy[5][1], before[1])
    assert torch.equal(ds.gather([1, 2])[0], copy.gather([1, 2])[0])


@IGNORE_FORK_WARNING
def test_a_dataloader_with_two_workers_gives_the_same_batches(ds):
    with deadline(60):
        batches = list(DataLoader(ds, batch_size=5, num_workers=2))
    for k, (x, y) in enumerate(batches):
        want_x, want_y = ds.gather(np.arange(5 * k, min(5 * k + 5, N)))
        assert torch.equal(x, want_x) and torch.equal(y, want_y)
    assert sum(len(y) for _, y in batches) == N


class CountingPacked(PackedDataset):
    gathers = items = 0

    def gather(self, indices):
        type(self).gathers += 1
        return super().gather(indices)

    def gather_into(self, indices, out):
        type(self).gathers += 1
        return super().gather_into(indices, out)

    def __getitem__(self, index):
        type(self).items += 1
        return super().__getitem__(index)


@pytest.mark.parametrize("num_workers, worker_type", [(0, "thread"), (2, "thread"), (2, "process")])
def test_chunked_loader_gathers_chunks_like_a_dataloader_with_chunked_sampler(packed_root, num_workers, worker_type):
    ds = CountingPacked(packed_root)
    loader = ChunkedLoader(ds, 4, chunk_size=7, seed=3, num_workers=num_workers, worker_type=worker_type)
    CountingPacked.gathers = CountingPacked.items = 0
    sampler = ChunkedSampler(ds, chunk_size=7, seed=3)
    reference = DataLoader(ds, batch_size=4, sampler=sampler)

    try:
        with deadline(60):
            got = [[(x.clone(), y.clone()) for x, y in loader] for _ in range(2)]
    finally:
        loader.close()
    assert CountingPacked.items == 0  # no sample read one by one
    assert CountingPacked.gathers >= 2 * 4  # 4 chunks an epoch, each one gather
    want = [list(reference) for _ in range(2)]

    for epoch_got, epoch_want in zip(got, want):
        assert len(epoch_got) == len(epoch_want) == 6
        for (x, y), (want_x, want_y) in zip(epoch_got, epoch_want):
            assert torch.equal(x, want_x) and torch.equal(y, want_y)
    # each epoch holds every sample once, in another order than the last
    every = sorted(bytes(row) for row in ds.gather(np.arange(N))[0].flatten(1).numpy())
    epochs = [torch.cat([x for x, _ in epoch]).flatten(1).numpy() for epoch in got]
    assert all(sorted(bytes(row) for row in epoch) == every for epoch in epochs)
    assert not np.array_equal(epochs[0], epochs[1])


# --- a missing, interrupted, foreign or damaged directory ----------------------------------


def test_a_missing_directory_names_the_command_that_makes_it(tmp_path):
    root = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        PackedDataset(root)
    assert str(err.value) == f"'{root}' is not a folder; pack a data set there with `torchloader pack SRC '{root}'`"


def test_a_directory_without_manifest_is_an_unfinished_pack(damaged):
    os.remove(damaged / "manifest.json")
    with pytest.raises(FileNotFoundError) as err:
        PackedDataset(damaged)
    assert str(err.value) == (
        f"'{damaged}' has no manifest.json: it is not a packed data set, or its pack was "
        f"interrupted; run `torchloader pack SRC '{damaged}'` (again) to complete it"
    )


def edit_manifest(root, **changes):
    raw = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**raw, **changes}))


def test_a_manifest_of_another_format_is_refused(damaged):
    edit_manifest(damaged, format="other.format")
    with pytest.raises(ValueError) as err:
        PackedDataset(damaged)
    assert str(err.value) == f"'{damaged / 'manifest.json'}' is not a torchloader pack manifest (format='other.format')"


def test_a_manifest_of_another_version_names_both_fixes(damaged):
    edit_manifest(damaged, version=3)
    with pytest.raises(ValueError) as err:
        PackedDataset(damaged)
    assert str(err.value) == (
        f"'{damaged / 'manifest.json'}' is pack format version 3; this torchloader reads versions 1 and 2: "
        f"re-pack with `torchloader pack --overwrite` or install the torchloader that wrote it"
    )


def test_a_truncated_shard_names_the_file_and_the_fix(damaged):
    path = damaged / "shard-00002.npy"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-7])

    with pytest.raises(ValueError) as err:
        PackedDataset(damaged)  # sizes are checked at open
    assert str(err.value) == (
        f"'{path}' is {size - 7} bytes, its header and the manifest need {size} (truncated?): "
        f"the packed directory '{damaged}' is damaged; `torchloader verify {damaged}` lists "
        f"what differs, and `torchloader pack SRC {damaged} --overwrite` rebuilds it"
    )


def test_a_shard_of_another_shape_names_the_file_and_the_fix(damaged):
    path = damaged / "shard-00001.npy"
    np.save(path, np.zeros((3, H, W, 3), np.uint8))

    with pytest.raises(ValueError) as err:
        PackedDataset(damaged)
    assert str(err.value).startswith(
        f"'{path}' holds uint8 (3, 6, 5, 3), the manifest says uint8 (4, 6, 5, 3): "
        f"the packed directory '{damaged}' is damaged;"
    )


def test_labels_of_another_dtype_are_refused(damaged):
    np.save(damaged / "labels.npy", np.zeros(N, np.float32))
    with pytest.raises(ValueError, match=r"holds float32 \(23,\), the manifest says int64 \(23,\)"):
        PackedDataset(damaged)


def test_missing_labels_name_the_file(damaged):
    os.remove(damaged / "labels.npy")
    with pytest.raises(ValueError) as err:
        PackedDataset(damaged)
    assert str(err.value).startswith(f"cannot open '{damaged / 'labels.npy'}' (FileNotFoundError: ")


@pytest.mark.parametrize("indices", [[3, 1, 4, 1], [0, 5, 2]])
def test_gather_into_out_writes_the_rows_there(ds, indices):
    xb, yb = ds.gather(indices)
    x0 = ds[0][0]
    # a buffer laid out like the samples (a C x H x W view of H x W x C memory)
    out_x = torch.empty((len(indices), *x0.permute(1, 2, 0).shape), dtype=x0.dtype).permute(0, 3, 1, 2)
    out_y = torch.empty(len(indices), dtype=torch.int64)
    assert ds.gather_into(indices, (out_x, out_y)) is True
    assert torch.equal(out_x, xb) and torch.equal(out_y, yb)


def test_gather_into_out_of_another_memory_order_declines_and_writes_nothing(ds):
    out_x = torch.full((2, *ds[0][0].shape), 7, dtype=torch.uint8)  # contiguous C x H x W
    assert ds.gather_into([0, 1], (out_x, None)) is False
    assert (out_x == 7).all()


def test_a_shuffled_contiguous_range_is_read_as_one_slice(ds, monkeypatch):
    indices = np.random.default_rng(0).permutation(np.arange(5, 8))  # inside shard 1 (4-8)
    expected = stack(ds, indices.tolist())
    shard = ds._open()[1]
    reads = []

    class Spy(np.ndarray):
        def __getitem__(self, key):
            reads.append(key)
            return super().__getitem__(key)

    ds._shards[1] = shard.view(Spy)
    got = ds.gather(indices)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert reads == [slice(1, 4)]


# --- batches: ds[indices] and ds.dataloader() ---------------------------------------


def test_a_batch_of_indices_is_the_gather(ds):
    indices = [22, 0, 5, 5, 13]

    xb, yb = ds[indices]

    x_ref, y_ref = stack(ds, indices)
    assert torch.equal(xb, x_ref) and torch.equal(yb, y_ref)
    assert torch.equal(ds[np.array(indices)][0], x_ref)
    assert torch.equal(ds[2:6][0], stack(ds, range(2, 6))[0])


def test_a_batch_with_a_transform_applies_it_per_sample(packed_root):
    ds = PackedDataset(packed_root, transform=lambda x: x[:1], target_transform=lambda y: y * 10)

    xb, yb = ds[[3, 20]]

    assert torch.equal(xb, torch.stack([ds[3][0], ds[20][0]]))
    assert yb.tolist() == [int(ds[3][1]), int(ds[20][1])]


@IGNORE_FORK_WARNING
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_gives_every_sample_once_per_epoch(ds, workers):
    loader = ds.dataloader(5, num_workers=workers, seed=1)
    x_all, y_all = stack(ds, range(N))

    with deadline(60):
        batches = list(loader)
    labels = torch.cat([yb for _, yb in batches])
    xs = torch.cat([xb for xb, _ in batches])
    found = [next(i for i in range(N) if torch.equal(x_all[i], x)) for x in xs]
    assert sorted(found) == list(range(N))
    assert labels.tolist() == y_all[found].tolist()
    assert [len(yb) for _, yb in batches] == [5, 5, 5, 5, 3]


def test_close_unmaps_the_shards_and_a_later_read_maps_them_again(packed_root):
    ds = PackedDataset(packed_root)
    x0 = ds[0][0].clone()

    ds.close()

    assert ds._shards is None
    assert torch.equal(ds[0][0], x0)
