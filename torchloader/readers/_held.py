"""Descriptors opened ahead of their reads (``read_many``, the batch read-ahead).

They are counted against one budget for the process, a quarter of its descriptor
limit (``RLIMIT_NOFILE``, at most 4,096), so reading ahead never takes the
descriptors a reader, a DataLoader or the user's own code needs; past it, files are
advised and closed, and opened again when read. A forked child closes the ones it
inherited from the threads of its parent, which are not there to close them.
"""

from __future__ import annotations

import os
import threading
import time

from torchloader._core.forks import closed_in_child

__all__ = ["close", "hold", "let_go"]

try:
    import resource
except ImportError:  # Windows (where nothing is read ahead)
    resource = None  # type: ignore[assignment]


def _budget() -> int:
    """A quarter of the soft limit, read again at most once a second (the limit may change)."""
    global _checked
    now = time.monotonic()
    if now - _checked[1] > 1.0:
        if resource is None:
            return 0
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        _checked = (4096 if soft == resource.RLIM_INFINITY else max(0, min(4096, soft // 4)), now)
    return _checked[0]


_checked = (0, -2.0)  # (budget, when it was read)


_lock = threading.Lock()


def _new_lock() -> None:
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it at the fork


_held: set[int] = closed_in_child(set(), then=_new_lock)


def hold(fd: int) -> bool:
    """Count ``fd`` as held ahead of its read; False (not counted) past the budget."""
    with _lock:
        if len(_held) >= _budget():
            return False
        _held.add(fd)
        return True


def let_go(fd: int) -> bool:
    """Stop counting ``fd``: True if it was held (the caller reads and closes it), False if
    it was not (a forked child closed it)."""
    with _lock:
        if fd not in _held:
            return False
        _held.discard(fd)
        return True


def close(fd: int) -> None:
    """Close ``fd`` if it is still held."""
    if let_go(fd):
        os.close(fd)
