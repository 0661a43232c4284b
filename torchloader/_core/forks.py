"""Descriptors a forked child must not keep: the copies of those its parent's threads hold."""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["closed_in_child"]


def closed_in_child(fds: set[int], then: Callable[[], None] | None = None) -> set[int]:
    """Register ``fds`` (a set the caller keeps up to date) to be closed and emptied in every
    forked child, after ``then()``; returns ``fds``.

    Example:
        >>> held = closed_in_child(set())
        >>> held.add(0)  # (in a forked child: closed, and the set emptied)
        >>> held.discard(0)
    """

    def in_child() -> None:
        if then is not None:
            then()
        for fd in list(fds):
            try:
                os.close(fd)
            except OSError:
                pass
        fds.clear()

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=in_child)
    return fds
