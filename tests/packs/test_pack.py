"""Tests for torchloader/packs/pack.py and _writer.py: ``pack`` and ``PackSummary``.

Sources are a few crops of the sample photograph (PNG and JPEG) or small .npy
files in ``tmp_path``; every pack runs in this process (``num_workers=0``) except
where parallel writing itself is under test.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re

import numpy as np
import pytest
import torch
from helpers import IGNORE_FORK_WARNING, china, deadline, wait_until
from PIL import Image

import torchloader.packs._writer as pack_writer
from torchloader import (
    ImageReader,
    PackedDataset,
    PackSummary,
    PathDataset,
    Resize,
    SampleLoadError,
    SuffixReader,
    pack,
)
from torchloader.packs.format import Manifest
from torchloader.readers.suffix import IMAGE_SUFFIXES


def image_folder(root, suffix=".png", count=6):
    """``root/<cat|dog>/<i><suffix>``: crops of the photo, wide ones first, tall ones last."""
    for i in range(count):
        path = root / ("cat", "dog")[i % 2] / f"{i}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(china()[10 * i : 10 * i + 20 + 3 * i, 40 : 70 - 2 * i]).save(path)
    return str(root)


def npy_folder(root, arrays):
    root.mkdir(parents=True, exist_ok=True)
    for i, array in enumerate(arrays):
        np.save(root / f"{i:03d}.npy", array)
    return str(root)


def run(src, dst, **kwargs):
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("progress", False)
    return pack(src, str(dst), **kwargs)


def everything(ds):
    """All samples of a packed data set as one batch."""
    return ds.gather(np.arange(len(ds)))


def stacked(ds):
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.stack(ys)


def sources(dst):
    return (dst / "sources.txt").read_text().splitlines()


def listing(dst):
    """The pack's files (without its lock file, ``.pack.lock``: see test_pack_folder)."""
    return sorted(name for name in os.listdir(dst) if name != ".pack.lock")


def corrupt(root):
    """A truncated JPEG and a text file named .png, one in each class."""
    Image.open(root / "cat" / "0.png").save(root / "cat" / "truncated.jpg")
    jpeg = (root / "cat" / "truncated.jpg").read_bytes()
    (root / "cat" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "dog" / "notes.png").write_text("not an image")
    return [str(root / "cat" / "truncated.jpg"), str(root / "dog" / "notes.png")]


# --- what is packed is what PathDataset reads ---------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("crop", [False, True])
def test_pixels_equal_path_dataset_with_the_same_resize(tmp_path, suffix, mode, crop):
    src = image_folder(tmp_path / "src", suffix)
    reader = SuffixReader({s: ImageReader(mode) for s in IMAGE_SUFFIXES})
    want = PathDataset.from_folder(src, reader=reader, transform=Resize((12, 16), crop=crop))

    run(src, tmp_path / "dst", size=(12, 16), crop=crop, mode=mode)
    ds = PackedDataset(tmp_path / "dst")

    x, y = everything(ds)
    want_x, want_y = stacked(want)
    assert x.shape == (6, 1 if mode == "L" else 3, 12, 16) and x.dtype == torch.uint8
    assert torch.equal(x, want_x) and torch.equal(y, want_y)
    assert ds.classes == want.classes == ["cat", "dog"]
    assert sources(tmp_path / "dst") == [want.path(i) for i in range(len(want))]


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8, np.float64, np.bool_, ">i4"])
def test_npy_arrays_come_back_exactly_in_any_dtype(tmp_path, dtype):
    rng = np.random.default_rng(0)
    arrays = [(rng.standard_normal((3, 2, 5)) * 1000).astype(dtype) for _ in range(7)]
    src = npy_folder(tmp_path / "arrays", arrays)

    run(src, tmp_path / "dst", shard_bytes=3 * 2 * 5 * np.dtype(dtype).itemsize * 3)
    ds = PackedDataset(tmp_path / "dst")

    assert len(ds) == 7 and len(ds.manifest.shards) == 3
    assert ds.labels is None and ds.classes is None
    assert np.array_equal(everything(ds).numpy(), np.stack(arrays))
    assert everything(ds).numpy().dtype == np.dtype(dtype).newbyteorder("=")
    assert np.array_equal(ds[4].numpy(), arrays[4])  # no label: x alone


