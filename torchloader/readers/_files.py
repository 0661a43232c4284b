"""Opening a sample's file: regular files only, and never blocking on anything else.

A path in a data set can name something that is not a file: a FIFO named
``x.jpg`` (an ``open`` of it waits for a writer forever), a symlink to
``/dev/zero`` (a read of it never ends) or a directory. Every reader opens
through :func:`open_regular`, which opens with ``O_NONBLOCK`` (no effect on a
regular file), ``fstat``-s the descriptor it got (so what is checked is what is
read: no race between a check and the open) and refuses anything but a regular
file, symlinks followed, with :class:`NotRegularFileError`, an ``OSError`` that
``on_error="skip"`` skips like any unreadable file.
"""

from __future__ import annotations

import contextvars
import errno
import io
import os
import stat
from typing import Any

from torchloader.readers import _held
from torchloader.remote.files import read_url
from torchloader.remote.urls import is_url

__all__ = ["NotRegularFileError", "open_regular", "read_bytes"]

FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


# the read-ahead of the batch being read (``_read_ahead.py``): its open, advised files
AHEAD: contextvars.ContextVar[Any] = contextvars.ContextVar("torchloader_read_ahead", default=None)


class NotRegularFileError(OSError):
    """The path is a FIFO, a device, a socket or a directory, not a regular file.

    Example:
        >>> import tempfile
        >>> try:
        ...     read_bytes(tempfile.gettempdir())
        ... except NotRegularFileError as exc:
        ...     print(str(exc).split(";")[0].endswith("is a directory, not a regular file"))
        True
    """


def open_fd(path: str) -> tuple[int, int]:
    """``(descriptor, size)`` of the regular file at ``path``, opened read-only.

    Never blocks (``O_NONBLOCK``); the caller closes the descriptor.

    Raises:
        NotRegularFileError: ``path`` (after following symlinks) is not a regular file.
        OSError: it cannot be opened (``FileNotFoundError``, ``PermissionError``, ...).
    """
    ahead = AHEAD.get()
    if ahead is not None and (opened := ahead.take(path)) is not None:
        return opened  # opened (and checked) a moment ago by the batch's read-ahead
    try:
        fd = os.open(path, FLAGS)
    except OSError as exc:  # a socket cannot be opened at all: say what it is
        mode = os.stat(path).st_mode if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP) else stat.S_IFREG
        if _kind(mode):
            raise _refusal(path, mode) from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _refusal(path, info.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def open_regular(path: str) -> io.BufferedReader:
    """A buffered binary file object of the regular file at ``path``; close it after use.

    For a reader of your own that should refuse FIFOs and devices as torchloader's do.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as f, open_regular(f.name) as g:
        ...     g.read()
        b''
    """
    if "://" in path and is_url(path):  # a URL: its bytes (remote/files.py)
        return io.BufferedReader(io.BytesIO(read_url(path)))  # type: ignore[arg-type]
    fd, _ = open_fd(path)
    try:
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str) -> bytes:
    """The bytes of the regular file at ``path``: one ``fstat`` and (usually) one ``read``.

    A third faster than ``open(path, "rb").read()`` for small files (no buffered
    file object), which matters when decoding takes only ~80 us per image. Never
    reads more than the size ``fstat`` reported: a file still growing gives the
    bytes it had then, and ``/proc``-like files (size 0) give ``b""``.

    Raises:
        NotRegularFileError: ``path`` is a FIFO, a device, a socket or a directory.
    """
    if "://" in path and is_url(path):  # a URL (one substring test for a local file, per sample)
        return read_url(path)
    fd, size = open_fd(path)
    try:
        return _read_fd(fd, size)
    finally:
        os.close(fd)


def open_advised(path: str) -> tuple[int, int] | Exception | None:
    """Open ``path`` (``open_fd``'s checks) and advise ``POSIX_FADV_WILLNEED``: ``(fd, size)``
    kept open and counted as held (``_held.py``; ``let_go`` it before reading and closing), or
    None where the budget is spent (advised and closed), or the exception opening it raised."""
    try:
        fd, size = open_fd(path)
    except (OSError, ValueError) as exc:  # (ValueError: a NUL in the path)
        return exc
    try:
        if ADVISE is not None and size:  # (a large file's start: the kernel reads ahead of its reader)
            os.posix_fadvise(fd, 0, min(size, ADVISE_BYTES), ADVISE)
    except OSError:
        pass  # a hint: a file system that takes none is read all the same
    except BaseException:
        os.close(fd)
        raise
    if _held.hold(fd):
        return fd, size
    os.close(fd)
    return None


ADVISE = getattr(os, "POSIX_FADV_WILLNEED", None) if hasattr(os, "posix_fadvise") else None
ADVISE_BYTES = 8 << 20  # advised of each file: a 10 GB one is not asked for whole


def _read_fd(fd: int, size: int) -> bytes:
    data = os.read(fd, size)
    if len(data) == size or not data:  # the whole file, or it shrank to nothing
        return data
    parts, done = [data], len(data)  # a short read: large files read in parts
    while done < size and (block := os.read(fd, size - done)):
        parts.append(block)
        done += len(block)
    return b"".join(parts)


def _kind(mode: int) -> str | None:
    """What a non-regular file is (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "a special file")


def _refusal(path: str, mode: int) -> NotRegularFileError:
    target = os.path.realpath(path)
    through = f" (which resolves to {target!r})" if target != os.path.abspath(path) else ""
    return NotRegularFileError(
        f"{path!r}{through} is {_kind(mode)}, not a regular file; readers read regular files "
        f"(and symlinks to them) only: replace it with the file it stands for, or leave it out of the paths"
    )
