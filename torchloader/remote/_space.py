"""The cache folder's bytes: counted, reserved before a download, freed least-recently-used.

Every process that reads through one cache folder (DataLoader workers, ranks on one
node, other jobs) keeps it under one byte limit together, through an advisory ``flock``
on ``CACHE/.lock``, held while counting, deleting, creating and renaming (never during a
download), so a count never misses a file being renamed. What counts is every file under
the folder, at its full size: a download in progress is preallocated to its final size
(``truncate``) before its first byte arrives, so the folder's size is never over the
limit, even for a moment. Only finished shards are evicted, the least recently used
first (their modification time: set when a shard is downloaded or opened, and at most
once a second while a process reads it); downloads in progress and a pack's small files
(manifest, labels, index) are never evicted.

A shard evicted while another process has it mapped stays readable for that process (the
kernel keeps an unlinked file until its last map is gone), so eviction never breaks a
reader; its disk blocks are freed when that reader lets go of it, on its next read of that
shard (``packs/_maps.RemoteShards``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

from torchloader._core.forks import closed_in_child
from torchloader._core.units import format_bytes

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per cache folder
    fcntl = None  # type: ignore[assignment]

__all__ = ["FINISHED", "evict_for", "folder_bytes", "locked", "pinned_bytes"]

FINISHED = re.compile(r"shard-\d+\.[0-9a-f]{16}\.npy$")  # an evictable, finished download
PARTIAL = re.compile(r"\.(\d+)\.\d+\.partial$")  # a download in progress, by its process id
WAIT_SECONDS = 600.0  # for other processes' downloads to free their space


# Descriptors of the locks this process holds, closed in a forked child: a ``flock`` belongs
# to the open file, which the child's copy would keep locked for as long as the child lives,
# after the parent has let go (every process sharing the cache would wait).
_HELD: set[int] = closed_in_child(set())


@contextmanager
def locked(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    _HELD.add(fd)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        _HELD.discard(fd)
        os.close(fd)  # releases the lock


def _files(root: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """``(name, path, stat)`` of every file under ``root`` (one removed meanwhile skipped)."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                yield name, path, os.stat(path)
            except FileNotFoundError:  # removed by another process meanwhile
                continue


def folder_bytes(root: str) -> tuple[int, list[tuple[float, str, int]]]:
    """``(bytes of every file under root, [(mtime, path, bytes)] of the finished shards)``."""
    used, finished = 0, []
    for name, path, info in _files(root):
        used += info.st_size
        if FINISHED.match(name):
            finished.append((info.st_mtime, path, info.st_size))
    return used, finished


def pinned_bytes(root: str) -> int:
    """Bytes under ``root`` that eviction never frees: the packs' small files (manifests,
    labels, indexes), not finished shards nor downloads in progress (which become shards)."""
    return sum(i.st_size for name, _, i in _files(root) if not (FINISHED.match(name) or PARTIAL.search(name)))


def evict_for(root: str, nbytes: int, limit: int | None, create: str, url: str = "") -> None:
    """Make room for ``nbytes`` under ``limit`` and create ``create`` at that size.

    Evicts finished shards, least recently used first, and the downloads of processes
    that died mid-way; waits for downloads in progress elsewhere where they alone fill
    the folder (``url``: the download it is for, named in the error).

    Raises:
        TimeoutError: other processes' downloads held the space for ``WAIT_SECONDS``.
    """
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        with locked(os.path.join(root, ".lock")):
            used, finished = folder_bytes(root) if limit is not None else (0, [])
            if limit is not None and used + nbytes > limit:
                used -= _remove_orphans(root)
            for _, path, size in sorted(finished):
                if limit is None or used + nbytes <= limit:
                    break
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
                used -= size
            if limit is None or used + nbytes <= limit:
                with open(create, "wb") as f:
                    f.truncate(nbytes)  # the space is taken from now on
                return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"downloading '{url}': the cache '{root}' ({format_bytes(limit)}) has been full of other "
                f"downloads in progress for {WAIT_SECONDS:.0f} s; raise cache_limit or give each job its own cache_dir"
            )
        time.sleep(0.05)


def _remove_orphans(root: str) -> int:
    """Remove the partial downloads of processes that are gone (killed mid-way); their bytes."""
    freed = 0
    for folder, _, names in os.walk(root):
        for name in names:
            match = PARTIAL.search(name)
            if match is None or _alive(int(match.group(1))):
                continue
            path = os.path.join(folder, name)
            try:
                freed += os.path.getsize(path)
                os.remove(path)
            except FileNotFoundError:
                pass
    return freed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True
