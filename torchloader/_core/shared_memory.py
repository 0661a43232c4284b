"""Shared memory (``/dev/shm``): how much there is, and what to do when it is too small.

Worker processes hand data to the main process through shared memory: torch's
DataLoader puts every batch there, and ``ChunkedLoader``'s process workers write
into two chunk buffers that live there. A container's default ``/dev/shm`` is
small (64 MB in Docker), and a full one fails with torch's "unable to allocate
shared memory(shm) ... No space left on device" in the middle of an epoch. This
module checks first, where the size is known, and otherwise turns that failure
into an error that says how big ``/dev/shm`` is and what to change.
"""

from __future__ import annotations

import os
import shutil

import torch

from torchloader._core.units import format_bytes

__all__ = ["SHM", "check_room", "free_bytes", "new_shared"]

SHM = "/dev/shm"


def free_bytes() -> int | None:
    """Bytes free in ``/dev/shm``, or None where there is none to measure."""
    if not os.path.isdir(SHM):
        return None
    return shutil.disk_usage(SHM).free


def _fixes(needed: int) -> str:
    return (
        f"give it more room (docker run --shm-size={_docker_size(needed)}, or remount "
        f"{SHM} larger), lower ram_budget, or use worker_type='thread' or num_workers=0, "
        f"which need no shared memory"
    )


def _docker_size(needed: int) -> str:
    gib = -(-needed * 2 // 2**30)  # twice the need, in whole GiB
    return f"{gib}g"


def check_room(needed: int, what: str) -> None:
    """Raise if ``/dev/shm`` has less than ``needed`` bytes free for ``what``.

    Example:
        >>> check_room(1, "a test")  # doctest: +SKIP
    """
    free = free_bytes()
    if free is not None and free < needed:
        total = shutil.disk_usage(SHM).total
        raise RuntimeError(
            f"{what} needs {format_bytes(needed)} of shared memory, but {SHM} has "
            f"{format_bytes(free)} free (of {format_bytes(total)}); {_fixes(needed)}"
        )


def new_shared(nbytes: int) -> torch.UntypedStorage:
    """A storage of ``nbytes`` in shared memory, with a clear error when it is full."""
    try:
        return torch.UntypedStorage._new_shared(nbytes)  # no copy, unlike share_memory_()
    except RuntimeError as exc:
        if "shared memory" not in str(exc) and "No space left" not in str(exc):
            raise
        free = free_bytes()
        room = "" if free is None else f" ({format_bytes(free)} free)"
        raise RuntimeError(
            f"could not allocate {format_bytes(nbytes)} of shared memory in {SHM}{room}: {exc}; {_fixes(nbytes)}"
        ) from exc