def test_class_folders_of_arrays_pack_with_labels(tmp_path):
    for name, value in (("a", 1.5), ("b", -2.0)):
        npy_folder(tmp_path / "src" / name, [np.full(4, value, np.float32)] * 2)

    run(str(tmp_path / "src"), tmp_path / "dst")
    ds = PackedDataset(tmp_path / "dst")

    assert ds.classes == ["a", "b"] and ds.labels.tolist() == [0, 0, 1, 1]
    assert everything(ds)[0][:, 0].tolist() == [1.5, 1.5, -2.0, -2.0]


def test_a_csv_packs_its_rows_in_order_with_their_labels(tmp_path):
    image_folder(tmp_path / "img")
    csv = tmp_path / "rows.csv"
    csv.write_text("path,label\nimg/dog/5.png,dog\nimg/cat/0.png,cat\nimg/dog/1.png,dog\n")
    want = PathDataset.from_csv(csv, transform=Resize(8))

    run(str(csv), tmp_path / "dst", size=8)
    ds = PackedDataset(tmp_path / "dst")

    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [1, 0, 1]
    assert torch.equal(everything(ds)[0], stacked(want)[0])
    assert sources(tmp_path / "dst") == [want.path(i) for i in range(3)]


# --- the files written ---------------------------------------------------------------


def test_shards_are_uint8_nhwc_npy_files_of_shard_size(tmp_path):
    src = image_folder(tmp_path / "src", count=5)

    summary = run(src, tmp_path / "dst", size=(4, 6), shard_bytes=2 * 4 * 6 * 3)

    shards = [np.load(tmp_path / "dst" / f"shard-{k:05d}.npy", allow_pickle=False) for k in range(3)]
    assert [s.shape for s in shards] == [(2, 4, 6, 3), (2, 4, 6, 3), (1, 4, 6, 3)]
    assert all(s.dtype == np.uint8 for s in shards)
    labels = np.load(tmp_path / "dst" / "labels.npy", allow_pickle=False)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 0, 1, 1]
    assert listing(tmp_path / "dst") == [
        "labels.npy",
        "manifest.json",
        "shard-00000.npy",
        "shard-00001.npy",
        "shard-00002.npy",
        "sources.txt",
    ]
    assert summary.bytes == sum(os.path.getsize(tmp_path / "dst" / f"shard-{k:05d}.npy") for k in range(3))


def test_the_manifest_describes_the_pack(tmp_path):
    src = image_folder(tmp_path / "src", count=5)

    run(src, tmp_path / "dst", size=(4, 6), crop=True, shard_bytes="160B")
    manifest = Manifest.read(str(tmp_path / "dst"))

    assert (manifest.format, manifest.version) == ("torchloader.pack", 1)
    assert manifest.count == 5 and manifest.sample_shape == [4, 6, 3] and manifest.dtype == "|u1"
    assert manifest.classes == ["cat", "dog"] and manifest.skipped == []
    assert manifest.options == {
        "source": os.path.abspath(src),
        "size": [4, 6],
        "crop": True,
        "mode": "RGB",
        "shard_bytes": 160,
        "layout": "HWC",
    }
    # 160 bytes hold two 72-byte samples: shards cover [0, 5) in order, without gaps
    assert [(s.start, s.stop) for s in manifest.shards] == [(0, 2), (2, 4), (4, 5)]
    for shard in manifest.shards:
        path = tmp_path / "dst" / shard.file
        assert shard.nbytes == os.path.getsize(path)
        assert np.load(path).shape[0] == shard.stop - shard.start
    assert manifest.labels["file"] == "labels.npy"


def test_the_dataset_is_created_with_its_parent_folders(tmp_path):
    run(image_folder(tmp_path / "src"), tmp_path / "a" / "b" / "dst", size=4)
    assert len(PackedDataset(tmp_path / "a" / "b" / "dst")) == 6


_write_block = pack_writer._write_block


def write_block_in_company(task):
    """``_write_block`` that first waits until two processes run one: proof of parallel work.

    Module-level so that it pickles (by name) into the worker processes.
    """
    folder = os.environ["TORCHLOADER_TEST_PIDS"]
    open(os.path.join(folder, str(os.getpid())), "w").close()
    wait_until(lambda: len(os.listdir(folder)) >= 2)
    return _write_block(task)


