"""Read-ahead of a batch's files: each opened once, advised a bounded window ahead of the
reader, and every descriptor closed when the batch ends, whatever happened in it."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from helpers import IGNORE_FORK_WARNING
from PIL import Image

from torchloader import PathDataset
from torchloader.readers import _files, _read_ahead
from torchloader.readers._files import read_bytes
from torchloader.readers._read_ahead import read_ahead, reading

pytestmark = [
    pytest.mark.skipif(
        _files.ADVISE is None or not os.path.isdir("/proc/self/fd"), reason="posix_fadvise and /proc/self/fd"
    ),
    IGNORE_FORK_WARNING,  # (the fork test: on Pythons that warn about threads at a fork)
]


@pytest.fixture(autouse=True)
def cold(monkeypatch):
    """Every batch taken as cold: the files a test writes are in the page cache."""
    monkeypatch.setattr(_read_ahead, "_cold", lambda paths: bool(paths))


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(300):
        path = tmp_path / f"{i:03d}.bin"
        path.write_bytes(bytes([i % 256]) * (100 + i))
        paths.append(str(path))
    return paths


@pytest.fixture
def counted(monkeypatch):
    """Paths opened and advised, in order."""
    opened, advised = [], []
    real_open, real_advise = os.open, os.posix_fadvise

    def counting_open(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    def counting_advise(fd, offset, length, advice):
        advised.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_advise(fd, offset, length, advice)

    monkeypatch.setattr(_files.os, "open", counting_open)
    monkeypatch.setattr(_files.os, "posix_fadvise", counting_advise)
    return opened, advised


def read_all(paths, check=None):
    got = []
    with read_ahead(paths):
        for path in paths:
            reading(path)
            if check is not None:
                check()
            got.append(read_bytes(path))
    return got


def test_each_file_is_opened_once_and_advised_before_it_is_read(files, counted):
    opened, advised = counted
    assert read_all(files) == [bytes([i % 256]) * (100 + i) for i in range(300)]
    assert opened == files and advised == [os.path.realpath(p) for p in files]


def test_the_window_holds_at_most_its_files_and_bytes(files, monkeypatch):
    before = open_descriptors()
    assert read_all(files, lambda: _check_window(before)) == [read_bytes(p) for p in files]
    monkeypatch.setattr(_read_ahead, "WINDOW_BYTES", 1000)  # about 3 files of these
    assert read_all(files, lambda: _check_window(before, 1000 + 400)) == [read_bytes(p) for p in files]
    assert open_descriptors() == before


def _check_window(before, most_bytes=None):
    ahead = _files.AHEAD.get()
    assert len(ahead.opened) <= _read_ahead.WINDOW + 1 and open_descriptors() <= before + _read_ahead.WINDOW + 1
    if most_bytes is not None:
        assert ahead.ahead_bytes <= most_bytes


def test_every_descriptor_is_closed_after_an_error_and_after_files_nobody_took(files):
    before = open_descriptors()
    with pytest.raises(RuntimeError, match="a reader failed"):
        with read_ahead(files):
            reading(files[0])
            read_bytes(files[0])
            raise RuntimeError("a reader failed")
    assert open_descriptors() == before
    with read_ahead(files):  # a reader of the user's own opens the files itself
        for path in files:
            reading(path)
            with open(path, "rb") as f:
                f.read()
        assert open_descriptors() <= before + _read_ahead.WINDOW + 1
    assert open_descriptors() == before


def test_a_batch_inside_a_batch_and_a_path_twice_are_read_as_usual(files, counted):
    opened, _ = counted
    paths = [files[0], files[1], files[0], files[2]]
    with read_ahead(paths):
        with read_ahead(paths[1:]):  # the outer batch leads
            assert read_all(paths) == [read_bytes(p) for p in paths]
    assert opened[:3] == files[:3]  # the outer read-ahead's opens only, each path once


def test_out_of_descriptors_the_read_ahead_steps_aside(files, monkeypatch):
    real = _files.open_advised
    calls = []

    def exhausted(path):
        calls.append(path)
        return OSError(errno.EMFILE, "Too many open files") if len(calls) > 5 else real(path)

    monkeypatch.setattr(_files, "open_advised", exhausted)
    before = open_descriptors()
    with read_ahead(files):
        assert _files.AHEAD.get().opened == {} and open_descriptors() == before  # all given back
        assert [read_bytes(p) for p in files] == [bytes([i % 256]) * (100 + i) for i in range(300)]
    assert len(calls) == 6 and open_descriptors() == before


def test_path_dataset_batches_read_ahead_and_give_the_same_samples(tmp_path, counted):
    opened, advised = counted
    rng = np.random.default_rng(0)
    for i in range(40):
        (tmp_path / f"c{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(tmp_path / f"c{i % 2}" / f"{i:02d}.png")
    ds = PathDataset.from_folder(tmp_path)
    singles = [ds[i][0] for i in range(len(ds))]
    del opened[:], advised[:]
    x, _ = ds[np.arange(len(ds))]
    assert all(np.array_equal(x[i], singles[i]) for i in range(len(ds)))
    assert sorted(opened) == sorted(ds.path(i) for i in range(len(ds))) and len(advised) == len(ds)


def test_a_dataloader_batch_read_one_by_one_is_read_ahead_too(tmp_path, counted):
    from torchloader.datasets import _dataloader

    _, advised = counted
    for i in range(20):
        (tmp_path / "c0").mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / "c0" / f"{i:02d}.png")
    ds = PathDataset.from_folder(tmp_path)
    _dataloader._ONE_BY_ONE.add(ds)  # as a worker whose rows the collate copies anyway
    items = ds.__getitems__(list(range(20)))
    assert [int(x[0, 0, 0]) for x, _ in items] == list(range(20)) and len(advised) == 20
    assert ds.__getitems__([0]) and len(advised) == 21
    with pytest.raises(IndexError):
        ds.__getitems__([0, 20])  # out of range: the read names it, no read-ahead in the way


def test_a_path_that_cannot_be_opened_is_named_by_its_own_sample_and_skipped(tmp_path):
    for i in range(200):
        Image.fromarray(np.full((4, 4, 3), i % 256, np.uint8)).save(tmp_path / f"{i:03d}.png")
    paths = [str(tmp_path / f"{i:03d}.png") for i in range(200)]
    paths[150] = str(tmp_path / "bad\x00name.png")  # os.open raises ValueError: embedded null byte
    before = open_descriptors()
    with pytest.raises(Exception, match=r"sample 150 from .*bad\\x00name.png.*embedded null byte"):
        PathDataset(paths)[np.arange(200)]
    assert open_descriptors() == before
    skipping = PathDataset(paths, on_error="skip")
    with pytest.warns(Warning, match="skipped sample 150"):
        x = skipping[np.arange(200)]
    assert len(x) == 199 and open_descriptors() == before


def test_descriptors_held_ahead_stay_within_a_quarter_of_the_limit(files, monkeypatch):
    import resource

    from torchloader.readers import _held

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 120), hard))
    monkeypatch.setattr(_held, "_checked", (0, -2.0))  # read the limit again now
    try:
        peak = []
        read_all(files, lambda: peak.append(len(_held._held)))
        assert 0 < max(peak) <= 30  # 120 // 4: past it, files are advised and closed
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        _held._checked = (0, -2.0)
    assert _held._held == set()


def test_a_forked_child_closes_the_descriptors_its_parent_held_ahead(files):
    import multiprocessing

    def report(fds, conn):
        conn.send([_inode(fd) for fd in fds])  # (a number the child reused holds another file)
        conn.close()

    with read_ahead(files):
        ahead = _files.AHEAD.get()
        fds = [fd for _, fd, _ in ahead.opened.values()][:5]
        inodes = [_inode(fd) for fd in fds]
        assert len(fds) == 5 and None not in inodes
        ours, theirs = multiprocessing.get_context("fork").Pipe(duplex=False)
        child = multiprocessing.get_context("fork").Process(target=report, args=(fds, theirs))
        child.start()
        theirs.close()
        got = _answer(ours, child)
    assert not set(got) & set(inodes) and child.exitcode == 0


def _answer(conn, child, seconds=30):
    """What ``child`` sends on ``conn``, then its end; a child stuck or dead fails the test."""
    try:
        assert conn.poll(seconds), f"the child (exit code {child.exitcode}) sent nothing in {seconds} s"
        return conn.recv()
    finally:
        conn.close()
        child.join(seconds)
        if child.is_alive():
            child.kill()
            child.join()


def _inode(fd):
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return None


def test_a_large_file_is_advised_at_its_start_only(tmp_path, monkeypatch):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB that nobody should ask the disk for whole
    lengths = []
    real = os.posix_fadvise
    monkeypatch.setattr(_files.os, "posix_fadvise", lambda fd, o, n, a: (lengths.append(n), real(fd, o, n, a)))
    with read_ahead([str(big)]):
        pass
    assert lengths == [_files.ADVISE_BYTES]


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="reads that refuse to wait")
def test_only_a_batch_with_files_out_of_the_page_cache_is_read_ahead(files, monkeypatch):
    monkeypatch.undo()  # the real _cold
    advised = []
    real = os.posix_fadvise

    def counting(fd, offset, length, advice):
        if advice == os.POSIX_FADV_WILLNEED:
            advised.append(fd)
        return real(fd, offset, length, advice)

    monkeypatch.setattr(_files.os, "posix_fadvise", counting)
    assert read_all(files) == [read_bytes(p) for p in files] and advised == []  # just written: cached
    for path in files[150:]:  # half of them out of the page cache: a probe finds one
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)  # (dirty pages are not dropped)
        real(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    assert _read_ahead._cold(files) and not _read_ahead._cold(files[:150])
    assert read_all(files) == [read_bytes(p) for p in files] and len(advised) == 300


def test_a_child_forked_inside_a_batch_reads_each_file_on_its_own(files):
    import multiprocessing

    def read_on(conn):
        extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(3)]  # numbers a fork freed, reused
        wrong = []
        for i, path in enumerate(files[40:], 40):
            reading(path)
            if read_bytes(path) != bytes([i % 256]) * (100 + i):
                wrong.append(i)
        conn.send(wrong)
        conn.close()
        for fd in extra:
            os.close(fd)

    with read_ahead(files):
        for path in files[:40]:
            reading(path)
            read_bytes(path)
        ours, theirs = multiprocessing.get_context("fork").Pipe(duplex=False)
        child = multiprocessing.get_context("fork").Process(target=read_on, args=(theirs,))
        child.start()
        theirs.close()
        wrong = _answer(ours, child)
        assert [read_bytes(p) for p in files[40:]] == [bytes([i % 256]) * (100 + i) for i in range(40, 300)]
    assert wrong == [] and child.exitcode == 0


def test_the_page_cache_probe_reads_no_device_and_never_raises(tmp_path, monkeypatch):
    monkeypatch.undo()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    odd = [os.devnull, str(fifo), str(tmp_path), str(tmp_path / "missing"), str(tmp_path / "a\x00b")]
    assert _read_ahead._cold.__module__ == _read_ahead.__name__  # (the real one: not the fixture's)
    assert _read_ahead._cold(odd) is False and _read_ahead._cold([]) is False
