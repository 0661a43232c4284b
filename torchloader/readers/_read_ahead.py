"""Read-ahead for a batch of local files: the disk gets the next files' requests early.

Reading a batch one file at a time leaves one request in flight at the disk, which
on a cold page cache (a data set larger than RAM: every epoch) is the slowest way to
read small files. Inside :func:`read_ahead`, the next ``WINDOW`` files of the batch
(at most ``WINDOW_BYTES`` of them) are opened and advised ``POSIX_FADV_WILLNEED``
while the batch is read: the kernel reads them in the background (the descriptors
kept open count against the process's budget, ``_held.py``; past it a file is advised
and closed), and
``open_fd`` hands a reader the descriptor already open for its path (one ``open``
and ``fstat`` per file, as before), which moves the window to that file. A batch
loop also calls :func:`reading` before each sample, so the window follows readers
of the user's own too; files it passes without a reader taking their descriptor (such a
reader, a skipped sample) are closed then, and every descriptor is closed when the
batch ends, whatever it raised.

A batch whose files are all in the page cache gains nothing from it and would pay about
5% on 7 KB JPEGs: ``_cold`` looks for the first page of ``PROBES`` of its files with a
read that refuses to wait (``RWF_NOWAIT``), and only a batch where one is missing is
read ahead. Here, ``ds[indices]`` of 128 px JPEGs in one process from a cold page cache
went from about 4,000 to 6,000-8,000 samples/s (``benchmarks/bench_cold_batches.py``).
Where the OS has no ``posix_fadvise`` (macOS, Windows), :func:`read_ahead` does nothing.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torchloader.readers import _files, _held

__all__ = ["WINDOW", "WINDOW_BYTES", "read_ahead", "read_many", "reading", "wanted"]

WINDOW = 128  # files advised ahead of the one being read (64: 6,800-7,500 samples/s cold, 128: 8,400-9,000)
WINDOW_BYTES = 64 << 20  # ... and at most this many of their bytes (at least one file)


class _ReadAhead:
    """The open, advised files ahead of the batch's reader."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        self.first: dict[str, int] = {}  # path -> its first position in the batch
        for position, path in enumerate(self.paths):
            self.first.setdefault(path, position)
        self.opened: dict[str, tuple[int, int, int]] = {}  # path -> (position, fd, size)
        self.queue: deque[str] = deque()  # the opened paths, in batch order
        self.owner = (os.getpid(), threading.get_ident())  # another process (a fork) or thread: hands off
        self.cursor = -1  # the position being read
        self.next = 0  # the next position to open
        self.ahead_bytes = 0

    def fill(self) -> None:
        while self.next < len(self.paths) and self.next <= self.cursor + WINDOW:
            if self.queue and self.ahead_bytes >= WINDOW_BYTES:
                break
            position, path = self.next, self.paths[self.next]
            self.next += 1
            if self.first[path] != position or path in self.opened:
                continue  # a path twice in the batch: read the usual way the second time
            got = _files.open_advised(path)  # (an error opening it is left to its reader)
            if isinstance(got, tuple):
                self.opened[path] = (position, *got)
                self.queue.append(path)
                self.ahead_bytes += got[1]
            elif isinstance(got, OSError) and got.errno in (errno.EMFILE, errno.ENFILE):
                self.close()  # out of descriptors: give them back to the readers
                self.next = len(self.paths)

    def mine(self) -> bool:
        return self.owner == (os.getpid(), threading.get_ident())

    def step(self, path: str) -> None:
        if not self.mine():
            return
        position = self.first.get(path)
        if position is None or position <= self.cursor:
            return  # (already there: the batch loop's reading() and then the reader's open)
        self.cursor = position
        while self.queue and self.first[self.queue[0]] < position:  # passed, never taken
            self._close(self.queue.popleft())
        self.fill()

    def take(self, path: str) -> tuple[int, int] | None:
        """The open file of ``path``, if the read-ahead has it; the window moves to it."""
        if not self.mine():  # a forked child closed these descriptors: their numbers may be reused
            return None
        got = self.opened.pop(path, None)
        if got is None:
            return None
        self.ahead_bytes -= got[2]
        mine = _held.let_go(got[1])
        try:
            self.step(path)
        except BaseException:
            if mine:
                os.close(got[1])
            raise
        return (got[1], got[2]) if mine else None

    def _close(self, path: str) -> None:
        got = self.opened.pop(path, None)
        if got is not None:
            self.ahead_bytes -= got[2]
            _held.close(got[1])

    def close(self) -> None:
        if not self.mine():
            return
        while self.queue:
            self._close(self.queue.popleft())