@IGNORE_FORK_WARNING
def test_two_workers_write_the_same_files_as_none(tmp_path, monkeypatch):
    src = image_folder(tmp_path / "src", count=9)
    corrupt(tmp_path / "src")
    monkeypatch.setattr(pack_writer, "_BLOCK_BYTES", 2 * 5 * 7 * 3)  # blocks of 2 inside shards of 4
    options = dict(size=(5, 7), shard_bytes=4 * 5 * 7 * 3, on_error="skip")
    serial = run(src, tmp_path / "serial", num_workers=0, **options)
    (tmp_path / "pids").mkdir()
    monkeypatch.setenv("TORCHLOADER_TEST_PIDS", str(tmp_path / "pids"))
    monkeypatch.setattr(pack_writer, "_write_block", write_block_in_company)

    with deadline(60):
        parallel = run(src, tmp_path / "parallel", num_workers=2, **options)

    assert len(os.listdir(tmp_path / "pids")) == 2 and str(os.getpid()) not in os.listdir(tmp_path / "pids")

    assert listing(tmp_path / "serial") == listing(tmp_path / "parallel")
    for name in listing(tmp_path / "serial"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "parallel" / name).read_bytes(), name
    assert (serial.samples, serial.bytes, serial.skipped) == (parallel.samples, parallel.bytes, parallel.skipped)
    assert serial.samples == 9 and len(serial.skipped) == 2


# --- unreadable files ------------------------------------------------------------------


def test_on_error_skip_leaves_unreadable_files_out_and_keeps_samples_aligned(tmp_path):
    src = image_folder(tmp_path / "src")
    bad = corrupt(tmp_path / "src")

    summary = run(src, tmp_path / "dst", size=(6, 8), on_error="skip", shard_bytes=3 * 6 * 8 * 3)
    ds = PackedDataset(tmp_path / "dst")

    kept = sources(tmp_path / "dst")
    assert len(ds) == len(kept) == summary.samples == 6
    assert not set(bad) & set(kept)
    assert [item["path"] for item in summary.skipped] == bad
    assert ds.manifest.skipped == summary.skipped
    assert summary.skipped[0]["error"].startswith(f"could not load sample 3 from '{bad[0]}': OSError: ")
    assert summary.skipped[1]["error"] == (
        f"could not load sample 7 from '{bad[1]}': UnidentifiedImageError: cannot identify image file '{bad[1]}'"
    )
    # labels follow the folder of each kept source, pixels the file itself
    assert ds.labels.tolist() == [ds.classes.index(os.path.basename(os.path.dirname(p))) for p in kept]
    want = PathDataset(kept, ds.labels, transform=Resize((6, 8)))
    assert torch.equal(everything(ds)[0], stacked(want)[0])


def test_skipped_files_are_listed_in_the_summary_text(tmp_path):
    src = image_folder(tmp_path / "src")
    bad = corrupt(tmp_path / "src")

    text = str(run(src, tmp_path / "dst", size=4, on_error="skip"))

    lines = text.splitlines()
    assert re.fullmatch(r"packed 6 samples, 416 B in \d+\.\d s \(\d+ samples/s\)", lines[0])
    assert [line.split(": ")[0] for line in lines[1:]] == [f"skipped {path}" for path in bad]


def test_a_shard_whose_every_file_is_unreadable_is_left_out(tmp_path):
    src = tmp_path / "src" / "a"
    src.mkdir(parents=True)
    for i in range(6):
        if i in (2, 3):
            (src / f"{i}.npy").write_text("garbage")
        else:
            np.save(src / f"{i}.npy", np.full(2, i, np.int64))

    summary = run(str(src.parent), tmp_path / "dst", shard_bytes=2 * 16, on_error="skip")
    ds = PackedDataset(tmp_path / "dst")

    assert summary.samples == 4 and len(summary.skipped) == 2
    assert [(s.file, s.start, s.stop) for s in ds.manifest.shards] == [
        ("shard-00000.npy", 0, 2),
        ("shard-00002.npy", 2, 4),
    ]
    assert "shard-00001.npy" not in listing(tmp_path / "dst")
    assert everything(ds)[0][:, 0].tolist() == [0, 1, 4, 5]


def test_images_of_different_sizes_need_a_size(tmp_path):
    src = image_folder(tmp_path / "src")
    path = os.path.join(src, "cat", "2.png")

    with pytest.raises(SampleLoadError) as err:
        run(src, tmp_path / "dst")
    assert str(err.value) == (
        f"sample 1 from '{path}' has uint8 (26, 26, 3) instead of uint8 (20, 30, 3); pass size=... to resize"
    )
    assert (err.value.index, err.value.path) == (1, path)


