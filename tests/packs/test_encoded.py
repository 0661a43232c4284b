"""Encoded packs: each image file's bytes stored as they are, decoded (and cropped) when read.

Each test packs a real folder of JPEGs and PNGs of many sizes and compares what the pack
serves with what ``PathDataset`` (or Pillow) reads from the files themselves.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from helpers import IGNORE_FORK_WARNING, china
from PIL import Image
from torch.utils.data import DataLoader

from torchloader import (
    CenterCrop,
    ChunkedLoader,
    ImageReader,
    PackedDataset,
    PathDataset,
    RandomResizedCrop,
    SampleLoadError,
    pack,
)
from torchloader.packs import _encoded
from torchloader.packs.format import MANIFEST, Manifest
from torchloader.packs.verify import verify_pack
from torchloader.tools.cli import main

pytestmark = IGNORE_FORK_WARNING

N = 30


def folder_bytes(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """30 crops of a photo, 40 to 200 px a side, JPEG (some grey) and PNG, in 3 classes."""
    root = tmp_path_factory.mktemp("encoded") / "photos"
    photo, rng = china(), np.random.default_rng(0)
    for i in range(N):
        h, w = (int(v) for v in rng.integers(40, 201, 2))
        top, left = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
        image = Image.fromarray(photo[top : top + h, left : left + w])
        folder = root / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % 7 == 3:
            image.save(folder / f"{i:02d}.png")
        else:
            (image.convert("L") if i % 5 == 4 else image).save(folder / f"{i:02d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def packed(photos, tmp_path_factory):
    dst = tmp_path_factory.mktemp("encoded-pack") / "p"
    pack(photos, dst, encoded=True, num_workers=2, progress=False, shard_bytes="64KiB")
    return dst


def test_an_encoded_pack_serves_the_pixels_of_the_files_at_about_their_size(photos, packed):
    ds, files = PackedDataset(packed), PathDataset.from_folder(photos)
    assert len(ds) == N and ds.classes == files.classes and len(ds.manifest.shards) > 1
    pillow = ImageReader(decoder="pillow")
    for i in range(N):
        (x, y), (fx, fy) = ds[i], files[i]
        assert torch.equal(x, fx) and torch.equal(x, pillow(files.path(i))) and int(y) == int(fy), i
    shards = [packed / s.file for s in ds.manifest.shards]
    assert sum(os.path.getsize(s) for s in shards) == folder_bytes(photos) + 128 * len(shards)  # + .npy headers
    assert folder_bytes(packed) <= 1.03 * folder_bytes(photos)  # with the index, labels, paths and manifest
    manifest = json.loads((packed / MANIFEST).read_text())
    assert manifest["version"] == 2 and manifest["encoded"]["index"]["file"] == "index.npy"
    index = np.load(packed / "index.npy")
    assert index.shape == (N, 4) and [tuple(index[i, 2:]) for i in range(N)] == [
        tuple(files[i][0].shape[1:]) for i in range(N)
    ]  # the height and width from each header
    assert verify_pack(str(packed)) == []


def test_a_decode_spec_gives_the_crops_the_folder_gives_in_every_loader(photos, packed):
    spec = RandomResizedCrop(32)
    ds, files = PackedDataset(packed, decode=spec), PathDataset.from_folder(photos, decode=spec)

    def batches(loader):
        return [(x.clone(), y.clone()) for x, y in loader]

    for make in (
        lambda d: d.dataloader(8, shuffle=True, seed=5, num_workers=2, multiprocessing_context="fork"),
        lambda d: ChunkedLoader(d, 8, ram_budget="128KiB", block_size=1, seed=5, num_workers=2),
    ):
        ours, theirs = make(ds), make(files)
        got, want = batches(ours), batches(theirs)
        for loader in (ours, theirs):
            if isinstance(loader, ChunkedLoader):
                loader.close()
        assert len(got) == len(want) > 1
        assert all(torch.equal(a, b) and torch.equal(p, q) for (a, p), (b, q) in zip(got, want))
        assert {tuple(x.shape[1:]) for x, _ in got} == {(3, 32, 32)}


def test_a_plain_dataloader_reads_centre_crops_in_one_buffer_per_batch(packed):
    ds = PackedDataset(packed, decode=CenterCrop(24, resize=28), reader=ImageReader("L"))
    loader = DataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context="fork")
    got = torch.cat([x for x, _ in loader])
    want = torch.stack([ds[i][0] for i in range(N)])
    assert got.shape == (N, 1, 24, 24) and torch.equal(got, want)


def test_without_a_decode_spec_images_of_two_sizes_are_refused_naming_both(packed):
    ds = PackedDataset(packed)
    with pytest.raises(ValueError, match="sample 1 .* but sample 0"):
        ds[[0, 1]]


def test_an_encoded_pack_pickles_small_and_reads_in_a_spawned_worker(packed):
    ds = PackedDataset(packed, decode=CenterCrop(16))
    assert len(pickle.dumps(ds)) < 20_000  # its manifest, not its bytes
    loader = DataLoader(ds, batch_size=10, num_workers=1, multiprocessing_context="spawn")
    assert torch.equal(torch.cat([x for x, _ in loader]), torch.stack([ds[i][0] for i in range(N)]))


def test_a_bad_file_stops_the_pack_naming_it_or_is_skipped(photos, tmp_path):
    src = tmp_path / "src"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        for name in sorted(os.listdir(photos / "c0"))[:3]:
            (src / c / name).write_bytes((photos / "c0" / name).read_bytes())
    bad = src / "b" / "zz.jpg"
    bad.write_bytes(b"\x00 not an image " * 10)
    with pytest.raises(SampleLoadError, match="zz.jpg") as err:
        pack(src, tmp_path / "p", encoded=True, num_workers=0, progress=False)
    assert err.value.index == 6 and not (tmp_path / "p" / MANIFEST).exists()  # nothing that looks complete
    summary = pack(src, tmp_path / "p", encoded=True, num_workers=0, progress=False, on_error="skip")
    assert summary.samples == 6 and [s["path"] for s in summary.skipped] == [str(bad)]
    ds, files = PackedDataset(tmp_path / "p"), PathDataset.from_folder(src, on_error="skip")
    assert all(torch.equal(ds[i][0], files[i][0]) for i in range(6))


def test_damaged_pixels_behind_a_good_header_are_named_when_read(photos, tmp_path):
    src = tmp_path / "src" / "c"
    src.mkdir(parents=True)
    good = sorted(p for p in os.listdir(photos / "c0") if p.endswith(".jpg"))[0]
    data = (photos / "c0" / good).read_bytes()
    (src / "cut.jpg").write_bytes(data[: len(data) // 2])  # truncated: the header is intact
    pack(tmp_path / "src", tmp_path / "p", encoded=True, num_workers=0, progress=False)
    with pytest.raises(SampleLoadError) as err:
        PackedDataset(tmp_path / "p")[0]
    assert err.value.index == 0 and "cut.jpg" in str(err.value) and "truncated" in str(err.value)


def test_a_flipped_byte_in_a_shard_is_found_by_verify(packed, tmp_path):
    copy = tmp_path / "p"
    copy.mkdir()
    for name in os.listdir(packed):
        (copy / name).write_bytes((packed / name).read_bytes())
    shard = copy / "shard-00000.npy"
    data = bytearray(shard.read_bytes())
    data[500] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert verify_pack(str(copy)) == [f"'{shard}' has a different checksum than the manifest: its bytes changed"]
    with pytest.raises(ValueError, match="does not match its checksum"):
        PackedDataset(copy, verify=True)
    assert main(["verify", str(copy)]) == 1


def test_an_interrupted_encoded_pack_never_looks_complete_and_a_rerun_finishes_it(photos, tmp_path, monkeypatch):
    read = _encoded._sized

    def dies_at_20(dataset, index, *args):
        if index == 20:
            raise KeyboardInterrupt  # the job killed mid-pack
        return read(dataset, index, *args)

    monkeypatch.setattr(_encoded, "_sized", dies_at_20)
    with pytest.raises(KeyboardInterrupt):
        pack(photos, tmp_path / "p", encoded=True, num_workers=2, progress=False, shard_bytes="64KiB")
    assert not (tmp_path / "p" / MANIFEST).exists()
    with pytest.raises(FileNotFoundError, match="interrupted"):
        PackedDataset(tmp_path / "p")
    monkeypatch.setattr(_encoded, "_sized", read)
    assert pack(photos, tmp_path / "p", encoded=True, progress=False, shard_bytes="64KiB").samples == N
    assert verify_pack(str(tmp_path / "p")) == [] and not [n for n in os.listdir(tmp_path / "p") if "partial" in n]


def test_options_that_do_not_fit_an_encoded_pack_are_refused(photos, packed, tmp_path):
    with pytest.raises(ValueError, match="leave size, crop and mode out"):
        pack(photos, tmp_path / "p", encoded=True, size=32)
    with pytest.raises(FileExistsError, match="differs in"):
        pack(photos, packed, progress=False)  # a raw pack into the encoded one's folder
    assert pack(photos, packed, encoded=True, progress=False, shard_bytes="64KiB").already_packed
    raw = tmp_path / "raw"
    pack(photos, raw, size=16, num_workers=0, progress=False)
    with pytest.raises(ValueError, match="decode an encoded pack"):
        PackedDataset(raw, decode=CenterCrop(8))
    assert Manifest.read(str(raw)).encoded is None


def test_the_command_line_packs_encoded_and_verifies(photos, tmp_path, capsys):
    assert main(["pack", str(photos), str(tmp_path / "p"), "--encoded", "--quiet", "--num-workers", "0"]) == 0
    assert f"packed {N} samples" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "p")]) == 0
    assert main(["pack", str(photos), str(tmp_path / "q"), "--encoded", "--size", "8"]) == 1
    assert "leave size, crop and mode out" in capsys.readouterr().err


def test_inspect_reports_an_encoded_packs_sizes_and_crops_that_run(packed, monkeypatch):
    from torchloader.tools.report import inspect_data

    monkeypatch.setattr("torchloader.datasets._load_all.default_num_workers", lambda: 0)
    report = inspect_data(str(packed))
    files = [PackedDataset(packed)[i][0].shape for i in range(N)]
    heights, widths = [s[1] for s in files], [s[2] for s in files]
    assert report.sizes["height"][::2] == [min(heights), max(heights)]
    assert report.sizes["width"][::2] == [min(widths), max(widths)]
    assert report.bytes_decoded == sum(3 * h * w for h, w in zip(heights, widths))
    assert "PackedDataset(" in report.python and "decode=RandomResizedCrop(" in report.python
    scope = {}
    exec(report.python, scope)  # what the report prints runs on the pack
    x, _ = next(iter(scope["loader"]))
    size = int(report.python.split("RandomResizedCrop(")[1].split(")")[0])
    assert x.shape == (N, 3, size, size) and report.recommendation.startswith("crop as they decode")


def test_max_side_shrinks_only_the_larger_images_and_says_their_new_size(photos, tmp_path):
    pack(photos, tmp_path / "p", encoded=True, max_side=100, num_workers=2, progress=False)
    ds, files = PackedDataset(tmp_path / "p"), PathDataset.from_folder(photos)
    index, shrunk = np.load(tmp_path / "p" / "index.npy"), 0
    for i in range(N):
        x, source = ds[i][0], files[i][0]
        assert tuple(x.shape[1:]) == tuple(index[i, 2:])  # the index states the stored size
        if max(source.shape[1:]) <= 100:
            assert torch.equal(x, source)  # stored as it was
            continue
        shrunk += 1
        assert max(x.shape[1:]) == 100 and x.shape[0] == source.shape[0]
        h, w = source.shape[1:]
        assert abs(x.shape[1] / x.shape[2] - h / w) < 0.05  # the aspect ratio kept
        name = files.path(i)
        with Image.open(name) as image:
            want = np.asarray(image.convert("RGB" if x.shape[0] == 3 else "L").resize(x.shape[1:][::-1], Image.LANCZOS))
        error = np.abs(x.permute(1, 2, 0).numpy().astype(int) - want.reshape(*x.shape[1:], -1).astype(int)).mean()
        assert error < (8 if name.endswith(".jpg") else 1), (name, error)  # JPEG quality 90; PNG lossless
    assert shrunk > 5
    assert Manifest.read(str(tmp_path / "p")).options["max_side"] == 100
    with pytest.raises(ValueError, match="max_side shrinks the images of an encoded pack"):
        pack(photos, tmp_path / "q", max_side=100)
    with pytest.raises(ValueError, match="max_side must be"):
        pack(photos, tmp_path / "q", encoded=True, max_side=0)


@pytest.mark.parametrize("encoded", [True, False])
def test_chunked_loader_labels_a_pack_through_its_target_transform(photos, tmp_path, encoded):
    dst = tmp_path / "p"
    pack(photos, dst, encoded=encoded, size=None if encoded else 16, num_workers=0, progress=False)
    options = {"decode": CenterCrop(16)} if encoded else {}
    ds = PackedDataset(dst, target_transform=lambda y: y + 100, **options)
    loader = ChunkedLoader(ds, 8, ram_budget="128KiB", block_size=1, seed=0, num_workers=0)
    try:
        labels = sorted(int(y) for _, ys in loader for y in ys)
    finally:
        loader.close()
    assert labels == sorted(int(ds[i][1]) for i in range(N)) and min(labels) >= 100


def test_a_rerun_with_another_max_side_is_another_pack(photos, tmp_path):
    pack(photos, tmp_path / "p", encoded=True, max_side=60, num_workers=0, progress=False)
    with pytest.raises(FileExistsError, match="differs in max_side"):
        pack(photos, tmp_path / "p", encoded=True, num_workers=0, progress=False)


def test_an_encoded_pack_of_nothing_readable_says_so_and_an_empty_batch_has_the_samples_shape(packed, tmp_path):
    (tmp_path / "src" / "c").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "src" / "c" / name).write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="no sample of the source could be read; nothing to pack: .*a.jpg"):
        pack(tmp_path / "src", tmp_path / "p", encoded=True, num_workers=0, progress=False, on_error="skip")
    assert not (tmp_path / "p" / MANIFEST).exists()
    x, y = PackedDataset(packed, decode=CenterCrop(12)).gather([])
    assert x.shape == (0, 3, 12, 12) and y.shape == (0,)
