"""A pack's folder: one pack writes it at a time, it holds nothing but the pack,
and a failed write names the file, the folder and the fix.

Two ``torchloader pack`` runs into one folder (every torchrun rank doing "pack if
missing", two jobs sharing a data folder) would write the same temporary shard
files. ``pack_lock`` makes the second run wait for the first (it says so on
stderr), after which it finds the finished pack and reuses it, or refuses a
different one. The lock is an advisory ``flock`` on ``DST/.pack.lock``: it is
released by the kernel when the holder exits, however it exits, so a killed pack
never leaves a stale lock. On network filesystems ``flock`` is only as good as
their lock support (NFSv4 has it); do not share a pack folder over one without.

``check_destination`` refuses a folder that holds anything a pack does not write
(an image folder, a home directory): a pack, its re-runs and ``--overwrite``
only ever create, replace and remove their own files.

``disk_errors`` turns an ``OSError`` while packing (a full disk, a quota, a
read-only mount) into one that names the folder, the space the pack needs and
what to do.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from torchloader._core.units import format_bytes
from torchloader.errors import show_names
from torchloader.packs.format import LOCK, foreign_files

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, one pack at a time is up to the user
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK", "check_destination", "disk_errors", "pack_lock"]

_log = logging.getLogger("torchloader")


def check_destination(dst: str) -> None:
    """Refuse ``dst`` if it is a file or holds files and folders a pack does not write."""
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise FileExistsError(f"'{dst}' is a file; pack into a new or empty folder")
    if not os.path.isdir(dst):
        return
    foreign = foreign_files(dst)
    if foreign:
        raise FileExistsError(
            f"'{dst}' holds files that are not part of a pack ({show_names(foreign)}); pack into a new "
            f"or empty folder, e.g. '{dst.rstrip(os.sep)}.packed' (a pack owns its folder, "
            f"and --overwrite replaces a pack, never other files)"
        )


@contextmanager
def pack_lock(dst: str) -> Iterator[None]:
    """Hold the pack lock of the existing folder ``dst``, waiting for another pack."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(os.path.join(dst, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            _log.warning(
                "torchloader pack: another pack is writing into '%s' (%s); waiting for it to finish", dst, holder
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def disk_errors(dst: str, needed: int) -> Iterator[None]:
    """Re-raise an ``OSError`` of writing the pack ``dst`` (about ``needed`` bytes) with the fix."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO):
            raise
        try:
            free = f", {format_bytes(shutil.disk_usage(dst).free)} free"
        except OSError:
            free = ""
        where = f"'{exc.filename}'" if exc.filename else "a file"
        raise OSError(
            exc.errno,
            f"packing into '{dst}' failed writing {where}: {exc.strerror or exc} (the pack "
            f"needs about {format_bytes(needed)}{free}); make room there (or choose another "
            f"folder) and run the same command again: nothing incomplete loads, and the "
            f"shards already written are kept",
        ) from exc
