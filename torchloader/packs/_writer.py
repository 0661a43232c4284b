"""How ``pack`` writes shards: blocks of samples decoded in parallel into their place.

Work is split into blocks of about 4 MiB of samples, not into shards, so every
worker process has work (and the progress bar moves) even when the whole data
set fits in one shard. The main process creates each shard's temporary file at
its full size; a worker decodes a block and writes it straight into its rows
(no pickling of pixels back to the main process; see ``_blocks.py``). Meanwhile
the main process hashes the blocks written so far, in order (``_digest.py``);
once all blocks of a shard are in, it drops the rows of skipped samples, syncs,
checks and renames it. The shard layout depends on ``shard_bytes`` alone, so
any number of workers writes the same bytes.

The checksum certifies the decoded pixels, not whatever the file holds later:
each worker sends back a checksum of every row it decoded, and every row of the
finished file is checked against them before it is published, so a shard that
anything else wrote into is refused.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import closing
from typing import Any, NamedTuple

import numpy as np

from torchloader._core.progress import progress_bar
from torchloader.errors import SampleLoadError
from torchloader.packs._blocks import Block, init_worker, sample, start_worker, write_block
from torchloader.packs._digest import ShardDigest, certified_sha256
from torchloader.protocols import MapDataset

__all__ = ["ShardWritten", "Stored", "probe", "write_shards"]

_BLOCK_BYTES = 4 << 20  # a worker task decodes about this many bytes of samples

# Looked up here when used (tests replace them): a worker's task, and the final check.
_write_block = write_block
_certified_sha256 = certified_sha256


class Stored(NamedTuple):
    """How samples are stored: the shape and dtype of one, and the layout."""

    shape: tuple[int, ...]
    dtype: str
    layout: str  # "HWC" for images, "as-is" for arrays

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


class ShardWritten(NamedTuple):
    """A finished shard: its file and which source samples it holds, in order."""

    number: int
    file: str | None  # None: every sample of the shard was skipped
    kept: np.ndarray  # source indices
    skipped: list[dict[str, str]]
    sha256: str
    nbytes: int


class _Shard(NamedTuple):
    number: int
    start: int  # the first source index it covers
    stop: int
    partial: str  # its temporary file while it is written
    offset: int  # where the data starts in that file (after the .npy header)


def probe(dataset: MapDataset) -> Stored:
    """Shape and dtype as stored, and the layout, from the first readable sample."""
    for index in range(len(dataset)):
        try:
            x = sample(dataset, index)
        except SampleLoadError:
            continue
        return Stored(tuple(x.shape), x.dtype.str, "HWC" if dataset.images else "as-is")
    raise ValueError("no sample of the source could be read; nothing to pack")


def write_shards(
    dataset: MapDataset, dst: str, stored: Stored, shard_bytes: int, on_error: str, workers: int, progress: bool
) -> list[ShardWritten]:
    """Write every sample of ``dataset`` into shards in ``dst``; see the module docstring."""
    per_shard = max(1, shard_bytes // max(1, stored.row_bytes))
    per_block = max(1, min(per_shard, _BLOCK_BYTES // max(1, stored.row_bytes)))
    shards: list[_Shard] = []
    try:
        for k, a in enumerate(range(0, len(dataset), per_shard)):
            b = min(a + per_shard, len(dataset))
            path = os.path.join(dst, f"shard-{k:05d}.npy.partial")
            shards.append(_Shard(k, a, b, path, _create(path, b - a, stored)))
        tasks = [
            (s, a, min(a + per_block, s.stop), stored, on_error)
            for s in shards
            for a in range(s.start, s.stop, per_block)
        ]
        return _collect(dataset, dst, shards, tasks, workers, progress, stored.row_bytes)
    except BaseException:
        for shard in shards:  # finished shards stay: without a manifest they do not load
            for path in (shard.partial, shard.partial + ".compact"):
                if os.path.exists(path):
                    os.remove(path)
        raise


def _collect(dataset, dst, shards, tasks, workers, progress, row_bytes) -> list[ShardWritten]:
    """Run the tasks, hashing each shard as its blocks come in; finish each shard as
    soon as all its blocks are written."""
    blocks: dict[int, list[Block]] = {}
    digests: dict[int, ShardDigest] = {}
    done = []
    bar = progress_bar(total=len(dataset), unit="sample", desc="packing", disable=not progress)
    try:
        with bar, closing(_results(dataset, tasks, workers)) as results:
            for block in results:
                bar.update(block.stop - block.start)
                shard = shards[block.shard]
                if shard.number not in digests:
                    digests[shard.number] = ShardDigest(
                        dst, shard.partial, shard.offset, shard.start, shard.stop, row_bytes
                    )
                digest = digests[shard.number]
                digest.add(block)
                blocks.setdefault(shard.number, []).append(block)
                if digest.received == shard.stop - shard.start:
                    digest.flush()  # the rest goes to disk while the shard is checked
                    done.append(_finish_shard(dst, shard, blocks.pop(shard.number), digest))
                    digests.pop(shard.number).close()
    finally:
        for digest in digests.values():
            digest.close()
    return sorted(done, key=lambda d: d.number)


def _create(path: str, count: int, stored: Stored) -> int:
    """A ``.npy`` file for ``count`` samples, its data not written yet; returns the header size."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, _header(count, stored))
        offset = f.tell()
        f.truncate(offset + count * stored.row_bytes)
    return offset


