"""How a ``PackedDataset`` maps its files: checked, and the pack it opened or an error.

What is checked when (the README's Reliability section has the same list):

- **At open** (``PackedDataset(root)``, in the process that builds it): the
  manifest parses and its fields fit together; every shard and ``labels.npy``
  has the size the manifest says; ``labels.npy``'s SHA-256 matches (labels are
  small, and a flipped byte there silently changes a class). With
  ``verify=True`` every shard's SHA-256 too (reads the whole pack once).
- **When a process maps the shards** (the first read, in each DataLoader worker
  of each epoch): the header, shape and dtype of each file; its size again, on
  the very file that is mapped; and that ``manifest.json`` is still the one the
  dataset opened. A pack rebuilt (``--overwrite``) or being rebuilt since then
  is refused by name: shards mapped before the rebuild keep serving the old
  files (they stay alive while mapped), so a reader serves the pack it opened
  or fails, never the new samples under the old manifest.
- **At most once a second while mapped** (so at every epoch start): each mapped
  file that is still in place must not have shrunk. A file truncated in place
  (``cp`` or ``rsync --inplace`` over a pack) is named instead of the reading
  process dying of ``SIGBUS``.

What remains: a shard truncated in place *between* two checks while a batch
reads it still ends the process with ``SIGBUS`` (the kernel's answer to reading
a mapped page past the end of a file), and bytes flipped in a shard after open
are served unless ``verify=True`` (at open) or ``torchloader verify`` catch
them. Write packs once and replace them only with ``torchloader pack``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from torchloader.packs.format import INDEX_COLUMNS, Manifest, sha256_of
from torchloader.readers._npy_header import NpyHeader, map_npy, read_npy_header
from torchloader.remote.cache import touch

__all__ = ["PackFiles", "RemoteShards", "damaged"]

RECHECK_SECONDS = 1.0
SWEEP_SECONDS = 0.2  # a remote pack's reader lets go of evicted shards at most this late


class _Mapped(NamedTuple):
    path: str
    device: int
    inode: int
    size: int


def damaged(root: str, what: str) -> ValueError:
    """The error for a pack file that does not match its manifest, with the fix."""
    return ValueError(
        f"{what}: the packed directory '{root}' is damaged; `torchloader verify {root}` "
        f"lists what differs, and `torchloader pack SRC {root} --overwrite` rebuilds it"
    )


class PackFiles:
    """The files of one pack, as its manifest describes them; maps them checked."""

    def __init__(self, root: str, manifest: Manifest, remote: Any = None) -> None:
        self.root = root
        self.manifest = manifest
        self.remote = remote  # a RemotePack: files come from its cache (remote/packs.py)
        self._mapped: list[_Mapped] = []
        self._checked = 0.0
        self.index: np.ndarray | None = None  # an encoded pack's, once mapped

    def _files(self) -> list[tuple[str, tuple[int, ...], np.dtype, int | None]]:
        """``(name, shape, dtype, size in bytes)`` of every shard, then of the labels,
        then of an encoded pack's index."""
        m = self.manifest
        files = [(s.file, m.shard_shape(k), np.dtype(m.dtype), s.nbytes) for k, s in enumerate(m.shards)]
        if m.labels is not None:
            files.append((m.labels["file"], (m.count,), np.dtype(np.int64), None))
        if m.encoded is not None:
            files.append((m.encoded["index"]["file"], (m.count, len(INDEX_COLUMNS)), np.dtype(np.int64), None))
        return files

    def check(self, *, contents: bool = False) -> None:
        """The checks at open (see the module docstring); raises ``ValueError`` by name.
        A remote pack's small files are downloaded now, its shards when first read:
        both are checked against their SHA-256 as they arrive."""
        if self.remote is not None:
            for entry in self._files()[len(self.manifest.shards) :]:
                self._map(*entry)
            self._mapped = []
            return
        for name, shape, dtype, nbytes in self._files():
            path = os.path.join(self.root, name)
            with self._opened(path) as (_, info, header):
                self._check_header(path, shape, dtype, nbytes, info, header)
        checked = [(s.file, s.sha256) for s in self.manifest.shards] if contents else []
        for small in (self.manifest.labels, self.manifest.encoded and self.manifest.encoded["index"]):
            if small:  # small, and a flipped byte there silently changes a class or a sample
                checked.append((small["file"], small["sha256"]))
        for name, sha256 in checked:
            path = os.path.join(self.root, name)
            if sha256_of(path) != sha256:
                raise damaged(self.root, f"'{path}' does not match its checksum in the manifest: its bytes changed")

    def map(self) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Copy-on-write maps of the shards and the labels (see the module docstring);
        an encoded pack's index is :attr:`index` then."""
        self._mapped = []
        if self.remote is not None:  # the shards are downloaded as they are read
            arrays = [self._map(*entry) for entry in self._files()[len(self.manifest.shards) :]]
            self.index = arrays.pop() if self.manifest.encoded is not None else None
            return RemoteShards(self), arrays.pop() if self.manifest.labels is not None else None
        try:
            arrays = [self._map(*entry) for entry in self._files()]
        except ValueError as exc:  # damaged, or rebuilt: say which
            self._mapped = []
            self._check_fingerprint(exc)
            raise
        self._check_fingerprint(None)
        self._checked = time.monotonic()
        self.index = arrays.pop() if self.manifest.encoded is not None else None
        labels = arrays.pop() if self.manifest.labels is not None else None
        return arrays, labels

    def _check_fingerprint(self, cause: BaseException | None) -> None:
        """Refuse a pack whose manifest is no longer the one this dataset read."""
        if Manifest.fingerprint_of(self.root) != self.manifest.fingerprint:
            self._mapped = []
            raise ValueError(
                f"'{self.root}' was packed again (or is being packed) since this PackedDataset "
                f"opened it: its files now hold other samples than the manifest it read. Open it "
                f"again (PackedDataset('{self.root}')) once the pack has finished"
            ) from cause

    def _map(self, name: str, shape: tuple[int, ...], dtype: np.dtype, nbytes: int | None) -> np.ndarray:
        path = os.path.join(self.root, name) if self.remote is None else self.remote.cached(name)
        with self._opened(path) as (f, info, header):  # check and map one open file: no race
            self._check_header(path, shape, dtype, nbytes, info, header)
            array = map_npy(f, header, path)  # copy-on-write: writable, so torch can view it
        self._mapped.append(_Mapped(path, info.st_dev, info.st_ino, info.st_size))
        return array

    def _check_header(
        self,
        path: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        nbytes: int | None,
        info: os.stat_result,
        header: NpyHeader,
    ) -> None:
        """Refuse ``path`` unless its header and size are what the manifest says."""
        if header.shape != shape or header.dtype != dtype or header.fortran:
            raise damaged(self.root, f"'{path}' holds {header.dtype} {header.shape}, the manifest says {dtype} {shape}")
        expected = header.file_size
        if info.st_size != expected or (nbytes is not None and info.st_size != nbytes):
            raise damaged(
                self.root, f"'{path}' is {info.st_size} bytes, its header and the manifest need {expected} (truncated?)"
            )

    @contextmanager
    def _opened(self, path: str) -> Iterator[tuple[BinaryIO, os.stat_result, NpyHeader]]:
        """The open file, its ``fstat`` and its ``.npy`` header (a remote pack's file:
        downloaded first if it is not cached, opened under its download lock)."""
        f = self._open_file(path)
        with f:
            try:
                info = os.fstat(f.fileno())
                header = read_npy_header(f, path)
            except (OSError, ValueError) as exc:
                raise damaged(self.root, f"cannot read the header of '{path}' ({type(exc).__name__}: {exc})") from exc
            yield f, info, header

    def _open_file(self, path: str) -> BinaryIO:
        if self.remote is not None:  # its own errors: the URL and the attempts, a checksum refused
            return self.remote.open(path)
        try:
            return open(path, "rb")
        except OSError as exc:
            raise damaged(self.root, f"cannot open '{path}' ({type(exc).__name__}: {exc})") from exc

    def recheck(self) -> None:
        """At most once a second: no mapped file still in place has shrunk."""
        now = time.monotonic()
        if now - self._checked < RECHECK_SECONDS:
            return
        self._checked = now
        for mapped in self._mapped:
            try:
                info = os.stat(mapped.path)
            except FileNotFoundError:  # removed or being replaced: the map keeps the old file
                continue
            if (info.st_dev, info.st_ino) == (mapped.device, mapped.inode) and info.st_size < mapped.size:
                raise damaged(
                    self.root,
                    f"'{mapped.path}' was truncated in place to {info.st_size} of its {mapped.size} "
                    f"bytes while mapped (a cp or rsync --inplace over the pack?); reading on would "
                    f"end this process with SIGBUS",
                )