def test_arrays_of_different_shapes_are_skipped_by_name(tmp_path):
    arrays = [np.zeros(3, np.float32), np.zeros(4, np.float32), np.zeros(3, np.int8)]
    src = npy_folder(tmp_path / "arrays", arrays)

    summary = run(src, tmp_path / "dst", on_error="skip")

    assert summary.samples == 1
    fix = "arrays must share one shape and dtype"
    assert [item["error"] for item in summary.skipped] == [
        f"sample 1 from '{src}/001.npy' has float32 (4,) instead of float32 (3,); {fix}",
        f"sample 2 from '{src}/002.npy' has int8 (3,) instead of float32 (3,); {fix}",
    ]


def test_nothing_readable_is_nothing_to_pack(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "x.png").write_text("no")

    with pytest.raises(ValueError) as err:
        run(str(tmp_path / "src"), tmp_path / "dst", size=4, on_error="skip")
    assert str(err.value) == "no sample of the source could be read; nothing to pack"


# --- atomic: an interrupted pack never loads, and a re-run completes it ------------------


def assert_not_loadable(dst):
    with pytest.raises(FileNotFoundError) as err:
        PackedDataset(dst)
    assert str(err.value) == (
        f"'{dst}' has no manifest.json: it is not a packed data set, or its pack was "
        f"interrupted; run `torchloader pack SRC '{dst}'` (again) to complete it"
    )


def test_a_corrupt_file_stops_the_pack_and_leaves_nothing_that_loads(tmp_path):
    src = image_folder(tmp_path / "src")
    bad = corrupt(tmp_path / "src")[1]
    dst = tmp_path / "dst"

    with pytest.raises(SampleLoadError) as err:
        run(src, dst, size=4, shard_bytes=2 * 4 * 4 * 3)
    assert str(err.value).startswith("could not load sample 3 from ")
    assert_not_loadable(str(dst))
    assert not [name for name in listing(dst) if name.endswith(".partial")]

    os.remove(tmp_path / "src" / "cat" / "truncated.jpg")
    os.remove(bad)
    summary = run(src, dst, size=4, shard_bytes=2 * 4 * 4 * 3)
    assert summary.samples == 6 and not summary.already_packed
    assert len(PackedDataset(dst)) == 6


@IGNORE_FORK_WARNING
def test_a_corrupt_file_in_a_worker_stops_the_pack_the_same_way(tmp_path, monkeypatch):
    src = image_folder(tmp_path / "src")
    truncated, bad = corrupt(tmp_path / "src")
    os.remove(truncated)
    monkeypatch.setattr(pack_writer, "_BLOCK_BYTES", 2 * 4 * 4 * 3)

    with deadline(60), pytest.raises(SampleLoadError) as err:
        run(src, tmp_path / "dst", size=4, num_workers=2)
    assert str(err.value) == (
        f"could not load sample 6 from '{bad}': UnidentifiedImageError: cannot identify image file '{bad}'"
    )
    assert (err.value.index, err.value.path) == (6, bad)
    assert_not_loadable(str(tmp_path / "dst"))
    assert not [name for name in listing(tmp_path / "dst") if name.endswith(".partial")]


