"""A ``pack`` worker's task: decode a block of samples into their rows of a shard file.

Per sample, the cost to beat is the decode itself (~80-180 us for a 128x128 JPEG),
so a block is decoded and written a run of ``_RUN_BYTES`` at a time through one
small buffer that stays in the core's cache: JPEGs that need no resizing are
decoded by libjpeg-turbo straight into their row (``PackSource.read_into``),
anything else is read as ``ds[i]`` and copied; while the run is still in cache
its rows are checksummed (``row_checks``) and it goes to the file with one
``pwrite`` (a 4 MiB block written at once costs 2.5x as much here). A worker
first takes what it inherited out of the garbage collector's reach (``start_worker``).

``row_checks`` is what lets the main process certify that the finished file
holds the bytes decoded here: a 64-bit sum of each row's words weighted by
their odd position (any change of one word changes it, as does moving words
within a row), ~4 us per 48 KiB row, a sixth of ``zlib.crc32``.
"""

from __future__ import annotations

import functools
import gc
import os
from typing import Any, NamedTuple

import numpy as np

from torchloader.errors import SampleLoadError
from torchloader.protocols import MapDataset

__all__ = ["Block", "init_worker", "row_checks", "sample", "start_worker", "write_block"]

_RUN_BYTES = 1 << 19  # rows decoded, written and checksummed together (a core's L2 cache)


class Block(NamedTuple):
    """What a worker reports of the samples ``start:stop`` of one shard."""

    shard: int
    start: int
    stop: int
    kept: np.ndarray  # source indices written (the others were skipped)
    skipped: list[dict[str, str]]
    checks: np.ndarray  # row_checks of the kept rows, as decoded


def sample(dataset: MapDataset, index: int) -> np.ndarray:
    """Sample ``index`` as stored: images ``H x W x C``, arrays as they are."""
    item = dataset[index]
    x = item[0] if isinstance(item, tuple) else item  # labels come from dataset.labels
    return (x.permute(1, 2, 0) if dataset.images else x).numpy()  # images: C x H x W -> H x W x C


@functools.lru_cache(maxsize=8)
def _weights(words: int) -> np.ndarray:
    return np.arange(1, 2 * words, 2, dtype=np.uint64)


def row_checks(rows: np.ndarray) -> np.ndarray:
    """One ``uint64`` checksum per row of the ``n x row_bytes`` uint8 array ``rows``."""
    n, width = rows.shape
    if width == 0:
        return np.zeros(n, np.uint64)
    size = next(s for s in (8, 4, 2, 1) if width % s == 0)
    words = rows.view(f"<u{size}")  # the widest word that divides a row
    return np.einsum("ij,j->i", words, _weights(width // size), dtype=np.uint64)


_dataset: Any = None  # the source, in each worker process (set once by init_worker)
_buffer = np.empty(0, np.uint8)  # reused: fresh memory costs a page fault per 4 KiB


def init_worker(dataset: MapDataset | None) -> None:
    global _dataset
    _dataset = dataset


def start_worker(dataset: MapDataset) -> None:
    """Set up a worker process. ``gc.freeze`` first: a forked worker inherits every
    object of the main process (torch's, numpy's), and its first full garbage
    collection would walk them all, copying each page it touches (135 ms of CPU per
    worker here, 30 us per sample of a 4,000-sample share)."""
    gc.freeze()
    init_worker(dataset)


def _run_buffer(rows: int, row_bytes: int) -> np.ndarray:
    global _buffer
    if _buffer.size < rows * row_bytes:
        _buffer = np.empty(rows * row_bytes, np.uint8)
    return _buffer[: rows * row_bytes].reshape(rows, row_bytes)


def write_block(task: tuple) -> Block:
    """Decode samples ``start:stop`` into their rows of the shard's temporary file."""
    shard, start, stop, stored, on_error = task
    run = max(1, min(stop - start, _RUN_BYTES // max(1, stored.row_bytes)))
    kept: list[int] = []
    skipped: list[dict[str, str]] = []
    checks = []
    try:
        fd = os.open(shard.partial, os.O_WRONLY)
        try:
            for a in range(start, stop, run):
                b = min(a + run, stop)
                rows = _run_buffer(b - a, stored.row_bytes)
                ok = _decode(a, b, rows, stored, on_error, kept, skipped)
                checks.append(row_checks(rows if ok.all() else rows[ok]))  # (while in cache)
                _pwrite(fd, rows, shard.offset + (a - shard.start) * stored.row_bytes)
        finally:
            os.close(fd)
    except OSError as exc:  # a full disk: name the file (a worker's OSError has no name)
        raise OSError(exc.errno, exc.strerror, shard.partial) from None
    return Block(shard.number, start, stop, np.array(kept, dtype=np.int64), skipped, np.concatenate(checks))


def _decode(a: int, b: int, rows: np.ndarray, stored, on_error: str, kept: list, skipped: list) -> np.ndarray:
    """Samples ``a:b`` into ``rows``; returns which rows were read (the others were skipped)."""
    ok = np.ones(b - a, dtype=bool)
    into = getattr(_dataset, "read_into", None)
    slots = rows.view(stored.dtype).reshape(b - a, *stored.shape)
    for index, slot in zip(range(a, b), slots):
        try:
            if into is None or not into(index, slot):
                slot[...] = _checked(index, stored)
        except SampleLoadError as exc:
            if on_error == "raise":
                raise
            skipped.append({"path": _dataset.path(index), "error": str(exc)})
            ok[index - a] = False
            rows[index - a] = 0  # (what a failed decode left there; the row is dropped from the shard)
            continue
        kept.append(index)
    return ok


def _pwrite(fd: int, rows: np.ndarray, offset: int) -> None:
    data = memoryview(rows).cast("B")
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _checked(index: int, stored) -> np.ndarray:
    x = sample(_dataset, index)
    if x.shape != stored.shape or x.dtype.str != stored.dtype:
        path = _dataset.path(index)
        fix = "pass size=... to resize" if _dataset.images else "arrays must share one shape and dtype"
        raise SampleLoadError(
            f"sample {index} from '{path}' has {x.dtype} {x.shape} instead of "
            f"{np.dtype(stored.dtype)} {stored.shape}; {fix}",
            index=index,
            path=path,
        )
    return x
