"""Tests for how ``pack`` writes fast (``_blocks.py``, ``_digest.py``, ``PackSource.read_into``):
JPEGs decoded in place give ``PathDataset``'s pixels and errors, the row checksums
catch what they are for, shards hashed as they are written verify, and the
garbage collector is left as it was. No timing is checked here.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import torch
from helpers import IGNORE_FORK_WARNING, china, deadline
from PIL import Image

import torchloader.packs._blocks as pack_blocks
import torchloader.packs._digest as pack_digest
import torchloader.packs._writer as pack_writer
from torchloader import PackedDataset, PathDataset, Resize, SampleLoadError, pack, verify_pack
from torchloader.packs._source import PackSource

ROW = 12 * 16 * 3  # bytes of one stored 12 x 16 RGB image


def jpegs(root, count=9, big=(), grey=()):
    """``root/<a|b>/<i>.jpg``: distinct 12 x 16 crops; those in ``big`` are 24 x 32, those in ``grey`` greyscale."""
    photo = china()
    for i in range(count):
        h, w = (24, 32) if i in big else (12, 16)
        path = root / ("a", "b")[i % 2] / f"{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(photo[9 * i : 9 * i + h, 13 * i : 13 * i + w])
        (image.convert("L") if i in grey else image).save(path, quality=90)
    return root


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def run(src, dst, **kwargs):
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("progress", False)
    return pack(str(src), str(dst), **kwargs)


def everything(dst):
    ds = PackedDataset(dst)
    return ds.gather(np.arange(len(ds)))


@pytest.fixture
def fast(monkeypatch):
    """The indices that ``PackSource.read_into`` decoded in place (a pack in this process)."""
    done = []
    read_into = PackSource.read_into

    def spy(self, index, out):
        ok = read_into(self, index, out)
        if ok:
            done.append(index)
        return ok

    monkeypatch.setattr(PackSource, "read_into", spy)
    return done


# --- pixels and errors as PathDataset's -----------------------------------------------


@pytest.mark.parametrize("size, crop", [(None, False), ((12, 16), False), ((12, 16), True)])
def test_jpegs_of_the_stored_size_are_decoded_in_place_with_path_datasets_pixels(tmp_path, fast, size, crop):
    src = jpegs(tmp_path / "src", grey=(4,))
    transform = None if size is None else Resize(size, crop=crop)
    want = PathDataset.from_folder(str(src), transform=transform)

    run(src, tmp_path / "dst", size=size, crop=crop)

    x, y = everything(tmp_path / "dst")
    assert torch.equal(x, torch.stack([want[i][0] for i in range(9)]))
    assert y.tolist() == want.labels.tolist()
    assert fast == list(range(9))  # a grey JPEG too: libjpeg-turbo's RGB of it is Pillow's


def test_images_that_need_resizing_are_read_the_ordinary_way_and_the_others_still_in_place(tmp_path, fast):
    src = jpegs(tmp_path / "src", count=12, big=(0, 5))
    want = PathDataset.from_folder(str(src), transform=Resize((12, 16)))

    run(src, tmp_path / "dst", size=(12, 16))

    assert torch.equal(everything(tmp_path / "dst")[0], torch.stack([want[i][0] for i in range(12)]))
    big = [i for i in range(12) if os.path.basename(want.path(i)) in ("00.jpg", "05.jpg")]
    assert fast == [i for i in range(12) if i not in big]  # an odd file does not turn the fast path off


def test_after_8_files_in_a_row_that_do_not_fit_the_fast_path_is_tried_on_one_in_64():
    ds = PackSource(PathDataset([f"/nowhere/{i}.jpg" for i in range(200)]), images=True)
    tried = []
    ds._into = lambda path, out: tried.append(path) or False  # nothing fits

    assert not any(ds.read_into(i, np.empty((2, 2, 3), np.uint8)) for i in range(200))
    assert tried == [f"/nowhere/{i}.jpg" for i in (*range(8), 63, 127, 191)]


@pytest.mark.parametrize("size", [None, (12, 16)])
def test_a_truncated_jpeg_on_the_fast_path_fails_in_path_datasets_words(tmp_path, size):
    src = jpegs(tmp_path / "src")
    truncate(src / "b" / "03.jpg")
    ds = PathDataset.from_folder(str(src), transform=None if size is None else Resize(size))
    index = [ds.path(i) for i in range(9)].index(str(src / "b" / "03.jpg"))
    with pytest.raises(SampleLoadError) as want:
        ds[index]

    with pytest.raises(SampleLoadError) as err:
        run(src, tmp_path / "dst", size=size)
    assert str(err.value) == str(want.value) and str(src / "b" / "03.jpg") in str(err.value)
    assert (err.value.index, err.value.path) == (index, str(src / "b" / "03.jpg"))

    summary = run(src, tmp_path / "dst", size=size, on_error="skip")
    assert summary.skipped == [{"path": str(src / "b" / "03.jpg"), "error": str(want.value)}]
    kept = [i for i in range(9) if i != index]
    assert torch.equal(everything(tmp_path / "dst")[0], torch.stack([ds[i][0] for i in kept]))
    assert verify_pack(str(tmp_path / "dst")) == []


# --- blocks, runs and shards ----------------------------------------------------------


@IGNORE_FORK_WARNING
def test_two_workers_write_the_bytes_of_one_with_runs_blocks_shards_and_skips(tmp_path, monkeypatch):
    src = jpegs(tmp_path / "src", count=23, big=(7,))
    truncate(src / "a" / "10.jpg")
    monkeypatch.setattr(pack_blocks, "_RUN_BYTES", 2 * ROW)  # runs of 2 rows ...
    monkeypatch.setattr(pack_writer, "_BLOCK_BYTES", 5 * ROW)  # ... in blocks of 5 ...
    monkeypatch.setattr(pack_digest, "_PIECE_BYTES", 3 * ROW)  # (read back 3 rows at a time)
    options = dict(size=(12, 16), shard_bytes=8 * ROW, on_error="skip")  # ... in shards of 8

    serial = run(src, tmp_path / "serial", **options)
    with deadline(60):
        parallel = run(src, tmp_path / "parallel", num_workers=2, **options)

    assert serial.samples == parallel.samples == 22 and serial.skipped == parallel.skipped
    names = sorted(os.listdir(tmp_path / "serial"))
    assert names == sorted(os.listdir(tmp_path / "parallel"))
    for name in names:
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "parallel" / name).read_bytes(), name
    assert verify_pack(str(tmp_path / "serial")) == []
    want = PathDataset.from_folder(str(src), transform=Resize((12, 16)))
    kept = [i for i in range(23) if want.path(i) != str(src / "a" / "10.jpg")]
    assert torch.equal(everything(tmp_path / "parallel")[0], torch.stack([want[i][0] for i in kept]))


def test_a_shard_written_into_before_it_is_hashed_is_refused(tmp_path, monkeypatch):
    src = jpegs(tmp_path / "src", count=4)
    add = pack_digest.ShardDigest.add

    def clobbered(self, block):  # another process zeroes a row before the main process hashes it
        with open(self.path, "r+b") as f:
            f.seek(self.offset + ROW)
            f.write(bytes(ROW))
        add(self, block)

    monkeypatch.setattr(pack_digest.ShardDigest, "add", clobbered)
    with pytest.raises(RuntimeError, match=r"does not hold the samples 0\.\.3 this pack decoded"):
        run(src, tmp_path / "dst")
    assert sorted(os.listdir(tmp_path / "dst")) == [".pack.lock"]


# --- the row checksums ----------------------------------------------------------------


@pytest.mark.parametrize("width", [0, 1, 6, 105, 4096])
def test_row_checks_tell_apart_rows_with_one_word_changed_or_two_swapped(width):
    rows = np.random.default_rng(width).integers(0, 256, (3, width), dtype=np.uint8)
    checks = pack_blocks.row_checks(rows)
    assert checks.dtype == np.uint64 and checks.shape == (3,)
    assert np.array_equal(checks, pack_blocks.row_checks(rows.copy()))
    if width == 0:
        return
    changed = rows.copy()
    changed[1, width // 2] ^= 1
    assert (pack_blocks.row_checks(changed) != checks).tolist() == [False, True, False]
    changed = rows.copy()
    changed[1, width // 2] ^= 0x80  # a top bit: a weight times 2**63 is still 2**63
    assert (pack_blocks.row_checks(changed) != checks).tolist() == [False, True, False]
    if width >= 16:
        swapped = rows.copy()
        swapped[2, :8], swapped[2, 8:16] = rows[2, 8:16], rows[2, :8]
        assert (pack_blocks.row_checks(swapped) != checks).tolist() == [False, False, True]
    assert np.array_equal(pack_blocks.row_checks(rows[::-1].copy()), checks[::-1])


# --- the process's state --------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_pack_leaves_the_callers_garbage_collector_as_it_was(tmp_path, monkeypatch, enabled):
    src = jpegs(tmp_path / "src", count=3)
    seen = []
    write_block = pack_writer._write_block
    monkeypatch.setattr(pack_writer, "_write_block", lambda task: seen.append(gc.isenabled()) or write_block(task))
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        run(src, tmp_path / "dst")
        assert gc.isenabled() == enabled and seen == [enabled]  # a library call changes no process state
    finally:
        (gc.enable if was else gc.disable)()