def test_a_pack_interrupted_after_some_shards_does_not_load_and_a_rerun_completes_it(tmp_path, monkeypatch):
    src = image_folder(tmp_path / "src", count=8)
    dst = tmp_path / "dst"
    finish = pack_writer._finish_shard
    calls = []

    def crash_at_the_third_shard(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return finish(*args)

    monkeypatch.setattr(pack_writer, "_finish_shard", crash_at_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        run(src, dst, size=4, shard_bytes=2 * 4 * 4 * 3)
    assert listing(dst) == ["shard-00000.npy", "shard-00001.npy"]  # written, but no manifest
    assert_not_loadable(str(dst))

    monkeypatch.setattr(pack_writer, "_finish_shard", finish)
    run(src, dst, size=4, shard_bytes=2 * 4 * 4 * 3)
    run(src, tmp_path / "whole", size=4, shard_bytes=2 * 4 * 4 * 3)
    assert listing(dst) == listing(tmp_path / "whole")
    assert Manifest.read(str(dst)).shards == Manifest.read(str(tmp_path / "whole")).shards


def test_a_crash_just_before_the_manifest_leaves_nothing_that_loads(tmp_path, monkeypatch):
    src = image_folder(tmp_path / "src")

    def crash(self, root):
        raise OSError("disk full")

    monkeypatch.setattr(Manifest, "write", crash)
    with pytest.raises(OSError, match="disk full"):
        run(src, tmp_path / "dst", size=4)
    assert "labels.npy" in listing(tmp_path / "dst")
    assert_not_loadable(str(tmp_path / "dst"))


# --- re-running: no-op, refusal, overwrite -------------------------------------------------


def test_rerunning_the_same_pack_is_a_no_op(tmp_path):
    src = image_folder(tmp_path / "src")
    first = run(src, tmp_path / "dst", size=4)
    times = {name: os.stat(tmp_path / "dst" / name).st_mtime_ns for name in listing(tmp_path / "dst")}

    again = run(src, tmp_path / "dst", size=(4, 4), num_workers=2, on_error="skip")

    assert again.already_packed and not first.already_packed
    assert (again.samples, again.bytes) == (first.samples, first.bytes)
    assert str(again) == "already packed: 6 samples, 416 B"
    assert {name: os.stat(tmp_path / "dst" / name).st_mtime_ns for name in listing(tmp_path / "dst")} == times


def test_a_pack_of_version_0_1_with_its_shard_size_option_is_reused(tmp_path):
    # torchloader 0.1 called shard_bytes shard_size, in pack() and in the manifest
    src = image_folder(tmp_path / "src")
    run(src, tmp_path / "dst", size=4, shard_bytes=160)
    old = Manifest.read(str(tmp_path / "dst"))
    old.options["shard_size"] = old.options.pop("shard_bytes")
    old.write(str(tmp_path / "dst"))

    assert run(src, tmp_path / "dst", size=4, shard_bytes=160).already_packed
    with pytest.raises(FileExistsError, match=r"differs in shard_bytes"):
        run(src, tmp_path / "dst", size=4, shard_bytes=320)


@pytest.mark.parametrize(
    "change, differs",
    [
        ({"size": 5}, "size"),
        ({"size": 4, "crop": True}, "crop"),
        ({"size": 4, "mode": "L"}, "mode"),
        ({"size": 4, "shard_bytes": "1MiB"}, "shard_bytes"),
        ({"size": (4, 5), "crop": True, "shard_bytes": 100}, "crop, shard_bytes, size"),
    ],
)
def test_a_different_pack_into_the_same_folder_is_refused(tmp_path, change, differs):
    src = image_folder(tmp_path / "src")
    run(src, tmp_path / "dst", size=4)
    dst = str(tmp_path / "dst")

    with pytest.raises(FileExistsError) as err:
        run(src, dst, **change)
    assert str(err.value) == (
        f"'{dst}' holds a different pack (differs in {differs}); pass "
        f"overwrite=True (--overwrite) to replace it, or choose another folder"
    )
    assert PackedDataset(dst).manifest.sample_shape == [4, 4, 3]  # untouched


def test_another_source_into_the_same_folder_is_refused(tmp_path):
    run(image_folder(tmp_path / "one"), tmp_path / "dst", size=4)
    with pytest.raises(FileExistsError, match=r"differs in source\)"):
        run(image_folder(tmp_path / "two"), tmp_path / "dst", size=4)


def test_overwrite_replaces_a_different_pack_and_its_old_shards(tmp_path):
    src = image_folder(tmp_path / "src")
    run(src, tmp_path / "dst", size=4, shard_bytes=2 * 4 * 4 * 3)
    assert len(PackedDataset(tmp_path / "dst").manifest.shards) == 3

    summary = run(src, tmp_path / "dst", size=(5, 3), overwrite=True)

    ds = PackedDataset(tmp_path / "dst")
    assert not summary.already_packed and ds[0][0].shape == (3, 5, 3)
    assert listing(tmp_path / "dst") == ["labels.npy", "manifest.json", "shard-00000.npy", "sources.txt"]


def test_overwrite_replaces_a_pack_of_another_format_version(tmp_path):
    src = image_folder(tmp_path / "src")
    run(src, tmp_path / "dst", size=4)
    manifest = tmp_path / "dst" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 99}))

    with pytest.raises(ValueError, match="is pack format version 99"):
        run(src, tmp_path / "dst", size=4)
    run(src, tmp_path / "dst", size=4, overwrite=True)
    assert len(PackedDataset(tmp_path / "dst")) == 6


# --- summary, progress, arguments --------------------------------------------------------


def test_the_summary_counts_samples_bytes_and_rate(tmp_path):
    summary = run(image_folder(tmp_path / "src"), tmp_path / "dst", size=4)

    assert isinstance(summary, PackSummary)
    assert summary.samples == 6 and summary.bytes == 6 * 4 * 4 * 3 + 128 and summary.skipped == []
    assert summary.seconds > 0 and summary.samples_per_s == pytest.approx(6 / summary.seconds)
    assert PackSummary(3, 10, 0.0).samples_per_s == 0.0


