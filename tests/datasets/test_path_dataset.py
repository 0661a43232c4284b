"""Tests for torchloader/datasets/path.py: PathDataset and its constructors."""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import re
import sys
import warnings

import numpy as np
import pytest
import torch
from helpers import china, wait_until
from PIL import Image
from torch.utils.data import DataLoader

from torchloader import ImageReader, NpyReader, PathDataset, SampleLoadError, SuffixReader, TransformError
from torchloader.readers import image as readers
from torchloader.readers.suffix import IMAGE_SUFFIXES


def readers_simplejpeg():
    return readers.simplejpeg


def photo(height=16, width=20, top=150, left=300) -> np.ndarray:
    return china()[top : top + height, left : left + width].copy()


def chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def npy_files(folder, count, shape=(2, 3)):
    """``count`` .npy files; file i holds an array full of i."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = str(folder / f"{i}.npy")
        np.save(path, np.full(shape, i, dtype=np.int32))
        paths.append(path)
    return paths


def write_bytes(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


# --- construction ---------------------------------------------------------------


def test_paths_are_held_in_a_numpy_array(tmp_path):
    paths = npy_files(tmp_path, 3)

    ds = PathDataset(paths, [0, 1, 0])

    assert isinstance(ds.paths, np.ndarray)
    assert ds.paths.dtype.kind == "S"
    assert isinstance(ds.labels, np.ndarray)
    assert ds.labels.dtype == np.int64
    assert len(ds) == 3
    assert [ds.path(i) for i in range(3)] == paths
    assert all(type(ds.path(i)) is str for i in range(3))


def test_paths_may_be_path_objects_tuples_or_arrays(tmp_path):
    paths = npy_files(tmp_path, 2)
    from_paths = PathDataset([tmp_path / "0.npy", tmp_path / "1.npy"])
    from_tuple = PathDataset(tuple(paths))
    from_array = PathDataset(np.array(paths))

    for ds in (from_paths, from_tuple, from_array):
        assert [ds.path(i) for i in range(2)] == paths
        assert ds[1].tolist() == [[1, 1, 1], [1, 1, 1]]


def test_a_single_path_is_not_a_sequence_of_paths(tmp_path):
    with pytest.raises(TypeError) as info:
        PathDataset("data/train")

    assert str(info.value) == (
        "paths must be a sequence of paths (got the single path 'data/train'); for a folder use PathDataset.from_folder"
    )
    with pytest.raises(TypeError, match="got the single path PosixPath"):
        PathDataset(tmp_path)


def test_labels_of_another_length_are_refused(tmp_path):
    paths = npy_files(tmp_path, 3)

    with pytest.raises(ValueError) as info:
        PathDataset(paths, [0, 1])

    assert str(info.value) == ("labels must be one label per path: expected shape (3,), got (2,)")


@pytest.mark.parametrize(
    "labels",
    [[2, 0, 1], (2, 0, 1), np.array([2, 0, 1], dtype=np.int32), torch.tensor([2, 0, 1])],
    ids=["list", "tuple", "ndarray", "tensor"],
)
def test_labels_may_be_any_sequence_or_array(tmp_path, labels):
    ds = PathDataset(npy_files(tmp_path, 3), labels)

    assert ds.labels.tolist() == [2, 0, 1]
    assert ds.labels.dtype == np.int64
    assert ds.classes is None
    assert ds.class_to_idx is None


def test_class_name_labels_give_sorted_classes(tmp_path):
    ds = PathDataset(npy_files(tmp_path, 4), ["dog", "cat", "emu", "cat"])

    assert ds.classes == ["cat", "dog", "emu"]
    assert ds.class_to_idx == {"cat": 0, "dog": 1, "emu": 2}
    assert [int(ds[i][1]) for i in range(4)] == [1, 0, 2, 0]


def test_classes_may_name_integer_labels_but_not_class_name_labels(tmp_path):
    paths = npy_files(tmp_path, 2)

    ds = PathDataset(paths, [1, 0], classes=("no", "yes"))
    assert ds.classes == ["no", "yes"]
    assert ds.class_to_idx == {"no": 0, "yes": 1}

    with pytest.raises(ValueError) as info:
        PathDataset(paths, ["a", "b"], classes=["a", "b"])
    assert str(info.value) == "labels are class names, so classes=... must not be given"


def test_reader_must_be_callable(tmp_path):
    with pytest.raises(TypeError) as info:
        PathDataset(npy_files(tmp_path, 1), reader="npy")

    assert str(info.value) == "reader must be callable (got str)"


def test_construction_opens_no_file(tmp_path):
    ds = PathDataset([str(tmp_path / "missing.png")], [0])

    assert len(ds) == 1  # the missing file only matters when it is read


# --- indexing -------------------------------------------------------------------


def test_item_is_a_tensor_and_a_0_dim_int64_label(tmp_path):
    ds = PathDataset(npy_files(tmp_path, 3), [5, 6, 7])

    x, y = ds[1]

    assert x.dtype == torch.int32
    assert x.tolist() == [[1, 1, 1], [1, 1, 1]]
    assert y.dtype == torch.int64
    assert y.shape == ()
    assert y.item() == 6


def test_without_labels_the_item_is_the_tensor_alone(tmp_path):
    ds = PathDataset(npy_files(tmp_path, 2))

    x = ds[0]

    assert isinstance(x, torch.Tensor)
    assert ds.labels is None
    assert x.tolist() == [[0, 0, 0], [0, 0, 0]]


def test_negative_and_numpy_indices(tmp_path):
    ds = PathDataset(npy_files(tmp_path, 3), [0, 1, 2])

    assert ds[-1][1].item() == 2
    assert ds[-3][0][0, 0].item() == 0
    assert ds[np.int64(1)][1].item() == 1
    assert ds[torch.tensor(2)][1].item() == 2


@pytest.mark.parametrize("index", [3, -4, 100])
def test_out_of_range_index_raises_index_error(tmp_path, index):
    ds = PathDataset(npy_files(tmp_path, 3))

    with pytest.raises(IndexError) as info:
        ds[index]

    assert str(info.value) == f"index {index} is out of range for 3 samples"


def test_iteration_stops_at_the_end(tmp_path):
    ds = PathDataset(npy_files(tmp_path, 3))

    assert [x[0, 0].item() for x in ds] == [0, 1, 2]


def test_non_integer_index_is_refused(tmp_path):
    ds = PathDataset(npy_files(tmp_path, 3))

    with pytest.raises(TypeError) as info:
        ds[0.0]
    assert str(info.value) == ("index must be an integer (got float); for a batch pass a list or array of indices")
    with pytest.raises(TypeError, match=r"\(got str\)"):
        ds["0"]


def test_an_empty_dataset(tmp_path):
    ds = PathDataset([])

    assert len(ds) == 0
    with pytest.raises(IndexError, match=r"^index 0 is out of range for 0 samples$"):
        ds[0]


# --- readers and transforms -----------------------------------------------------


def test_default_reader_picks_by_suffix(tmp_path):
    pixels = photo()
    Image.fromarray(pixels).save(tmp_path / "a.PNG")
    np.save(tmp_path / "b.npy", np.arange(4, dtype=np.float32))
    torch.save(torch.ones(2, 2), tmp_path / "c.pt")
    np.savez(tmp_path / "d.npz", only=np.zeros(3, dtype=np.uint8))
    names = ["a.PNG", "b.npy", "c.pt", "d.npz"]

    ds = PathDataset([tmp_path / n for n in names], [0, 1, 2, 3])

    assert torch.equal(ds[0][0], chw(pixels))
    assert ds[1][0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert torch.equal(ds[2][0], torch.ones(2, 2))
    assert ds[3][0].dtype == torch.uint8


def test_a_reader_replaces_the_default(tmp_path):
    Image.fromarray(photo()).save(tmp_path / "a.png")

    ds = PathDataset([tmp_path / "a.png"], reader=ImageReader("L"))
    by_suffix = PathDataset([tmp_path / "a.png"], reader=SuffixReader({".png": ImageReader("L")}))

    assert ds[0].shape == (1, 16, 20)
    assert torch.equal(by_suffix[0], ds[0])


def test_any_callable_returning_an_array_is_a_reader(tmp_path):
    seen = []

    def reader(path):
        seen.append(path)
        return np.arange(6).reshape(2, 3)[:, ::-1]  # negative strides

    ds = PathDataset(["a.bin", "b.bin"], reader=reader)

    assert ds[1].tolist() == [[2, 1, 0], [5, 4, 3]]
    assert seen == ["b.bin"]


def test_a_reader_returning_neither_tensor_nor_array_fails_loudly():
    ds = PathDataset(["a.bin"], reader=lambda path: [1, 2])

    with pytest.raises(SampleLoadError) as info:
        ds[0]

    assert str(info.value) == (
        "could not load sample 0 from 'a.bin': TypeError: reader output must be a "
        "torch.Tensor or numpy.ndarray (got list)"
    )


def test_transform_and_target_transform_are_applied(tmp_path):
    ds = PathDataset(
        npy_files(tmp_path, 2),
        [3, 4],
        transform=lambda x: x.float() / 2,
        target_transform=lambda y: y * 10,
    )

    x, y = ds[1]

    assert x.dtype == torch.float32
    assert x.tolist() == [[0.5] * 3] * 2
    assert y.item() == 40


def test_target_transform_sees_the_0_dim_int64_label(tmp_path):
    seen = []
    ds = PathDataset(npy_files(tmp_path, 1), [2], target_transform=seen.append)

    ds[0]

    assert seen[0].dtype == torch.int64 and seen[0].shape == ()


# --- errors that name the index and the path ------------------------------------


def _jpeg(path, size=(32, 40)):
    Image.fromarray(photo(*size)).save(path, quality=90)
    return str(path)


def test_a_missing_file_names_index_path_and_cause(tmp_path):
    paths = npy_files(tmp_path, 1) + [str(tmp_path / "gone.npy")]
    ds = PathDataset(paths, [0, 1])

    with pytest.raises(SampleLoadError) as info:
        ds[1]

    path = paths[1]
    assert str(info.value) == (
        f"could not load sample 1 from '{path}': FileNotFoundError: [Errno 2] No such file or directory: '{path}'"
    )
    assert (info.value.index, info.value.path) == (1, path)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_a_negative_index_is_reported_as_the_positive_one(tmp_path):
    ds = PathDataset([str(tmp_path / "a.png"), str(tmp_path / "b.png")])

    with pytest.raises(SampleLoadError, match=r"^could not load sample 1 from '.*b\.png'"):
        ds[-1]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_zero_byte_or_text_file_is_not_an_image(tmp_path, suffix):
    empty = write_bytes(tmp_path / f"empty{suffix}", b"")
    text = write_bytes(tmp_path / f"text{suffix}", b"hello, I am text\n")
    ds = PathDataset([empty, text])

    for index, path in enumerate([empty, text]):
        with pytest.raises(SampleLoadError) as info:
            ds[index]
        assert str(info.value) == (
            f"could not load sample {index} from '{path}': UnidentifiedImageError: cannot identify image file '{path}'"
        )
        assert (info.value.index, info.value.path) == (index, path)


@pytest.mark.parametrize("decoder", ["auto", "pillow"])
def test_a_truncated_jpeg_names_index_path_and_cause(tmp_path, decoder):
    whole = _jpeg(tmp_path / "whole.jpg")
    with open(whole, "rb") as f:
        data = f.read()
    cut = write_bytes(tmp_path / "cut.jpg", data[: len(data) // 2])
    ds = PathDataset([whole, cut], reader=ImageReader(decoder=decoder))

    assert ds[0].shape == (3, 32, 40)
    with pytest.raises(SampleLoadError) as info:
        ds[1]

    assert str(info.value).startswith(f"could not load sample 1 from '{cut}': ")
    cause = info.value.__cause__
    assert str(info.value).endswith(f"{type(cause).__name__}: {cause}")
    assert isinstance(cause, (OSError, ValueError))  # Pillow / libjpeg-turbo
    assert (info.value.index, info.value.path) == (1, cut)


def test_a_decompression_bomb_is_refused_by_the_dataset(tmp_path, monkeypatch):
    small = _jpeg(tmp_path / "small.jpg", (20, 20))
    bombs = [_jpeg(tmp_path / "bomb.jpg", (50, 50))]
    Image.fromarray(photo(50, 50)).save(tmp_path / "bomb.png")
    bombs.append(str(tmp_path / "bomb.png"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    ds = PathDataset([small, *bombs])

    assert ds[0].shape == (3, 20, 20)
    for index, path in enumerate(bombs, start=1):
        with pytest.raises(SampleLoadError) as info:
            ds[index]
        assert str(info.value).startswith(
            f"could not load sample {index} from '{path}': DecompressionBombError: "
            f"Image size (2500 pixels) exceeds limit of 2000 pixels"
        )
        assert isinstance(info.value.__cause__, Image.DecompressionBombError)
        assert (info.value.index, info.value.path) == (index, path)


def test_a_transform_error_is_reported_with_the_sample(tmp_path):
    def transform(x):
        raise ValueError("wrong shape")

    ds = PathDataset(npy_files(tmp_path, 1), transform=transform)

    with pytest.raises(TransformError) as info:
        ds[0]
    assert isinstance(info.value, SampleLoadError) and not info.value.skippable
    assert str(info.value) == (
        f"the transform test_a_transform_error_is_reported_with_the_sample.<locals>.transform "
        f"failed on sample 0 (read from {ds.path(0)!r}), given a torch.int32 tensor of shape "
        f"(2, 3): ValueError: wrong shape"
    )


# --- DataLoader -----------------------------------------------------------------

# Not about this library: torch's advice on a small machine, and Python >= 3.12's
# warning on fork() in a process with threads.
_ignore_worker_count = pytest.mark.filterwarnings(
    "ignore:This DataLoader will create",
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning",
)


@_ignore_worker_count
def test_works_in_a_dataloader_with_workers(tmp_path):
    ds = PathDataset(npy_files(tmp_path, 6), [0, 1, 0, 1, 0, 1])

    batches = list(DataLoader(ds, batch_size=4, num_workers=2))

    assert [tuple(x.shape) for x, _ in batches] == [(4, 2, 3), (2, 2, 3)]
    assert batches[0][1].dtype == torch.int64
    assert torch.cat([y for _, y in batches]).tolist() == [0, 1, 0, 1, 0, 1]
    assert torch.cat([x[:, 0, 0] for x, _ in batches]).tolist() == [0, 1, 2, 3, 4, 5]


def _first_error(loader):
    """Iterate ``loader`` until it raises; return the exception, workers shut down.

    Dropping the traceback lets the iterator go by reference count: left to the
    cycle collector, its workers are joined with torch's 5 s timeout each.
    """
    iterator = iter(loader)
    try:
        for _ in iterator:
            pass
    except Exception as exc:  # noqa: BLE001 - the caller checks the type
        exc.__traceback__ = None
        return exc
    finally:
        del iterator
    pytest.fail("the loader raised nothing")


@_ignore_worker_count
def test_a_bad_file_in_a_worker_reaches_the_main_process_as_sample_load_error(tmp_path):
    paths = npy_files(tmp_path, 3)
    bad = write_bytes(tmp_path / "bad.png", b"not a png")
    ds = PathDataset(paths + [bad], [0, 0, 0, 0])

    error = _first_error(DataLoader(ds, batch_size=1, num_workers=2))

    assert type(error) is SampleLoadError
    message = str(error)
    assert message.startswith("Caught SampleLoadError in DataLoader worker process ")
    assert f"could not load sample 3 from '{bad}': UnidentifiedImageError" in message


# --- batches: ds[indices] and ds.dataloader() ---------------------------------------


def jpeg_folder(folder, count, size=(24, 32)):
    """``count`` JPEG crops of a real photo, labels i % 3; returns (paths, labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = str(folder / f"{i:03d}.jpg")
        Image.fromarray(photo(*size, top=100 + 7 * i, left=200 + 5 * i)).save(path, quality=90)
        paths.append(path)
    return paths, [i % 3 for i in range(count)]


def stacked(ds, indices):
    samples = [ds[i] for i in indices]
    return torch.stack([x for x, _ in samples]), torch.stack([y for _, y in samples])


@pytest.mark.parametrize("kind", ["jpeg", "png", "npy"])
def test_a_batch_of_indices_equals_the_stacked_samples(tmp_path, kind):
    if kind == "npy":
        paths, labels = npy_files(tmp_path, 7), [0, 1, 2, 0, 1, 2, 0]
    else:
        paths, labels = jpeg_folder(tmp_path, 7)
        if kind == "png":
            for path in paths:
                Image.open(path).save(path[:-4] + ".png")
            paths = [p[:-4] + ".png" for p in paths]
    ds = PathDataset(paths, labels)
    indices = [5, 0, 6, 2, 2]

    for batch in ([5, 0, 6, 2, 2], np.array(indices), torch.tensor(indices), (5, 0, 6, 2, 2)):
        xb, yb = ds[batch]
        x_ref, y_ref = stacked(ds, indices)
        assert torch.equal(xb, x_ref) and xb.dtype == x_ref.dtype
        assert torch.equal(yb, y_ref) and yb.dtype == torch.int64


def test_a_batch_of_images_is_channels_last_and_a_slice_works(tmp_path):
    paths, labels = jpeg_folder(tmp_path, 5)
    ds = PathDataset(paths, labels)

    xb, yb = ds[1:4]

    assert xb.shape == (3, 3, 24, 32)
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(xb, stacked(ds, [1, 2, 3])[0])
    assert yb.tolist() == [1, 2, 0]


@pytest.mark.skipif(readers_simplejpeg() is None, reason="needs simplejpeg")
def test_jpegs_of_a_batch_are_decoded_in_place(tmp_path, monkeypatch):
    paths, labels = jpeg_folder(tmp_path, 4)
    ds = PathDataset(paths, labels)
    direct = []
    real = ImageReader.read_into

    def spy(self, path, out):
        done = real(self, path, out)
        direct.append(done)
        return done

    monkeypatch.setattr(ImageReader, "read_into", spy)
    ds[[0, 1, 2, 3]]

    assert direct == [True, True, True]  # the first sample, read as ds[i], fixes the layout


def test_a_batch_without_labels_is_the_tensor_alone(tmp_path):
    ds = PathDataset(npy_files(tmp_path, 3))

    xb = ds[[2, 1]]

    assert xb[:, 0, 0].tolist() == [2, 1]


def test_a_batch_applies_transform_and_target_transform_per_sample(tmp_path):
    paths, labels = jpeg_folder(tmp_path, 4)
    ds = PathDataset(paths, labels, transform=lambda x: x[:, :8, :8] // 2, target_transform=lambda y: y + 10)

    xb, yb = ds[[3, 1]]

    assert torch.equal(xb, torch.stack([ds[3][0], ds[1][0]]))
    assert yb.tolist() == [10, 11]


def test_a_batch_of_samples_of_two_shapes_names_both(tmp_path):
    paths, labels = jpeg_folder(tmp_path, 3)
    Image.fromarray(photo(20, 32)).save(paths[2], quality=90)
    ds = PathDataset(paths, labels)

    with pytest.raises(ValueError) as info:
        ds[[1, 0, 2]]
    assert str(info.value) == (
        "sample 2 has x (3, 20, 32) torch.uint8 but sample 1 has x (3, 24, 32) torch.uint8; "
        "samples must share one shape and dtype to be stacked into one tensor. Resize or "
        "crop them to one size in the dataset's transform"
        " (images: decode=RandomResizedCrop(size) or CenterCrop(size) crops them as they decode)"
    )


def test_a_bad_file_in_a_batch_names_index_path_and_cause(tmp_path):
    paths, labels = jpeg_folder(tmp_path, 3)
    bad = write_bytes(tmp_path / "bad.jpg", b"not a jpeg")
    ds = PathDataset(paths + [bad], labels + [0])

    with pytest.raises(SampleLoadError, match=f"could not load sample 3 from '{bad}': UnidentifiedImageError"):
        ds[[0, 3]]


@pytest.mark.parametrize(
    ("batch", "error", "message"),
    [
        ([0, 9], IndexError, "index 9 is out of range for 3 samples"),
        ([], IndexError, "a batch needs at least one index"),
        (
            np.zeros((2, 2), np.int64),
            TypeError,
            "a batch of indices must be a one-dimensional sequence of integers (got int64 with shape (2, 2))",
        ),
        (
            [0.5, 1.0],
            TypeError,
            "a batch of indices must be a one-dimensional sequence of integers (got float64 with shape (2,))",
        ),
    ],
)
def test_bad_batches_of_indices_are_refused(tmp_path, batch, error, message):
    ds = PathDataset(npy_files(tmp_path, 3), [0, 1, 2])

    with pytest.raises(error) as info:
        ds[batch]
    assert str(info.value) == message


def test_negative_indices_in_a_batch_count_from_the_end(tmp_path):
    ds = PathDataset(npy_files(tmp_path, 4), [0, 1, 2, 3])

    assert ds[[-1, -4]][1].tolist() == [3, 0]


@_ignore_worker_count
@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_gives_every_sample_once_per_epoch_in_a_new_order(tmp_path, workers):
    paths, labels = jpeg_folder(tmp_path, 11)
    ds = PathDataset(paths, labels)
    loader = ds.dataloader(4, num_workers=workers, seed=3, persistent_workers=workers > 0)
    reference = {i: ds[i][0] for i in range(11)}

    orders = []
    for _ in range(2):
        seen = []
        for xb, yb in loader:
            assert xb.shape[1:] == (3, 24, 32)
            for x, y in zip(xb, yb.tolist()):
                match = [i for i, ref in reference.items() if torch.equal(ref, x)]
                assert len(match) == 1 and labels[match[0]] == y
                seen.append(match[0])
        assert sorted(seen) == list(range(11))
        orders.append(seen)
    assert orders[0] != orders[1]
    assert [len(yb) for _, yb in loader] == [4, 4, 3]


@_ignore_worker_count
def test_dataloader_with_workers_reports_a_bad_file_with_index_and_path(tmp_path):
    paths, labels = jpeg_folder(tmp_path, 3)
    bad = write_bytes(tmp_path / "bad.jpg", b"not a jpeg")
    ds = PathDataset(paths + [bad], labels + [0])

    error = _first_error(ds.dataloader(2, num_workers=2))

    assert type(error) is SampleLoadError
    assert f"could not load sample 3 from '{bad}'" in str(error)


def test_dataloader_sets_its_own_sampler(tmp_path):
    ds = PathDataset(npy_files(tmp_path, 3))

    with pytest.raises(TypeError, match=r"^dataloader\(\) sets sampler itself"):
        ds.dataloader(2, sampler=[0, 1, 2])


def test_read_samples_into_writes_the_given_slots_and_returns_the_labels(tmp_path):
    ds = PathDataset(npy_files(tmp_path, 3), [4, 5, 6])
    out = torch.zeros(4, 2, 3, dtype=torch.int32)

    labels = ds.read_samples_into([2, 0], out, slots=[3, 1])

    assert labels.tolist() == [6, 4] and labels.dtype == torch.int64
    assert out[:, 0, 0].tolist() == [0, 0, 0, 2]
    assert ds.read_samples_into([1], out).tolist() == [5] and out[0, 0, 0] == 1


def test_read_samples_into_refuses_a_sample_that_does_not_fit(tmp_path):
    ds = PathDataset(npy_files(tmp_path, 3), [4, 5, 6])

    with pytest.raises(ValueError, match=r"^sample 2 has x \(2, 3\) torch.int32, which does not fit"):
        ds.read_samples_into([2], torch.zeros(1, 3, 2, dtype=torch.int32))


def test_read_samples_into_without_labels_returns_none_and_with_target_transform_applies_it(tmp_path):
    paths = npy_files(tmp_path, 2)
    out = torch.zeros(2, 2, 3, dtype=torch.int32)

    assert PathDataset(paths).read_samples_into([0, 1], out) is None
    tripled = PathDataset(paths, [1, 2], target_transform=lambda y: y * 3)
    assert tripled.read_samples_into([0, 1], out).tolist() == [3, 6]


# --- pickling, repr, unusual names ----------------------------------------------


def test_pickle_round_trip_reads_the_same_samples(tmp_path):
    Image.fromarray(photo()).save(tmp_path / "a.png")
    paths = npy_files(tmp_path, 2) + [str(tmp_path / "a.png")]
    ds = PathDataset(paths, ["b", "a", "b"])

    back = pickle.loads(pickle.dumps(ds))

    assert back.classes == ["a", "b"]
    assert np.array_equal(back.paths, ds.paths)
    assert np.array_equal(back.labels, ds.labels)
    for i in range(3):
        assert torch.equal(back[i][0], ds[i][0])
        assert torch.equal(back[i][1], ds[i][1])


def test_repr_shows_the_configuration(tmp_path):
    paths = npy_files(tmp_path, 3)

    assert repr(PathDataset(paths, [0, 1, 1], reader=NpyReader())) == (
        "PathDataset(n=3, labels=2 values, reader=NpyReader(mmap=False))"
    )
    assert repr(PathDataset(paths, ["x", "y", "z"], reader=NpyReader(mmap=True))) == (
        "PathDataset(n=3, labels=3 values, classes=3, reader=NpyReader(mmap=True))"
    )
    assert repr(PathDataset(paths)) == (f"PathDataset(n=3, labels=None, reader={SuffixReader()!r})")


def test_names_with_spaces_and_unicode(tmp_path):
    pixels = photo()
    path = tmp_path / "my photos" / "sea lion ü 1.png"
    path.parent.mkdir()
    Image.fromarray(pixels).save(path)

    ds = PathDataset([path], ["sea lion"])

    assert ds.path(0) == str(path)
    assert torch.equal(ds[0][0], chw(pixels))


@pytest.mark.skipif(sys.platform != "linux", reason="byte file names are a POSIX thing")
def test_non_utf8_file_names_round_trip(tmp_path):
    folder = os.fsencode(tmp_path)
    good = os.path.join(folder, b"caf\xff \xe9.npy")
    with open(good, "wb") as f:  # a bytes path: the name is not valid UTF-8
        np.save(f, np.arange(3))
    missing = os.path.join(folder, b"gone\xfe.npy")

    ds = PathDataset([os.fsdecode(good), missing])

    assert os.fsencode(ds.path(0)) == good
    assert ds[0].tolist() == [0, 1, 2]
    assert ds.paths[1] == missing
    with pytest.raises(SampleLoadError) as info:
        ds[1]
    assert os.fsencode(info.value.path) == missing
    message = str(info.value)
    message.encode("utf-8")  # printable: the surrogate escape is shown, not embedded
    assert message.startswith(f"could not load sample 1 from {os.fsdecode(missing)!r}: ")
    back = pickle.loads(pickle.dumps(ds))
    assert back[0].tolist() == [0, 1, 2]


# --- from_folder ----------------------------------------------------------------


# torchvision.datasets.folder.IMG_EXTENSIONS, ImageFolder's default
TORCHVISION_IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def reference_image_folder(root, extensions=TORCHVISION_IMG_EXTENSIONS):
    """torchvision ImageFolder's documented classes, class_to_idx and samples."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    class_to_idx = {name: i for i, name in enumerate(classes)}
    samples = []
    for name in classes:
        for dirpath, _, fnames in sorted(os.walk(os.path.join(root, name), followlinks=True)):
            for fname in sorted(fnames):
                path = os.path.join(dirpath, fname)
                if path.lower().endswith(extensions):
                    samples.append((path, class_to_idx[name]))
    return classes, class_to_idx, samples


def image_tree(root, files):
    for index, rel in enumerate(files):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            Image.fromarray(photo(8, 8, left=10 * index)).save(path, format="PNG")
        else:
            path.write_bytes(b"not an image")
    return root


def test_from_folder_matches_image_folder(tmp_path):
    files = [
        "dog/b.png",
        "dog/A.png",
        "dog/a/x.png",
        "dog/a-b/y.png",
        "dog/a/b/z.png",
        "Cat/1.PNG",
        "cat/2.png",
        "cat/notes.txt",
        "bird/3.gif",
    ]
    root = image_tree(tmp_path / "root", files)

    ds = PathDataset.from_folder(root, extensions=(".png", ".gif"))

    classes, class_to_idx, samples = reference_image_folder(str(root), (".png", ".gif"))
    assert ds.classes == classes == ["Cat", "bird", "cat", "dog"]
    assert ds.class_to_idx == class_to_idx
    assert [(ds.path(i), int(ds.labels[i])) for i in range(len(ds))] == samples
    assert isinstance(ds.paths, np.ndarray)
    x, y = ds[len(ds) - 1]
    assert x.shape == (3, 8, 8) and y.item() == 3


def test_from_folder_default_extensions_are_image_folders(tmp_path):
    root = tmp_path / "root"
    image_tree(root, ["a/1.png", "a/2.txt", "a/4.gif", "b/5.PNG"])
    np.save(root / "a" / "3.npy", np.zeros(2))

    by_default = PathDataset.from_folder(root)
    custom = PathDataset.from_folder(root, reader=lambda path: np.zeros(1))
    arrays = PathDataset.from_folder(root, extensions=(".npy",), allow_empty=True)
    gifs = PathDataset.from_folder(root, extensions=TORCHVISION_IMG_EXTENSIONS + (".gif",))

    def names(ds):
        return [os.path.basename(ds.path(i)) for i in range(len(ds))]

    _, _, samples = reference_image_folder(str(root))
    assert [(by_default.path(i), int(by_default.labels[i])) for i in range(len(by_default))] == samples
    assert names(by_default) == names(custom) == ["1.png", "5.PNG"]
    assert names(arrays) == ["3.npy"] and names(gifs) == ["1.png", "4.gif", "5.PNG"]
    assert gifs[1][0].shape == (3, 8, 8)


def test_from_folder_reads_ppm_and_pgm_by_default(tmp_path):
    rgb, grey = photo(6, 5), photo(4, 7)[:, :, 0].copy()
    (tmp_path / "root" / "c").mkdir(parents=True)
    Image.fromarray(rgb).save(tmp_path / "root" / "c" / "a.ppm")
    Image.fromarray(grey).save(tmp_path / "root" / "c" / "b.pgm")

    ds = PathDataset.from_folder(tmp_path / "root")

    assert [os.path.basename(ds.path(i)) for i in range(2)] == ["a.ppm", "b.pgm"]
    assert torch.equal(ds[0][0], chw(rgb))
    assert torch.equal(ds[1][0], chw(np.repeat(grey[:, :, None], 3, axis=2)))  # RGB, as ImageFolder's loader


def test_from_folder_refuses_a_root_one_level_too_high_and_a_pack_beside_the_classes(tmp_path):
    high = image_tree(tmp_path / "high", ["train/cat/1.png", "test/cat/2.png"])
    with pytest.raises(
        ValueError, match=rf"Use from_folder\('{high}/train'\) for one of them, or pass allow_nested_only=True"
    ):
        PathDataset.from_folder(high)
    assert PathDataset.from_folder(high, allow_nested_only=True).classes == ["test", "train"]

    root = image_tree(tmp_path / "root", ["cat/1.png", "dog/2.png"])
    (root / "packed").mkdir()
    np.save(root / "packed" / "shard-00000.npy", np.zeros((2, 8, 8, 3), np.uint8))
    (root / "packed" / "manifest.json").write_text('{"format": "torchloader.pack", "version": 1}')
    with pytest.raises(ValueError, match=rf"Load it with PackedDataset\('{root}/packed'\), and move it out"):
        PathDataset.from_folder(root, extensions=(".png", ".npy"))


def test_from_folder_passes_reader_and_transforms(tmp_path):
    root = image_tree(tmp_path / "root", ["a/1.png", "b/2.png"])

    ds = PathDataset.from_folder(
        root,
        reader=ImageReader("L"),
        transform=lambda x: x.shape,
        target_transform=lambda y: y + 100,
    )

    assert ds[1] == (torch.Size([1, 8, 8]), torch.tensor(101))


def test_from_folder_errors_explain_the_layout(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as info:
        PathDataset.from_folder(missing)
    assert str(info.value) == f"'{missing}' is not a folder; expected root/<class>/<file>"

    too_low = image_tree(tmp_path / "low", ["1.png"])
    with pytest.raises(FileNotFoundError, match=r"Is the root one level too low\?"):
        PathDataset.from_folder(too_low)


def test_from_folder_empty_class_needs_allow_empty(tmp_path):
    root = image_tree(tmp_path / "root", ["a/1.png", "c/2.png"])
    (root / "b").mkdir()

    with pytest.raises(FileNotFoundError, match=r": b; remove them or pass allow_empty=True$"):
        PathDataset.from_folder(root, extensions=[".png"])
    ds = PathDataset.from_folder(root, extensions=[".png"], allow_empty=True)

    assert ds.classes == ["a", "b", "c"]
    assert ds.labels.tolist() == [0, 2]


def test_from_folder_pickles(tmp_path):
    root = image_tree(tmp_path / "root", ["a/1.png", "b/2.png"])
    ds = PathDataset.from_folder(root)

    back = pickle.loads(pickle.dumps(ds))

    assert back.class_to_idx == {"a": 0, "b": 1}
    assert torch.equal(back[1][0], ds[1][0])


# --- from_csv -------------------------------------------------------------------


def test_from_csv_with_class_names_resolves_against_the_csv_folder(tmp_path):
    paths = npy_files(tmp_path / "data" / "x", 3)
    csv_path = tmp_path / "data" / "train.csv"
    csv_path.write_text("path,label\nx/0.npy,dog\nx/1.npy,cat\nx/2.npy,dog\n")

    ds = PathDataset.from_csv(csv_path)

    assert [ds.path(i) for i in range(3)] == paths
    assert ds.classes == ["cat", "dog"]
    assert [int(y) for _, y in ds] == [1, 0, 1]


def test_from_csv_with_integer_labels_and_a_root(tmp_path):
    npy_files(tmp_path / "images", 2)
    csv_path = tmp_path / "lists" / "t.csv"
    csv_path.parent.mkdir()
    csv_path.write_text("file,y\n1.npy,7\n0.npy,3\n")

    ds = PathDataset.from_csv(
        csv_path,
        path_column="file",
        label_column="y",
        root=tmp_path / "images",
        transform=lambda x: x.sum(),
    )

    assert ds.classes is None
    assert [(int(x), int(y)) for x, y in ds] == [(6, 7), (0, 3)]


def test_from_csv_without_labels(tmp_path):
    npy_files(tmp_path, 2)
    (tmp_path / "t.csv").write_text("path\n1.npy\n")

    ds = PathDataset.from_csv(tmp_path / "t.csv", label_column=None, reader=NpyReader())

    assert ds.labels is None
    assert ds[0].tolist() == [[1, 1, 1], [1, 1, 1]]


def test_from_csv_missing_column_lists_the_columns(tmp_path):
    (tmp_path / "t.csv").write_text("path,target\na.npy,1\n")

    with pytest.raises(KeyError, match=r"has no column 'label' \(columns: \['path', 'target'\]\)"):
        PathDataset.from_csv(tmp_path / "t.csv")


def test_from_csv_refuses_a_path_escaping_root(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "t.csv").write_text("path,label\n../../etc/passwd,0\n")

    expected = r"line 2: '\.\./\.\./etc/passwd' resolves to .*outside root"
    with pytest.raises(ValueError, match=expected):
        PathDataset.from_csv(tmp_path / "d" / "t.csv")


def test_from_csv_refuses_decimal_labels_and_a_stray_name_among_integers(tmp_path):
    npy_files(tmp_path, 3)
    (tmp_path / "f.csv").write_text("path,label\n0.npy,2.0\n1.npy,10.0\n2.npy,1.5\n")
    (tmp_path / "m.csv").write_text("path,label\n0.npy,10\n1.npy,2\n2.npy,cat\n")

    with pytest.raises(ValueError, match=r"f\.csv' column 'label', line 2: label '2\.0' is a decimal number"):
        PathDataset.from_csv(tmp_path / "f.csv")
    with pytest.raises(ValueError, match=r"m\.csv' column 'label', line 4: label 'cat' is a class name, but 2"):
        PathDataset.from_csv(tmp_path / "m.csv")


def test_from_csv_reads_integers_as_written_and_blames_a_stray_integer_among_names(tmp_path):
    npy_files(tmp_path, 3)
    (tmp_path / "i.csv").write_text("path,label\n0.npy,007\n1.npy, 3\n2.npy,10\n")
    (tmp_path / "n.csv").write_text("path,label\n0.npy,dog\n1.npy,cat\n2.npy,10\n2.npy,2\n")

    ints = PathDataset.from_csv(tmp_path / "i.csv")

    assert ints.classes is None and ints.labels.tolist() == [7, 3, 10]
    with pytest.raises(ValueError, match=r"line 4: label '10' is an integer, but 2 of the 4 labels are class names"):
        PathDataset.from_csv(tmp_path / "n.csv")


def test_from_csv_takes_a_path_with_a_leading_space_as_written(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 20, np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / " a.jpg")
    (tmp_path / "t.csv").write_text("path,label\n a.jpg,0\na.jpg,1\n")

    ds = PathDataset.from_csv(tmp_path / "t.csv")

    assert [ds.path(0), ds.path(1)] == [str(tmp_path / " a.jpg"), str(tmp_path / "a.jpg")]
    assert abs(ds[0][0].float().mean() - 200) < 3 and abs(ds[1][0].float().mean() - 20) < 3


@_ignore_worker_count
@pytest.mark.parametrize("batched", [False, True])
def test_a_dataloader_worker_killed_mid_epoch_is_an_error_within_seconds_not_a_hang(tmp_path, batched):
    import signal

    from helpers import deadline

    ds = PathDataset(npy_files(tmp_path / "data", 400), [0] * 400, reader=_SlowNpy(tmp_path))
    loader = ds.dataloader(4, num_workers=2) if batched else DataLoader(ds, batch_size=4, num_workers=2)
    batches = iter(loader)
    next(batches)
    # Killed while it reads a file, not in the ~10 us of each batch when it holds the lock of
    # torch's done event: shutting the workers down (torch's, or ours) would wait for it forever.
    (tmp_path / "hold").touch()
    wait_until(lambda: (tmp_path / "held").exists(), seconds=30)
    os.kill(int((tmp_path / "held").read_text()), signal.SIGKILL)
    # torch's own iterator (not ds.dataloader()'s) can also lose the killed worker's last batch
    # with the raw error of its socket, under load (the test below): an error all the same
    errors = (RuntimeError,) if batched else (RuntimeError, ConnectionError, EOFError)
    with _torchs_asynchronous_raise_tolerated():
        try:
            with deadline(30), pytest.raises(errors) as raised:
                for _ in batches:  # a hang would end at the deadline, as a failure
                    pass
            if isinstance(raised.value, RuntimeError):
                assert re.search(r"DataLoader worker \(pid(\(s\))? ?\d+\) (exited|is killed)", str(raised.value))
            del raised  # the traceback's frames hold what the raise left half made
        finally:
            # (done already, unless the test failed: none is left); torch's SIGCHLD handler
            # may raise "worker killed" again in it, after which torch still ends the workers
            with contextlib.suppress(RuntimeError):
                batches._shutdown_workers()
            del batches
            gc.collect()


def test_a_batch_lost_with_its_killed_worker_says_the_worker_died(monkeypatch):
    """The race the test above can meet under load: the killed worker had put a batch in the
    queue whose memory it hands over by descriptor, so torch's fetch of it fails on the
    dead worker's socket before torch's own check names the worker, and a moment before
    the worker counts as dead."""
    import multiprocessing
    import time

    from torchloader.datasets import _dataloader

    fork = multiprocessing.get_context("fork")

    class Lost:
        stopped = False

        def __init__(self, workers, error):
            self._workers, self.error = workers, error

        def __next__(self):
            raise self.error

        def _shutdown_workers(self):
            self.stopped = True

    dying = fork.Process(target=time.sleep, args=(0.3,))  # ends just after its socket failed
    dying.start()
    lost = Lost([dying], EOFError())
    with pytest.raises(RuntimeError, match=rf"DataLoader worker \(pid {dying.pid}\) exited") as raised:
        next(_dataloader._Unwrapped(lost, None))
    assert isinstance(raised.value.__cause__, EOFError) and lost.stopped
    dying.join()
    with pytest.raises(ConnectionResetError, match="in DataLoader worker process 0"):  # the worker's own error
        next(
            _dataloader._Unwrapped(
                Lost([dying], ConnectionResetError("Caught it in DataLoader worker process 0")), None
            )
        )
    living = fork.Process(target=time.sleep, args=(30,))
    living.start()
    monkeypatch.setattr(_dataloader, "DEATH_WAIT", 0.2)
    try:
        with pytest.raises(ConnectionResetError):  # every worker alive: not a death, passed on
            next(_dataloader._Unwrapped(Lost([living], ConnectionResetError(104, "reset")), None))
    finally:
        living.kill()
        living.join()


@contextlib.contextmanager
def _torchs_asynchronous_raise_tolerated():
    """torch's SIGCHLD handler raises "worker killed" at whatever line the main process is
    on, so it can leave an object of torch or multiprocessing half made, whose finalizer
    then fails. Seen under load: a socket of multiprocessing's SocketClient made but not yet
    in its ``with`` (unclosed), a ``StorageWeakRef`` without its ``_free_weak_ref``. Those
    are let pass here; any other object's failing finalizer fails the test."""
    caught = []
    previous = sys.unraisablehook
    sys.unraisablehook = caught.append
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", ResourceWarning)  # to the hook, not raised as errors
            yield
    finally:
        sys.unraisablehook = previous
    foreign = [u for u in caught if not _made_by(u.object, ("torch.", "multiprocessing.", "socket"))]
    assert not foreign, [f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}" for u in foreign]


def _made_by(obj, prefixes):
    module = getattr(obj, "__module__", None) or type(obj).__module__
    return module.startswith(prefixes)


class _SlowNpy:
    """Reads .npy files, a little slowly, so the epoch is still running at the kill; once
    ``hold`` exists, a worker about to read writes its pid into ``held`` and waits there
    (a kill at any other moment can leave a lock of torch's held: see the test)."""

    def __init__(self, folder):
        self.hold, self.held = os.path.join(folder, "hold"), os.path.join(folder, "held")

    def __call__(self, path):
        import time

        time.sleep(0.005)
        if os.path.exists(self.hold):
            with open(f"{self.held}.{os.getpid()}", "w") as f:
                f.write(str(os.getpid()))
            os.replace(f"{self.held}.{os.getpid()}", self.held)
            time.sleep(0.5)
        return np.load(path)


def test_paths_go_to_spawned_workers_through_shared_memory(tmp_path):
    # a pipe of 30 MiB made 8 spawned workers start one after the other (_core/shared_arrays.py)
    import io
    from multiprocessing.reduction import ForkingPickler

    files = npy_files(tmp_path, 4)
    ds = PathDataset([files[i % 4] for i in range(20_000)], [i % 3 for i in range(20_000)])
    plain = pickle.dumps(ds)
    buffer = io.BytesIO()
    ForkingPickler(buffer).dump(ds)

    assert len(plain) > ds.paths.nbytes  # an ordinary pickle carries the paths
    assert buffer.tell() < 16_384  # torch's pickler for workers carries handles to shared memory
    copy = pickle.loads(plain)
    assert copy.paths.tolist() == ds.paths.tolist() and copy.labels.tolist() == ds.labels.tolist()
    assert torch.equal(copy[19_999][0], ds[19_999][0])


def test_a_spawned_worker_reads_a_dataset_whose_paths_came_through_shared_memory(tmp_path):
    files = npy_files(tmp_path, 4)
    ds = PathDataset([files[i % 4] for i in range(20_000)], [i % 3 for i in range(20_000)])
    loader = DataLoader(ds, batch_size=8, num_workers=1, multiprocessing_context="spawn")
    x, y = next(iter(loader))
    assert y.tolist() == [i % 3 for i in range(8)] and torch.equal(x[5], ds[5][0])
