"""A pack under concurrency and damage: correct data or an error naming the file.

Each test builds the real situation: two packing processes racing for one folder,
a pack rebuilt under an open ``PackedDataset`` (and under DataLoader workers),
bytes flipped and files truncated in place, names with newlines and bytes that
are not UTF-8, a folder that is not a pack's, and a full disk (a real, small
tmpfs, mounted in a private mount namespace so nothing outlives the test).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import IGNORE_FORK_WARNING, china, wait_until
from PIL import Image
from torch.utils.data import DataLoader

import torchloader.packs._maps as pack_maps
import torchloader.packs._writer as pack_writer
from torchloader import PackedDataset, pack, verify_pack
from torchloader.packs._destination import pack_lock
from torchloader.packs.format import read_sources

pytestmark = IGNORE_FORK_WARNING


def photos(root, count=40, size=16):
    """``root/<a|b>/<i>.png``: distinct crops of the sample photograph."""
    photo = china()
    for i in range(count):
        path = root / ("a", "b")[i % 2] / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        top, left = 7 * i % (photo.shape[0] - size), 11 * i % (photo.shape[1] - size)
        Image.fromarray(photo[top : top + size, left : left + size]).save(path)
    return root


def stored(root):
    ds = PackedDataset(root)
    return ds.gather(np.arange(len(ds)))


def assert_same(a, b):
    assert all(torch.equal(x, y) for x, y in zip(stored(a), stored(b)))


def _forked(target, *args):
    process = multiprocessing.get_context("fork").Process(target=target, args=args)
    process.start()
    return process


def _pack_quietly(src, dst, shard_bytes):
    pack(src, dst, shard_bytes=shard_bytes, num_workers=0, progress=False)


# --- two packs into one folder ---------------------------------------------------------


def test_two_packs_racing_into_one_folder_both_succeed_with_one_correct_pack(tmp_path):
    src = photos(tmp_path / "src", count=120)
    pack(src, tmp_path / "reference", shard_bytes="24KiB", num_workers=0, progress=False)
    for trial in range(3):  # before the lock, 4 of 15 such races left zeroed images behind
        dst = tmp_path / f"dst{trial}"
        racers = [_forked(_pack_quietly, str(src), str(dst), "24KiB") for _ in range(2)]
        for racer in racers:
            racer.join(60)
        assert [r.exitcode for r in racers] == [0, 0]
        assert verify_pack(str(dst)) == []
        assert_same(dst, tmp_path / "reference")


def _first_pack(done, dst, go):
    """Hold the lock as a running pack does; on ``go``, finish with the files of ``done``."""
    with pack_lock(dst):
        open(os.path.join(dst, "held"), "w").close()  # (not a pack's file: the test removes it)
        wait_until(lambda: os.path.exists(go), seconds=30)
        for name in os.listdir(done):
            if name != ".pack.lock":
                shutil.copy(os.path.join(done, name), os.path.join(dst, name))


def _second_pack(log, src, dst):
    handler = logging.FileHandler(log)
    logging.getLogger("torchloader").addHandler(handler)
    summary = pack(src, dst, num_workers=0, progress=False)
    handler.flush()
    os._exit(0 if summary.already_packed else 3)


def test_a_second_pack_waits_for_the_first_then_reuses_what_it_made(tmp_path):
    src = photos(tmp_path / "src", count=6)
    pack(src, tmp_path / "done", num_workers=0, progress=False)
    dst, log, go = tmp_path / "dst", tmp_path / "log", tmp_path / "go"
    dst.mkdir()
    # (processes of their own: a forked child shares its parent's flock, as pack's own workers do)
    first = _forked(_first_pack, str(tmp_path / "done"), str(dst), str(go))
    wait_until(lambda: (dst / "held").exists())
    os.remove(dst / "held")  # else the second pack refuses a folder holding other files
    second = _forked(_second_pack, str(log), str(src), str(dst))
    wait_until(lambda: log.exists() and "waiting for it to finish" in log.read_text())
    assert f"another pack is writing into '{dst}' (pid {first.pid} on " in log.read_text()
    assert second.exitcode is None  # it waits
    go.touch()  # the first pack finishes
    first.join(30)
    second.join(30)
    assert (first.exitcode, second.exitcode) == (0, 0)  # the second found the pack made: reused
    assert_same(dst, tmp_path / "done")


def test_a_shard_written_into_by_someone_else_is_refused_not_published(tmp_path, monkeypatch):
    src = photos(tmp_path / "src", count=8)
    certify = pack_writer._certified_sha256

    def clobbered(dst, path, *rest):  # another process zeroes rows after they were written (and hashed)
        with open(path, "r+b") as f:
            f.seek(-100, os.SEEK_END)
            f.write(bytes(100))
        return certify(dst, path, *rest)

    monkeypatch.setattr(pack_writer, "_certified_sha256", clobbered)
    with pytest.raises(RuntimeError) as err:
        pack(src, tmp_path / "dst", num_workers=0, progress=False)
    partial = tmp_path / "dst" / "shard-00000.npy.partial"
    assert str(err.value) == (
        f"'{partial}' does not hold the samples 0..7 this pack decoded: another process wrote "
        f"into '{tmp_path / 'dst'}' meanwhile. Nothing was published; make sure one pack at a "
        f"time writes there and run it again"
    )
    assert sorted(os.listdir(tmp_path / "dst")) == [".pack.lock"]


# --- the destination -------------------------------------------------------------------


def test_a_destination_holding_other_files_is_refused_even_with_overwrite(tmp_path):
    src = photos(tmp_path / "src", count=4)
    with pytest.raises(FileExistsError) as err:
        pack(src, src, num_workers=0, progress=False, overwrite=True)  # into the image folder itself
    assert str(err.value) == (
        f"'{src}' holds files that are not part of a pack (a, b); pack into a new or empty "
        f"folder, e.g. '{src}.packed' (a pack owns its folder, and --overwrite replaces a "
        f"pack, never other files)"
    )
    assert sorted(os.listdir(src)) == ["a", "b"]


def test_verify_on_a_folder_that_is_not_a_pack_does_not_suggest_packing_into_it(tmp_path):
    src = photos(tmp_path / "src", count=4)
    with pytest.raises(FileNotFoundError) as err:
        verify_pack(str(src))
    assert str(err.value) == (
        f"'{src}' has no manifest.json and holds other files (a, b): it is not a packed "
        f"data set; pack it into a new folder with `torchloader pack '{src}' DST`"
    )


# --- a pack rebuilt under its readers --------------------------------------------------


def test_a_reader_opened_before_a_rebuild_refuses_the_new_files(tmp_path):
    src = photos(tmp_path / "src", count=8)
    dst = tmp_path / "dst"
    pack(src, dst, num_workers=0, progress=False)
    mapped, unmapped = PackedDataset(dst), PackedDataset(dst)
    before = mapped.gather(np.arange(8))

    pack(src, dst, size=8, overwrite=True, num_workers=0, progress=False)  # other pixels, same folder

    after = mapped.gather(np.arange(8))  # maps made before the rebuild: the pack it opened
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    with pytest.raises(ValueError) as err:
        unmapped[0]
    assert str(err.value) == (
        f"'{dst}' was packed again (or is being packed) since this PackedDataset opened it: "
        f"its files now hold other samples than the manifest it read. Open it again "
        f"(PackedDataset('{dst}')) once the pack has finished"
    )
    assert PackedDataset(dst)[0][0].shape == (3, 8, 8)


def test_dataloader_workers_of_a_later_epoch_refuse_a_rebuilt_pack(tmp_path):
    src = photos(tmp_path / "src", count=8)
    dst = tmp_path / "dst"
    pack(src, dst, num_workers=0, progress=False)
    loader = DataLoader(PackedDataset(dst), batch_size=4, num_workers=1, multiprocessing_context="fork")
    assert len(list(loader)) == 2  # epoch 0
    pack(src, dst, size=8, overwrite=True, num_workers=0, progress=False)
    batches = iter(loader)  # epoch 1: a new worker maps the files anew
    with pytest.raises(ValueError, match="was packed again"):
        next(batches)
    batches._shutdown_workers()


# --- damage: flipped bytes, files truncated in place ----------------------------------


def flip_last_byte(path):
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        byte = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([byte[0] ^ 1]))


@pytest.fixture
def packed(tmp_path):
    pack(photos(tmp_path / "src", count=8), tmp_path / "dst", shard_bytes="2KiB", num_workers=0, progress=False)
    return tmp_path / "dst"


def test_a_flipped_byte_in_the_labels_is_refused_at_open(packed):
    flip_last_byte(packed / "labels.npy")
    with pytest.raises(ValueError, match=r"labels.npy' does not match its checksum in the manifest"):
        PackedDataset(packed)


def test_a_flipped_byte_in_the_manifest_is_refused(packed):
    text = (packed / "manifest.json").read_text()
    (packed / "manifest.json").write_text(text.replace('"a"', '"A"', 1))  # a class renamed
    with pytest.raises(ValueError, match="was changed after it was written"):
        PackedDataset(packed)


def test_a_flipped_byte_in_a_shard_is_refused_with_verify_and_named_by_verify_pack(packed):
    flip_last_byte(packed / "shard-00001.npy")
    assert len(PackedDataset(packed)) == 8  # by default only sizes: served (documented)
    with pytest.raises(ValueError, match=r"shard-00001.npy' does not match its checksum"):
        PackedDataset(packed, verify=True)
    assert verify_pack(str(packed)) == [
        f"'{packed / 'shard-00001.npy'}' has a different checksum than the manifest: its bytes changed"
    ]


def test_a_shard_truncated_in_place_while_mapped_is_named_before_it_is_read(packed, monkeypatch):
    ds = PackedDataset(packed)
    ds.gather([0, 7])  # mapped
    path = packed / "shard-00001.npy"
    size = path.stat().st_size
    os.truncate(path, size // 2)  # as cp or rsync --inplace over the pack would, at a moment
    monkeypatch.setattr(pack_maps, "RECHECK_SECONDS", 0.0)  # (else: within a second)
    with pytest.raises(ValueError) as err:
        ds.gather([0, 7])  # reading the cut rows would end this process with SIGBUS
    assert f"'{path}' was truncated in place to {size // 2} of its {size} bytes while mapped" in str(err.value)
    with pytest.raises(ValueError, match=r"is \d+ bytes, its header and the manifest need"):
        PackedDataset(packed)  # and at open


# --- names -----------------------------------------------------------------------------


def test_names_with_newlines_and_backslashes_keep_one_line_per_sample(tmp_path):
    src = photos(tmp_path / "src", count=2)
    os.rename(src / "a" / "000.png", src / "a" / "x\ny.png")
    os.rename(src / "b" / "001.png", src / "b" / "back\\slash\r.png")
    pack(src, tmp_path / "dst", num_workers=0, progress=False)
    assert read_sources(str(tmp_path / "dst")) == [str(src / "a" / "x\ny.png"), str(src / "b" / "back\\slash\r.png")]
    assert (tmp_path / "dst" / "sources.txt").read_bytes().count(b"\n") == 2


def test_a_skipped_file_whose_name_is_not_utf8_is_listed_and_the_pack_completes(tmp_path):
    src = photos(tmp_path / "src", count=2)
    bad = os.path.join(os.fsencode(src / "a"), b"bad\xff.png")
    with open(bad, "wb") as f:
        f.write(b"not an image")
    summary = pack(src, tmp_path / "dst", num_workers=0, progress=False, on_error="skip")
    assert summary.samples == 2 and [s["path"] for s in summary.skipped] == [os.fsdecode(bad)]
    assert "skipped " + os.fsdecode(bad) in str(summary)
    assert os.fsdecode(bad) not in read_sources(str(tmp_path / "dst"))
    assert PackedDataset(tmp_path / "dst").manifest.skipped[0]["path"] == os.fsdecode(bad)


# --- a full disk -----------------------------------------------------------------------

FULL_DISK = """
set -e
mount -t tmpfs -o size=256k tmpfs "$DISK"
set +e
"$PYTHON" -m torchloader pack "$SRC" "$DISK/dst" --workers 0 --quiet
echo "rc=$?"
ls -A "$DISK/dst"
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux) for a private tmpfs")
def test_a_full_disk_names_the_folder_and_the_space_and_leaves_no_partial_file(tmp_path):
    src = photos(tmp_path / "src", count=12, size=96)  # 12 x 27 KiB of pixels: more than 256 KiB
    disk = tmp_path / "disk"
    disk.mkdir()
    env = {**os.environ, "DISK": str(disk), "SRC": str(src), "PYTHON": sys.executable}
    run = subprocess.run(
        ["unshare", "-rm", "sh", "-c", FULL_DISK], env=env, capture_output=True, text=True, timeout=120
    )
    if "rc=" not in run.stdout:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {run.stderr.strip()[-200:]}")
    rc, *listing = run.stdout.split()
    assert rc == "rc=1"
    assert f"packing into '{disk}/dst' failed writing '" in run.stderr
    assert "No space left on device (the pack needs about 324.0 KiB, " in run.stderr
    assert "run the same command again" in run.stderr
    assert not [name for name in listing if name.endswith(".partial")], listing
    assert not os.listdir(disk)  # the tmpfs was private to the namespace: gone with it