def _header(count: int, stored: Stored) -> dict[str, Any]:
    descr = np.lib.format.dtype_to_descr(np.dtype(stored.dtype))
    return {"descr": descr, "fortran_order": False, "shape": (count, *stored.shape)}


def _raw(array: np.ndarray) -> np.ndarray:
    """The bytes of a C-contiguous array, as a flat uint8 view (any dtype)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def _results(dataset: MapDataset, tasks: list[tuple], workers: int) -> Iterator[Block]:
    """The finished blocks, in any order; closing this generator stops the workers."""
    if workers == 0 or len(tasks) <= 1:
        init_worker(dataset)
        try:
            yield from map(_write_block, tasks)
        finally:
            init_worker(None)
        return
    # ProcessPoolExecutor, not Pool: a worker killed (out of memory) raises
    # BrokenProcessPool here instead of leaving the pack waiting forever.
    pool = ProcessPoolExecutor(min(workers, len(tasks)), mp.get_context(), start_worker, (dataset,))
    futures = [pool.submit(_write_block, task) for task in tasks]
    try:
        for future in as_completed(futures):
            yield future.result()  # re-raises a worker's SampleLoadError
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _finish_shard(dst: str, shard: _Shard, blocks: list[Block], digest: ShardDigest | None = None) -> ShardWritten:
    """Drop skipped rows, check, sync and move a shard whose blocks are all written
    into place (``digest``: its SHA-256 as written, where complete)."""
    blocks.sort(key=lambda b: b.start)
    kept = np.concatenate([b.kept for b in blocks])
    skipped = [item for b in blocks for item in b.skipped]
    if len(kept) == 0:
        os.remove(shard.partial)
        return ShardWritten(shard.number, None, kept, skipped, "", 0)
    if len(kept) < shard.stop - shard.start:
        _compact(shard.partial, kept - shard.start)
    sha256 = _certified_sha256(dst, shard.partial, blocks, digest if digest and digest.complete else None)
    with open(shard.partial, "r+b") as f:
        os.fsync(f.fileno())
    name = f"shard-{shard.number:05d}.npy"
    path = os.path.join(dst, name)
    os.replace(shard.partial, path)
    return ShardWritten(shard.number, name, kept, skipped, sha256, os.path.getsize(path))


def _compact(path: str, rows: np.ndarray) -> None:
    """Rewrite the ``.npy`` file ``path`` with only ``rows``, a block at a time."""
    full = np.load(path, mmap_mode="r", allow_pickle=False)
    stored = Stored(full.shape[1:], full.dtype.str, "")
    step = max(1, _BLOCK_BYTES // max(1, stored.row_bytes))
    with open(path + ".compact", "wb") as f:
        np.lib.format.write_array_header_1_0(f, _header(len(rows), stored))
        for i in range(0, len(rows), step):
            f.write(_raw(full[rows[i : i + step]]))
    del full
    os.replace(path + ".compact", path)
