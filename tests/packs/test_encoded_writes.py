"""How an encoded pack's shards are written: gathered writes, finished on another thread.

``write_all`` resumes short writes and splits more parts than one ``writev`` takes; a
shard whose sync fails stops the pack with the disk's error and leaves nothing that
loads.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import pytest
from PIL import Image

from torchloader import PackedDataset, PathDataset, SampleLoadError, pack
from torchloader.packs import _encoded
from torchloader.packs.format import MANIFEST
from torchloader.packs.verify import verify_pack


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("writes") / "photos"
    rng = np.random.default_rng(1)
    for i in range(24):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (int(rng.integers(8, 60)), int(rng.integers(8, 60)), 3), np.uint8)
        Image.fromarray(pixels).save(root / f"c{i % 2}" / f"{i:02d}.jpg", quality=90)
    return root


def test_short_writes_and_more_parts_than_one_writev_takes_are_all_written(tmp_path, monkeypatch):
    parts = [bytes([i % 251]) * (i % 7) for i in range(3 * _encoded._IOV_MAX + 5)]
    writev, calls = os.writev, []

    def short(fd, buffers):
        calls.append(len(buffers))
        assert len(buffers) <= _encoded._IOV_MAX
        return writev(fd, [bytes(buffers[0])[:3]])  # at most 3 bytes a call

    monkeypatch.setattr(os, "writev", short)
    with open(tmp_path / "out", "wb") as f:
        _encoded.write_all(f.fileno(), parts)
    assert (tmp_path / "out").read_bytes() == b"".join(parts) and len(calls) > len(parts) // 2


def test_a_pack_in_many_shards_equals_its_files_byte_for_byte(photos, tmp_path):
    pack(photos, tmp_path / "p", encoded=True, num_workers=2, progress=False, shard_bytes="4KiB")
    ds, files = PackedDataset(tmp_path / "p"), PathDataset.from_folder(photos)
    assert len(ds.manifest.shards) > 5 and verify_pack(str(tmp_path / "p")) == []
    for i in range(len(files)):
        assert np.array_equal(ds[i][0], files[i][0])


def test_a_shard_that_cannot_be_synced_stops_the_pack_with_the_disks_error(photos, tmp_path, monkeypatch):
    fsync, synced = os.fsync, []

    def full(fd):
        synced.append(fd)
        if len(synced) == 2:
            raise OSError(errno.EIO, "Input/output error")
        fsync(fd)

    monkeypatch.setattr(_encoded.os, "fsync", full)
    with pytest.raises(OSError, match="Input/output error"):
        pack(photos, tmp_path / "p", encoded=True, num_workers=2, progress=False, shard_bytes="4KiB")
    assert not (tmp_path / "p" / MANIFEST).exists()
    monkeypatch.setattr(_encoded.os, "fsync", fsync)
    assert pack(photos, tmp_path / "p", encoded=True, progress=False, shard_bytes="4KiB").samples == 24
    assert verify_pack(str(tmp_path / "p")) == [] and not [n for n in os.listdir(tmp_path / "p") if "partial" in n]


def test_one_shard_finishes_at_a_time_while_the_next_fills(photos, tmp_path, monkeypatch):
    fsync, partial_peak = os.fsync, []

    def slow(fd):  # a slow destination disk: filling outruns finishing
        partial_peak.append(sum(n.endswith(".partial") for n in os.listdir(tmp_path / "p")))
        time.sleep(0.02)
        fsync(fd)

    monkeypatch.setattr(_encoded.os, "fsync", slow)
    pack(photos, tmp_path / "p", encoded=True, num_workers=2, progress=False, shard_bytes="1KiB")
    assert len(partial_peak) > 10 and max(partial_peak) <= 2  # the one finishing and the one filling
    assert verify_pack(str(tmp_path / "p")) == []


def test_a_shard_that_cannot_be_created_stops_the_pack_and_the_one_before_it_finishes(photos, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "shard-00001.npy.partial").mkdir()  # shard 1 cannot be created
    with pytest.raises(IsADirectoryError, match="shard-00001.npy.partial"):
        pack(photos, tmp_path / "p", encoded=True, num_workers=2, progress=False, shard_bytes="4KiB")
    assert (tmp_path / "p" / "shard-00000.npy").exists() and not (tmp_path / "p" / MANIFEST).exists()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("torchloader-pack-finish")]
    (tmp_path / "p" / "shard-00001.npy.partial").rmdir()
    assert pack(photos, tmp_path / "p", encoded=True, progress=False, shard_bytes="4KiB").samples == 24


def test_a_file_that_cannot_be_skipped_stops_a_skipping_pack(photos, tmp_path, monkeypatch):
    size_of, bad = _encoded.image_size, PathDataset.from_folder(photos).path(5)

    def out_of_memory(data, path):
        if path == bad:
            raise MemoryError("no memory for its header")  # about the machine, not the file
        return size_of(data, path)

    monkeypatch.setattr(_encoded, "image_size", out_of_memory)
    with pytest.raises(SampleLoadError, match="no memory for its header"):
        pack(photos, tmp_path / "p", encoded=True, on_error="skip", progress=False)


def test_an_interrupted_pack_waits_for_the_finish_in_flight_through_a_second_interrupt(monkeypatch):
    calls = []

    def interrupted_once(futures):
        calls.append(len(futures))
        if len(calls) == 1:
            raise KeyboardInterrupt  # the second Ctrl-C, while the pack waits
        return wait(futures)

    monkeypatch.setattr(_encoded, "wait", interrupted_once)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(time.sleep, 0.2)
        _encoded._wait_through_interrupts([future])
        assert future.done() and calls == [1, 1]