@contextmanager
def read_ahead(paths: Sequence[str]) -> Iterator[None]:
    """Inside: the local files of ``paths`` (a batch, in reading order) are advised to the
    kernel ``WINDOW`` files ahead of the one :func:`reading` names (see the module).

    Example:
        >>> import os, tempfile
        >>> from torchloader.readers._files import read_bytes
        >>> with tempfile.TemporaryDirectory() as d:
        ...     paths = [os.path.join(d, f"{i}.bin") for i in range(3)]
        ...     for i, p in enumerate(paths):
        ...         with open(p, "wb") as f:
        ...             _ = f.write(bytes([i]) * 5)
        ...     with read_ahead(paths):
        ...         got = []
        ...         for p in paths:
        ...             reading(p)
        ...             got.append(read_bytes(p))
        >>> got == [bytes([i]) * 5 for i in range(3)]
        True
    """
    local = [p for p in paths if "://" not in p] if wanted() else []
    if not _cold(local):
        yield  # no fadvise here, a batch read inside another (the outer one leads), or all cached
        return
    ahead = _ReadAhead(local)
    token = _files.AHEAD.set(ahead)
    try:
        ahead.fill()
        yield
    finally:
        _files.AHEAD.reset(token)
        ahead.close()


def wanted() -> bool:
    """Whether :func:`read_ahead` here would read ahead: the OS takes the advice, and no
    batch is being read ahead already in this thread (an outer one leads)."""
    return _files.ADVISE is not None and _files.AHEAD.get() is None


def read_many(paths: list[str]) -> list[bytes | Exception]:
    """The bytes of each file of ``paths`` (or the ``Exception`` reading it raised), in order,
    read inside :func:`read_ahead` (``pack(..., encoded=True)`` reads runs of 64 this way).

    On a cold disk that keeps the run's requests in flight instead of one: 4,000 JPEGs of
    24 KB read at 198 MB/s one by one and at 679 MB/s 64 at a time here
    (``benchmarks/bench_pack_cold.py``). A URL is read by ``read_bytes``.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with open(os.path.join(d, "a"), "wb") as f:
        ...         _ = f.write(b"xy")
        ...     [type(r).__name__ if isinstance(r, Exception) else r for r in read_many([f.name, d])]
        [b'xy', 'NotRegularFileError']
    """
    out: list[bytes | Exception] = []
    with read_ahead(paths):
        for path in paths:
            reading(path)
            try:
                out.append(_files.read_bytes(path))
            except Exception as exc:  # (a URL's errors too: RemoteError, ...) the sample's
                out.append(exc)
    return out


PROBES = 4  # files of a batch whose first page is looked for in the page cache


def _cold(paths: list[str]) -> bool:
    """Whether any of ``PROBES`` files spread over ``paths`` has its first page out of the
    page cache (a read with ``RWF_NOWAIT`` refused), or that cannot be told. A batch of a
    data set that the page cache holds is read without the read-ahead, which there costs
    about 5% on 7 KB JPEGs and gains nothing."""
    nowait = getattr(os, "RWF_NOWAIT", None)
    if nowait is None or not paths:
        return bool(paths)
    byte = bytearray(1)
    for path in paths[:: max(1, len(paths) // PROBES)][:PROBES]:
        try:
            fd = os.open(path, _files.FLAGS)  # (never blocks, never a controlling terminal)
        except (OSError, ValueError):
            continue  # its reader says what is wrong with it
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):  # (a device is not read here: open_fd refuses it)
                os.preadv(fd, [byte], 0, nowait)
        except OSError:  # not cached (BlockingIOError), or no way to tell
            return True
        finally:
            os.close(fd)
    return False


def reading(path: str) -> None:
    """The batch's reader reads ``path`` next: move the read-ahead window there."""
    ahead = _files.AHEAD.get()
    if ahead is not None:
        ahead.step(path)
