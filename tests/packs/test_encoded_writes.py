"""How an encoded pack's shards are written: gathered writes, finished on another thread.

``write_all`` resumes short writes and splits more parts than one ``writev`` takes; a
shard whose sync fails stops the pack with the disk's error and leaves nothing that
loads.
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from PIL import Image

from torchloader import PackedDataset, PathDataset, pack
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
