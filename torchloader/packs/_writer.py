"""How ``pack`` writes shards: blocks of samples decoded in parallel into their place.

Work is split into blocks of about 4 MiB of samples, not into shards, so every
worker process has work (and the progress bar moves) even when the whole data
set fits in one shard. The main process creates each shard's temporary file at
its full size; a worker decodes a block and writes it straight into its rows
(no pickling of pixels back to the main process); once all blocks of a shard
are in, the main process drops the rows of skipped samples, syncs, checksums
and renames it. The shard layout depends on ``shard_bytes`` alone, so any number
of workers writes the same bytes.

The checksum certifies the decoded pixels, not whatever the file holds later:
each worker sends back a CRC-32 of the rows it decoded, and the one read of the
finished file that computes its SHA-256 also checks every block's CRC, so a
shard that anything else wrote into is refused, never published.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import zlib
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import closing
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from torchloader.errors import SampleLoadError
from torchloader.protocols import MapDataset

__all__ = ["ShardWritten", "Stored", "probe", "write_shards"]

_BLOCK_BYTES = 4 << 20  # a worker task decodes about this many bytes of samples


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


class _Block(NamedTuple):
    shard: int
    start: int
    stop: int
    kept: np.ndarray  # source indices written (the others were skipped)
    skipped: list[dict[str, str]]
    crc: int  # CRC-32 of the kept rows' bytes, as decoded


def probe(dataset: MapDataset) -> Stored:
    """Shape and dtype as stored, and the layout, from the first readable sample."""
    for index in range(len(dataset)):
        try:
            x = _sample(dataset, index)
        except SampleLoadError:
            continue
        return Stored(tuple(x.shape), x.dtype.str, "HWC" if dataset.images else "as-is")
    raise ValueError("no sample of the source could be read; nothing to pack")


def _sample(dataset: MapDataset, index: int) -> np.ndarray:
    item = dataset[index]
    x = item[0] if isinstance(item, tuple) else item  # labels come from dataset.labels
    return (x.permute(1, 2, 0) if dataset.images else x).numpy()  # images: C x H x W -> H x W x C


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
        return _collect(dataset, dst, shards, tasks, workers, progress)
    except BaseException:
        for shard in shards:  # finished shards stay: without a manifest they do not load
            for path in (shard.partial, shard.partial + ".compact"):
                if os.path.exists(path):
                    os.remove(path)
        raise


def _collect(dataset, dst, shards, tasks, workers, progress) -> list[ShardWritten]:
    """Run the tasks; finish each shard as soon as all its blocks are written."""
    blocks: dict[int, list[_Block]] = defaultdict(list)
    done = []
    bar = tqdm(total=len(dataset), unit="sample", desc="packing", disable=not progress)
    with bar, closing(_results(dataset, tasks, workers)) as results:
        for block in results:
            bar.update(block.stop - block.start)
            shard = shards[block.shard]
            blocks[shard.number].append(block)
            if sum(b.stop - b.start for b in blocks[shard.number]) == shard.stop - shard.start:
                done.append(_finish_shard(dst, shard, blocks.pop(shard.number)))
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


_dataset: Any = None  # the source, in each worker process (set once by _init)


def _init(dataset: MapDataset) -> None:
    global _dataset
    _dataset = dataset


def _results(dataset: MapDataset, tasks: list[tuple], workers: int) -> Iterator[_Block]:
    """The finished blocks, in any order; closing this generator stops the workers."""
    if workers == 0 or len(tasks) <= 1:
        _init(dataset)
        try:
            yield from map(_write_block, tasks)
        finally:
            _init(None)
        return
    # ProcessPoolExecutor, not Pool: a worker killed (out of memory) raises
    # BrokenProcessPool here instead of leaving the pack waiting forever.
    pool = ProcessPoolExecutor(min(workers, len(tasks)), mp.get_context(), _init, (dataset,))
    futures = [pool.submit(_write_block, task) for task in tasks]
    try:
        for future in as_completed(futures):
            yield future.result()  # re-raises a worker's SampleLoadError
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _write_block(task: tuple) -> _Block:
    """Decode samples ``start:stop`` into their rows of the shard's temporary file."""
    shard, start, stop, stored, on_error = task
    out = np.zeros((stop - start, *stored.shape), dtype=stored.dtype)
    kept, skipped = [], []
    for index in range(start, stop):
        try:
            out[index - start] = _checked(index, stored)
        except SampleLoadError as exc:
            if on_error == "raise":
                raise
            skipped.append({"path": _dataset.path(index), "error": str(exc)})
            continue
        kept.append(index)
    rows = np.array(kept, dtype=np.int64)
    try:
        with open(shard.partial, "r+b") as f:
            f.seek(shard.offset + (start - shard.start) * stored.row_bytes)
            f.write(_raw(out))
    except OSError as exc:  # a full disk: name the file (a worker's OSError has no name)
        raise OSError(exc.errno, exc.strerror, shard.partial) from None
    crc = zlib.crc32(_raw(out if len(rows) == len(out) else out[rows - start]))
    return _Block(shard.number, start, stop, rows, skipped, crc)


def _checked(index: int, stored: Stored) -> np.ndarray:
    x = _sample(_dataset, index)
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


def _finish_shard(dst: str, shard: _Shard, blocks: list[_Block]) -> ShardWritten:
    """Drop skipped rows, sync and move a shard whose blocks are all written into place."""
    blocks.sort(key=lambda b: b.start)
    kept = np.concatenate([b.kept for b in blocks])
    skipped = [item for b in blocks for item in b.skipped]
    if len(kept) == 0:
        os.remove(shard.partial)
        return ShardWritten(shard.number, None, kept, skipped, "", 0)
    if len(kept) < shard.stop - shard.start:
        _compact(shard.partial, kept - shard.start)
    with open(shard.partial, "r+b") as f:
        os.fsync(f.fileno())
    sha256 = _certified_sha256(dst, shard.partial, blocks)
    name = f"shard-{shard.number:05d}.npy"
    path = os.path.join(dst, name)
    os.replace(shard.partial, path)
    return ShardWritten(shard.number, name, kept, skipped, sha256, os.path.getsize(path))


def _certified_sha256(dst: str, path: str, blocks: list[_Block]) -> str:
    """The SHA-256 of the shard file ``path``, after checking that each block's rows
    hold the bytes its worker decoded (``blocks`` in order)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        header = f.tell()
        f.seek(0)
        digest.update(f.read(header))
        for block in blocks:
            data = f.read(len(block.kept) * row_bytes)
            digest.update(data)
            if zlib.crc32(data) != block.crc:
                raise RuntimeError(
                    f"'{path}' does not hold the samples {block.start}..{block.stop - 1} this "
                    f"pack decoded: another process wrote into '{dst}' meanwhile. Nothing was "
                    f"published; make sure one pack at a time writes there and run it again"
                )
        if f.read(1):
            raise RuntimeError(f"'{path}' is longer than the rows this pack wrote; run the pack again")
    return digest.hexdigest()


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