class RemoteShards:
    """The shards of a remote pack, each downloaded and mapped when first read (a list
    of maps to the dataset). Whenever it maps another shard, and at most every
    ``SWEEP_SECONDS`` as it reads, it lets go of the maps whose cached file was evicted
    (one ``stat`` each), so that their disk space is freed; a shard read again after
    that is fetched again. The shards it reads are marked recently used (evicted last)
    at most once a second; the others are not, so the cache's order stays the order of use."""

    def __init__(self, files: PackFiles) -> None:
        self._files = files
        self._entries = files._files()[: len(files.manifest.shards)]
        self._maps: dict[int, tuple[str, int, np.ndarray]] = {}
        self._read: set[int] = set()  # read since the last touch
        self._touched = self._swept = time.monotonic()
        self._lock, self._pid = threading.Lock(), os.getpid()  # loader threads share it

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, k: int) -> np.ndarray:
        if self._pid != os.getpid():  # forked: a lock no thread of this process holds
            self._lock, self._pid = threading.Lock(), os.getpid()
        with self._lock:
            now = time.monotonic()
            mapped = self._maps.get(k)
            if mapped is None or now - self._swept >= SWEEP_SECONDS:
                self._sweep(now)
                mapped = self._maps.get(k)
            if mapped is None:
                path = self._files.remote.cached(self._entries[k][0])
                array = self._files._map(*self._entries[k])
                mapped = self._maps[k] = (path, self._files._mapped.pop().inode, array)
            self._read.add(k)
            if now - self._touched >= RECHECK_SECONDS:
                self._touched = now
                for j in self._read:
                    if j in self._maps:
                        touch(self._maps[j][0])
                self._read.clear()
            return mapped[2]

    def _sweep(self, now: float) -> None:
        """Let go of the maps whose cached file is gone (evicted) or replaced."""
        self._swept = now
        for j, (path, inode, _) in list(self._maps.items()):
            try:
                if os.stat(path).st_ino == inode:
                    continue
            except FileNotFoundError:
                pass
            self._maps.pop(j, None)