def test_progress_shows_a_bar_on_stderr_and_can_be_turned_off(tmp_path, capsys):
    src = image_folder(tmp_path / "src")

    run(src, tmp_path / "a", size=4, progress=True)
    shown = capsys.readouterr()
    run(src, tmp_path / "b", size=4, progress=False)
    quiet = capsys.readouterr()

    assert "packing" in shown.err and "6/6" in shown.err and shown.out == ""
    assert quiet.err == quiet.out == ""


def test_on_error_must_be_raise_or_skip(tmp_path):
    with pytest.raises(ValueError) as err:
        run(image_folder(tmp_path / "src"), tmp_path / "dst", on_error="ignore")
    assert str(err.value) == (
        "on_error must be 'raise' (stop at the first sample that cannot be read) or "
        "'skip' (leave it out of its batch and list it) (got 'ignore')"
    )


@pytest.mark.parametrize(
    ("workers", "error", "message"),
    [
        (-1, ValueError, "num_workers must be >= 0 (got num_workers=-1)"),
        (1.5, TypeError, "num_workers must be an int (got 1.5, a float)"),
        (True, TypeError, "num_workers must be an int (got True, a bool)"),
    ],
)
def test_num_workers_must_be_a_count(tmp_path, workers, error, message):
    with pytest.raises(error) as err:
        run(image_folder(tmp_path / "src"), tmp_path / "dst", num_workers=workers)
    assert str(err.value) == message
    assert not (tmp_path / "dst").exists()


# --- a pack killed with SIGKILL at random points ------------------------------------------


def _pack_process(src, dst):
    """``torchloader pack`` with two workers, as a user runs it."""
    import subprocess
    import sys

    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torchloader",
            "pack",
            str(src),
            str(dst),
            "--shard-size",
            "48KiB",
            "--workers",
            "2",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _forked_pack(src, dst):
    """The same pack in a forked process, in a session of its own with its workers: a
    start without the 3 s of a new interpreter importing torch, so every kill lands in
    the pack itself."""
    process = multiprocessing.get_context("fork").Process(target=_pack_in_new_session, args=(str(src), str(dst)))
    process.start()
    wait_until(lambda: process.exitcode is not None or os.getpgid(process.pid) == process.pid)  # a group to kill
    return process


def _pack_in_new_session(src, dst):
    os.setsid()
    pack(src, dst, shard_bytes="48KiB", num_workers=2, progress=False)


N_KILL = 1500


@pytest.mark.slow
@IGNORE_FORK_WARNING
def test_a_pack_killed_at_random_points_never_loads_incomplete_and_a_rerun_finishes_it(tmp_path):
    import signal
    import time

    from torchloader import verify_pack

    src = tmp_path / "src"
    for i in range(N_KILL):  # images of 24x24x3: shards of 28 samples
        path = src / f"c{i % 3}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(china()[i % 400 : i % 400 + 24, i % 600 : i % 600 + 24]).save(path)
    whole = tmp_path / "whole"
    started = time.monotonic()
    process = _forked_pack(src, whole)
    process.join(120)
    assert process.exitcode == 0
    full_time = time.monotonic() - started
    reference = PackedDataset(whole)

    dst = tmp_path / "dst"
    outcomes = []
    # Each run starts the pack over; kills from early (the scan) to late (shards
    # written, manifest about to be), a little later each time.
    for fraction in np.sort(np.random.default_rng(0).uniform(0.1, 1.0, size=5)):
        delay = fraction * full_time
        process = _forked_pack(src, dst)
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGKILL)  # the packing process and its workers
        process.join(30)
        if os.path.exists(dst / "manifest.json"):  # it finished before the kill
            outcomes.append("complete")
            assert verify_pack(str(dst)) == []
            assert len(PackedDataset(dst)) == N_KILL
            break  # a finished pack: a re-run is a no-op, nothing left to kill
        else:
            outcomes.append("interrupted")
            with pytest.raises(FileNotFoundError, match=r"(has no manifest.json|is not a folder)"):
                PackedDataset(dst)  # killed before it made the folder, or before the manifest
    assert "interrupted" in outcomes, outcomes  # the kills did land mid-pack

    assert _pack_process(src, dst).wait(timeout=120) == 0  # a re-run of the command finishes it
    assert verify_pack(str(dst)) == []
    packed = PackedDataset(dst)
    x, y = packed.gather(range(N_KILL))
    x_ref, y_ref = reference.gather(range(N_KILL))
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
