"""``read_many``: a run of files read with all their disk reads requested first.

Each file's bytes, or the error its own read raised, in order; nothing left open when
a read is interrupted.
"""

from __future__ import annotations

import os

import pytest

from torchloader.readers import _files, _read_ahead
from torchloader.readers._files import NotRegularFileError, read_bytes
from torchloader.readers._read_ahead import read_many


@pytest.fixture(autouse=True)
def cold(monkeypatch):
    """Every run taken as cold: the files a test writes are in the page cache."""
    monkeypatch.setattr(_read_ahead, "_cold", lambda paths: bool(paths))


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def files(tmp_path):
    paths = []
    for i, size in enumerate([0, 1, 3000, 200_000]):
        path = tmp_path / f"{i}.bin"
        path.write_bytes(os.urandom(size))
        paths.append(str(path))
    return paths


def test_each_files_bytes_come_in_order_as_read_bytes_gives_them(files):
    assert read_many(files + files[::-1]) == [read_bytes(p) for p in files + files[::-1]]
    assert read_many([]) == []


def test_a_files_own_error_stands_in_its_place_and_the_others_are_read(files, tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # never blocks: opened O_NONBLOCK and refused
    got = read_many([files[2], str(tmp_path / "missing.jpg"), str(tmp_path), str(fifo), files[3]])
    assert got[0] == read_bytes(files[2]) and got[4] == read_bytes(files[3])
    assert isinstance(got[1], FileNotFoundError) and "missing.jpg" in str(got[1])
    assert isinstance(got[2], NotRegularFileError) and "a directory" in str(got[2])
    assert isinstance(got[3], NotRegularFileError) and "FIFO" in str(got[3])


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_an_interrupted_run_leaves_no_file_open(files, monkeypatch):
    before = open_descriptors()
    read = _files._read_fd
    calls = []

    def interrupted(fd, size):
        calls.append(fd)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return read(fd, size)

    monkeypatch.setattr(_files, "_read_fd", interrupted)
    with pytest.raises(KeyboardInterrupt):
        read_many(files)
    assert open_descriptors() == before
    monkeypatch.setattr(_files, "_read_fd", read)
    assert read_many(files) == [read_bytes(p) for p in files] and open_descriptors() == before


def test_without_fadvise_the_files_are_read_all_the_same(files, monkeypatch):
    monkeypatch.setattr(_files, "ADVISE", None)
    assert read_many(files) == [read_bytes(p) for p in files]


def test_a_file_the_process_had_no_descriptor_for_is_read_alone_after(files, monkeypatch):
    import errno

    real = _files.open_advised
    monkeypatch.setattr(
        _files,
        "open_advised",
        lambda path: OSError(errno.EMFILE, "Too many open files") if path == files[2] else real(path),
    )
    assert read_many(files) == [read_bytes(p) for p in files]
