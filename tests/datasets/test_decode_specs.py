"""``PathDataset(..., decode=RandomResizedCrop(...))``: a folder of images of every size
read into samples of one size, the same crop for a sample and epoch on every path."""

from __future__ import annotations

import pickle

import pytest
import torch
from helpers import IGNORE_FORK_WARNING, china
from PIL import Image
from torch.utils.data import DataLoader

from torchloader import CenterCrop, ChunkedLoader, ImageReader, PathDataset, RandomResizedCrop, SampleLoadError
from torchloader._core.randomness import reading_epoch
from torchloader.readers.suffix import SuffixReader

pytestmark = IGNORE_FORK_WARNING

SIZES = [(60, 90), (121, 80), (45, 45), (200, 150), (33, 70), (90, 61), (100, 100), (77, 130), (64, 64), (50, 120)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """JPEGs (one grey, one PNG among them) of ten sizes; sample i has label i."""
    root, photo = tmp_path_factory.mktemp("mixed"), china()
    paths = []
    for i, (h, w) in enumerate(SIZES):
        array = photo[i * 20 : i * 20 + h, i * 30 : i * 30 + w]
        path = root / (f"{i}.png" if i == 3 else f"{i}.jpg")
        image = Image.fromarray(array).convert("L") if i == 5 else Image.fromarray(array)
        image.save(path, **({} if i == 3 else {"quality": 90}))
        paths.append(str(path))
    return paths


def dataset(paths, spec=None, **options):
    return PathDataset(paths, labels=range(len(paths)), decode=spec or RandomResizedCrop(24), **options)


def reference(ds, epoch, seed=0):
    """Each sample of ``epoch`` read alone, as a loader seeded ``seed`` reads it."""
    with reading_epoch(seed, epoch):
        return torch.stack([ds[i][0] for i in range(len(ds))])


def by_label(batches):
    xs, ys = zip(*batches)
    x, y = torch.cat(xs), torch.cat(ys)
    return x[torch.argsort(y)]


@pytest.mark.parametrize("path", ["batches", "dataloader-0", "dataloader-2", "chunked-2"])
def test_every_fast_path_gives_a_sample_the_same_crop_in_an_epoch_and_a_new_one_the_next(photos, path):
    ds = dataset(photos)
    if path == "batches":
        with reading_epoch(0, 0):
            first = ds[list(range(len(ds)))][0]
        with reading_epoch(0, 1):
            second = ds[list(range(len(ds)))][0]
    else:
        if path.startswith("chunked"):
            loader = ChunkedLoader(ds, 4, chunk_size=5, seed=0, num_workers=2)
        else:
            loader = ds.dataloader(4, seed=0, num_workers=int(path[-1]))
        first, second = by_label(loader), by_label(loader)
    assert first.shape == (len(SIZES), 3, 24, 24)
    assert torch.equal(first, reference(ds, 0)) and torch.equal(second, reference(ds, 1))
    differs = [not torch.equal(a, b) for a, b in zip(first, second)]
    assert sum(differs) >= 8  # a new draw each epoch (two may coincide: full-image crops of small images)


def test_a_plain_dataloader_over_images_of_every_size_gives_batches_of_one_size(photos):
    ds = dataset(photos, CenterCrop(24, resize=28))
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2)
    x = by_label(loader)
    assert torch.equal(x, torch.stack([ds[i][0] for i in range(len(ds))]))  # CenterCrop draws nothing
    assert x.shape == (len(SIZES), 3, 24, 24)
    random = by_label(DataLoader(dataset(photos), batch_size=4, shuffle=True, num_workers=2))
    assert random.shape == x.shape  # RandomResizedCrop drew from torch's generator in each worker


def test_a_batch_is_read_straight_into_one_channels_last_buffer(photos, monkeypatch):
    ds = dataset(photos, CenterCrop((20, 30)))
    calls, load = [], ds._load
    monkeypatch.setattr(ds, "_load", lambda index, path: calls.append(index) or load(index, path))
    xb, yb = ds[[2, 0, 7]]
    assert xb.shape == (3, 3, 20, 30) and xb.is_contiguous(memory_format=torch.channels_last)
    assert yb.tolist() == [2, 0, 7] and calls == [2]  # the first fixes the layout; the others decode into their slots
    monkeypatch.undo()
    assert torch.equal(xb[1], ds[0][0]) and torch.equal(xb[2], ds[7][0])


def test_grey_images_and_a_pillow_reader_take_the_same_crop(photos):
    spec = RandomResizedCrop(16, scale=(0.3, 1.0))
    turbo = dataset(photos, spec, reader=ImageReader("L"))
    pillow = dataset(photos, spec, reader=ImageReader("L", decoder="pillow"))
    with reading_epoch(3, 2):
        a = turbo[list(range(len(photos)))][0]
        b = pillow[list(range(len(photos)))][0]
    assert a.shape == (len(photos), 1, 16, 16)
    small = [i for i, (h, w) in enumerate(SIZES) if min(h, w) < 3 * 16 * 1.5 * 0.55]  # decoded at full scale
    assert torch.equal(a[small], b[small])


def test_a_dataset_with_a_decode_spec_pickles_and_from_folder_takes_it(photos, tmp_path):
    ds = dataset(photos)
    copy = pickle.loads(pickle.dumps(ds))
    with reading_epoch(0, 0):
        assert torch.equal(copy[4][0], ds[4][0])
    (tmp_path / "cat").mkdir()
    Image.fromarray(china()[:50, :70]).save(tmp_path / "cat" / "a.jpg")
    folder = PathDataset.from_folder(tmp_path, decode=CenterCrop(32))
    assert isinstance(folder.reader, ImageReader) and folder[0][0].shape == (3, 32, 32)
    assert "decode=CenterCrop((32, 32), resize=32)" in repr(folder)


def test_bad_decode_arguments_say_what_to_pass(photos):
    with pytest.raises(TypeError, match="transform="):
        PathDataset(photos, decode=lambda x: x)
    with pytest.raises(TypeError, match="must be an ImageReader"):
        PathDataset(photos, decode=CenterCrop(8), reader=SuffixReader())
    with pytest.raises(ValueError, match="mode"):
        PathDataset(photos, decode=CenterCrop(8), reader=ImageReader("keep"))


def test_a_corrupt_file_names_its_sample_and_path_or_is_skipped(photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    paths = photos[:3] + [str(broken)] + photos[3:5]
    with pytest.raises(SampleLoadError, match=r"sample 3.*broken\.jpg"):
        dataset(paths)[list(range(6))]
    with pytest.raises(SampleLoadError, match=r"sample 3.*broken\.jpg"):
        dataset(paths)[3]
    skipping = dataset(paths, on_error="skip")
    with pytest.warns(UserWarning):
        xb, yb = skipping[list(range(6))]
    assert yb.tolist() == [0, 1, 2, 4, 5] and xb.shape == (5, 3, 24, 24)
    assert list(skipping.errors.indices()) == [3]
