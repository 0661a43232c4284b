"""How ``pack`` certifies a shard: its SHA-256, of the bytes the workers decoded.

The SHA-256 of a shard is one sequential pass over the file (~36 us per 48 KiB
sample here, a fifth of decoding it): taken only once the shard is complete, as
it once was, it ran alone after the last decode, the whole pass on one core with
the workers idle (for a data set of one shard, all of it). ``ShardDigest`` takes
it instead as the blocks come in, in order, while the workers decode the next
ones, and starts the shard's writeback to disk (``fdatasync`` in a thread) every
``_SYNC_BYTES``, so that the ``fsync`` before the shard is published has little
left to wait for.

What is published must be what was decoded: each worker sends back a checksum
of every row it decoded (``_blocks.row_checks``), and ``certified_sha256``, once
the shard is complete and synced, reads the file once more and checks every row
against them (a pass about a third the cost of the hash). A shard that anything else
wrote into, before or after it was hashed, is refused, never published (had the
rows hashed differed from the rows checked, the checksum in the manifest would
not match the file, which ``verify_pack`` reports). A shard with skipped samples
is compacted (its rows move) and hashed whole there instead.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator

import numpy as np

from torchloader.packs._blocks import Block, row_checks

__all__ = ["ShardDigest", "certified_sha256"]

_SYNC_BYTES = 32 << 20  # start writing a shard back to disk after every this many bytes
_PIECE_BYTES = 1 << 18  # read and hashed or checked at a time: stays in cache


class ShardDigest:
    """The SHA-256 of the shard file ``path`` (data at ``offset``, source samples
    ``start:stop``, ``row_bytes`` each) taken as its blocks are written."""

    def __init__(self, dst: str, path: str, offset: int, start: int, stop: int, row_bytes: int) -> None:
        self.dst, self.path, self.row_bytes = dst, path, row_bytes
        self.fd = os.open(path, os.O_RDWR)  # (only read: writable so that fdatasync works everywhere)
        self.header = os.pread(self.fd, offset, 0)
        self.sha = hashlib.sha256(self.header)
        self.offset, self.start, self.next, self.stop = offset, start, start, stop
        self.waiting: dict[int, Block] = {}
        self.received = 0  # samples of the blocks in
        self.whole = True  # no sample skipped so far: the rows stay where they were written
        self._synced = 0
        self._sync: threading.Thread | None = None

    @property
    def complete(self) -> bool:
        """Whether the hash covers the whole file as written, with no row left out."""
        return self.whole and self.next == self.stop

    def add(self, block: Block) -> None:
        """Hash ``block`` and the blocks after it that are in, as far as they reach."""
        self.received += block.stop - block.start
        self.whole = self.whole and len(block.kept) == block.stop - block.start
        self.waiting[block.start] = block
        while self.whole and self.next in self.waiting:
            ready = self.waiting.pop(self.next)
            position = self.offset + (ready.start - self.start) * self.row_bytes
            _hash_rows(self.fd, position, ready.stop - ready.start, self.row_bytes, self.sha)
            self.next = ready.stop
        if self.received * self.row_bytes - self._synced >= _SYNC_BYTES:
            self.flush()

    def flush(self) -> None:
        """Start writing what is written so far back to disk, unless that is under way
        (or the shard will be compacted into a new file: then this one never is)."""
        if self.whole and (self._sync is None or not self._sync.is_alive()):
            self._synced = self.received * self.row_bytes
            self._sync = threading.Thread(target=_writeback, args=(self.fd,), daemon=True)
            self._sync.start()

    def close(self) -> None:
        if self._sync is not None:
            self._sync.join()
        os.close(self.fd)


def _writeback(fd: int) -> None:
    try:
        os.fdatasync(fd)
    except OSError:  # the fsync before the shard is published reports it
        pass


_buffer = np.empty(0, np.uint8)  # reused: fresh memory costs a page fault per 4 KiB


def _hash_rows(fd: int, position: int, count: int, row_bytes: int, sha) -> None:
    """Hash ``count`` rows of ``fd`` from ``position``."""
    for rows in _pieces(fd, position, count, row_bytes):
        sha.update(rows)


def _check_rows(dst: str, path: str, fd: int, position: int, block: Block, row_bytes: int, sha) -> None:
    """Check the kept rows of ``block``, from ``position`` in ``fd``, against what was
    decoded, and (given ``sha``) hash them."""
    done = 0
    for rows in _pieces(fd, position, len(block.kept), row_bytes):
        if not np.array_equal(row_checks(rows), block.checks[done : done + len(rows)]):
            break
        if sha is not None:
            sha.update(rows)
        done += len(rows)
    if done < len(block.kept) and row_bytes:  # other bytes, or the file ends early
        raise RuntimeError(
            f"'{path}' does not hold the samples {block.start}..{block.stop - 1} this "
            f"pack decoded: another process wrote into '{dst}' meanwhile. Nothing was "
            f"published; make sure one pack at a time writes there and run it again"
        )


def _pieces(fd: int, position: int, count: int, row_bytes: int) -> Iterator[np.ndarray]:
    """``count`` rows of ``fd`` from ``position``, a few at a time, in one reused buffer
    (fresh memory costs a page fault per 4 KiB), small enough to stay in cache while
    it is hashed or checked; stops early where the file ends."""
    global _buffer
    step = max(1, _PIECE_BYTES // max(1, row_bytes))
    if _buffer.size < step * row_bytes:
        _buffer = np.empty(step * row_bytes, np.uint8)
    for a in range(0, count if row_bytes else 0, step):  # (rows of no bytes: nothing to read)
        rows = _buffer[: min(step, count - a) * row_bytes].reshape(-1, row_bytes)
        read = os.preadv(fd, [rows], position + a * row_bytes)
        yield rows[: read // row_bytes]
        if read < rows.nbytes:
            return


def certified_sha256(dst: str, path: str, blocks: list[Block], digest: ShardDigest | None = None) -> str:
    """The SHA-256 of the shard file ``path``, after checking that each block's rows
    hold the bytes its worker decoded (``blocks`` in order). With the ``digest`` of
    the file as written (``ShardDigest.complete``), only the check reads the file."""
    with open(path, "rb", buffering=0) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        head = os.pread(f.fileno(), f.tell(), 0)
        if digest is not None and head != digest.header:
            raise RuntimeError(f"'{path}' does not hold the header this pack wrote; run the pack again")
        sha = None if digest is not None else hashlib.sha256(head)
        position = len(head)
        for block in blocks:
            _check_rows(dst, path, f.fileno(), position, block, row_bytes, sha)
            position += len(block.kept) * row_bytes
        if os.pread(f.fileno(), 1, position):
            raise RuntimeError(f"'{path}' is longer than the rows this pack wrote; run the pack again")
    return (digest.sha if sha is None else sha).hexdigest()
