"""How ``pack(..., encoded=True)`` writes: each file's bytes as they are, one after the other.

An encoded pack is a copy, not a decode: threads read the files in order (a few in
flight, so the disk always has a request), each file's height and width are read
from its header (libjpeg-turbo's header parser for JPEGs, Pillow's lazy ``open`` for
the rest, which also refuses what it cannot identify), and the bytes go into the
current shard file, a one-dimensional ``uint8`` ``.npy`` array, until it holds
``shard_bytes``. A shard is written under a temporary name with room for its header,
the header written once its size is known, then synced, hashed and renamed; the
index (``index.npy``, see ``format.py``) says where each sample's bytes are. Nothing
is decoded, so a file whose header is fine but whose pixels are damaged is found
when it is read (``SampleLoadError`` naming its sample, the pack and the source file).

``max_side=N`` is the one exception to "as they are": an image whose longer side is
over ``N`` is decoded, shrunk so that side is ``N`` (Pillow's Lanczos filter, the
aspect ratio kept) and encoded again, a JPEG as a JPEG at quality 90 (EXIF kept, so an
orientation tag still applies; a mean 3.1 levels from the Lanczos resize of the source
over 140 photo crops, worst image 4.2), any other format as a PNG. Its pixels are then
no longer the source file's; the others' still are.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from torchloader._core.progress import progress_bar
from torchloader.errors import SampleLoadError
from torchloader.packs._writer import ShardWritten
from torchloader.packs.format import sha256_of
from torchloader.readers._read_ahead import read_many
from torchloader.readers.image import simplejpeg

__all__ = ["HEADER_BYTES", "EncodedWritten", "image_size", "write_encoded"]

HEADER_BYTES = 128  # bytes of a one-dimensional uint8 .npy header of any length (np.lib.format pads to 64)
_RUN = 64  # files one thread reads in a row (one task: a future per file cost more than the read)
_AHEAD = 8  # runs read ahead of the one being written
_BUFFER = 8 << 20  # bytes gathered before a write: one syscall per small file cost 24 us here


class EncodedWritten(NamedTuple):
    shards: list[ShardWritten]
    index: np.ndarray  # int64 (kept samples, 4): offset, length, height, width


def image_size(data: bytes, path: str) -> tuple[int, int]:
    """``(height, width)`` of the image in ``data``, from its header alone."""
    if simplejpeg is not None and data[:3] == b"\xff\xd8\xff":
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return height, width
        except ValueError:
            pass  # Pillow says what is wrong with it, or reads it after all
    with Image.open(io.BytesIO(data)) as image:  # the header only; the bomb guard applies
        return image.height, image.width


def _sized(dataset: Any, index: int, max_side: int | None, data: bytes | Exception) -> tuple[bytes, tuple[int, int]]:
    path = dataset.path(index)
    try:
        if isinstance(data, Exception):
            raise data
        size = image_size(data, path)
        if max_side is not None and max(size) > max_side:
            return _shrunk(data, max_side)
        return data, size
    except Exception as exc:
        raise SampleLoadError.from_exception(index, path, exc) from exc


JPEG_QUALITY = 90  # of the images max_side shrinks


def _shrunk(data: bytes, max_side: int) -> tuple[bytes, tuple[int, int]]:
    """The image in ``data`` with its longer side shrunk to ``max_side``, encoded again."""
    with Image.open(io.BytesIO(data)) as image:
        jpeg = image.format == "JPEG"
        exif = image.info.get("exif")
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.resize(size, Image.LANCZOS)
    out = io.BytesIO()
    if jpeg:
        small.save(out, "JPEG", quality=JPEG_QUALITY, **({"exif": exif} if exif else {}))
    else:
        small.save(out, "PNG")
    return out.getvalue(), (small.height, small.width)


def _in_order(dataset: Any, workers: int, max_side: int | None = None) -> Iterator[tuple[int, Any]]:
    """``(index, (bytes, size) or the SampleLoadError)`` of every sample, in order."""
    n = len(dataset)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = []
        for start in range(0, n, _RUN):
            pending.append(pool.submit(_read_run, dataset, start, min(n, start + _RUN), max_side))
            if len(pending) > _AHEAD:
                yield from pending.pop(0).result()
        for future in pending:
            yield from future.result()


def _read_run(dataset: Any, start: int, stop: int, max_side: int | None) -> list[tuple[int, Any]]:
    out: list[tuple[int, Any]] = []
    read = read_many([dataset.path(index) for index in range(start, stop)])  # all requested at once
    for index, data in zip(range(start, stop), read):
        try:
            out.append((index, _sized(dataset, index, max_side, data)))
        except SampleLoadError as exc:
            out.append((index, exc))
    return out


class _ShardFile:
    """One shard being written: a temporary file with room for its header.

    The files' bytes are gathered as they are (no copy into a buffer) and handed to
    the kernel ``_BUFFER`` bytes at a time by one ``os.writev``.
    """

    def __init__(self, dst: str, number: int) -> None:
        self.number = number
        self.file = f"shard-{number:05d}.npy"
        self.partial = os.path.join(dst, self.file + ".partial")
        self.fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
        self.pending: list[bytes] = [b"\0" * HEADER_BYTES]
        self.pending_bytes = HEADER_BYTES
        self.size = 0
        self.kept: list[int] = []
        self.skipped: list[dict[str, str]] = []

    def add(self, index: int, data: bytes) -> int:
        offset = self.size
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes >= _BUFFER:
            self.flush()
        self.size += len(data)
        self.kept.append(index)
        return offset

    def flush(self) -> None:
        write_all(self.fd, self.pending)
        self.pending, self.pending_bytes = [], 0

    def finish(self, dst: str) -> ShardWritten:
        """Write the header, sync, rename and hash (on ``write_encoded``'s finishing thread:
        ``fsync`` and SHA-256 let go of the GIL, so the next shard is filled meanwhile)."""
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (self.size,)})
        assert len(header.getvalue()) == HEADER_BYTES, "a .npy header of another length"
        try:
            self.flush()
            os.pwrite(self.fd, header.getvalue(), 0)
            os.fsync(self.fd)
        finally:
            os.close(self.fd)
        if not self.kept:
            os.remove(self.partial)
            return ShardWritten(self.number, None, np.zeros(0, np.int64), self.skipped, "", 0)
        final = os.path.join(dst, self.file)
        os.replace(self.partial, final)
        kept = np.asarray(self.kept, np.int64)
        return ShardWritten(self.number, self.file, kept, self.skipped, sha256_of(final), HEADER_BYTES + self.size)

    def abandon(self) -> None:
        os.close(self.fd)


_IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 1024


def write_all(fd: int, parts: list[bytes]) -> None:
    """Write ``parts`` one after the other at ``fd``'s position (``os.writev``, short writes
    resumed; one joined ``os.write`` where the OS has no ``writev``)."""
    if not hasattr(os, "writev"):
        parts = [b"".join(parts)]
    for start in range(0, len(parts), _IOV_MAX):
        views = [memoryview(part) for part in parts[start : start + _IOV_MAX]]
        first = 0
        while first < len(views):
            written = os.writev(fd, views[first:]) if hasattr(os, "writev") else os.write(fd, views[first])
            while first < len(views) and written >= len(views[first]):
                written -= len(views[first])
                first += 1
            if written:
                views[first] = views[first][written:]


def write_encoded(
    dataset: Any, dst: str, shard_bytes: int, on_error: str, workers: int, progress: bool, max_side: int | None = None
) -> EncodedWritten:
    """Copy every sample's file into shards of about ``shard_bytes`` (see the module).

    A full shard is finished (``_ShardFile.finish``) on a thread of its own while the next
    one fills, one at a time: the next full shard waits for it. Interrupted, the pack
    waits for that one finish to end (through further interrupts), so no thread is left
    writing into ``dst`` when it returns."""
    finishing: list[Future[ShardWritten]] = []
    rows: list[tuple[int, int, int, int]] = []
    shard = _ShardFile(dst, 0)
    unfinished: _ShardFile | None = shard  # the shard this thread still owns (not handed over)
    bar = progress_bar(total=len(dataset), unit="file", desc="packing (encoded)", disable=not progress)
    finisher = ThreadPoolExecutor(1, thread_name_prefix="torchloader-pack-finish")
    try:
        for index, read in _in_order(dataset, workers, max_side):
            bar.update(1)
            if isinstance(read, SampleLoadError):
                if on_error != "skip" or not read.skippable:
                    raise read
                shard.skipped.append({"path": dataset.path(index), "error": str(read)})
                continue
            data, (height, width) = read
            if shard.size and shard.size + len(data) > shard_bytes:
                if finishing:
                    finishing[-1].result()  # one shard finishing at a time (its error raises here)
                unfinished = None
                finishing.append(_hand_over(finisher, shard, dst))
                shard = unfinished = _ShardFile(dst, shard.number + 1)
            rows.append((shard.add(index, data), len(data), height, width))
        unfinished = None
        finishing.append(_hand_over(finisher, shard, dst))
        shards = [future.result() for future in finishing]  # a failed sync or rename raises here
    except BaseException:
        _wait_through_interrupts(finishing)  # first: then nothing writes into dst
        if unfinished is not None:
            unfinished.abandon()
        raise
    finally:
        finisher.shutdown(wait=True)  # (idle by now: every finish has ended)
        bar.close()
    return EncodedWritten(shards, np.asarray(rows, np.int64).reshape(-1, 4))


def _hand_over(finisher: ThreadPoolExecutor, shard: _ShardFile, dst: str) -> Future[ShardWritten]:
    """``shard.finish`` on the finishing thread; a shard the pool refused is abandoned."""
    try:
        return finisher.submit(shard.finish, dst)
    except RuntimeError:  # (the interpreter shutting down)
        shard.abandon()
        raise


def _wait_through_interrupts(futures: list[Future[ShardWritten]]) -> None:
    """Wait for ``futures`` to end, a second Ctrl-C included: a finish still running would
    write into a rerun's files of the same names."""
    while True:
        try:
            wait(futures)
            return
        except KeyboardInterrupt:
            continue
