"""``RemotePack``: a pack at a URL, read through the local ``ShardCache``.

``PackedDataset("s3://bucket/train.packed")`` reads the manifest from the URL
(with retries), downloads the small files (labels, an encoded pack's index) when
it opens, and each shard when a sample of it is first read, or ahead of time
(``prefetch``: ``ChunkedLoader`` asks for the next chunk's shards while it
serves the current one). Every file is checked against the manifest's SHA-256
as it arrives (``cache.py``), so ``PackedDataset``'s memory maps (``packs/_maps.py``)
see only verified files. ``verify`` hashes every object at the URL without caching it.
"""

from __future__ import annotations

import io
import os
from typing import IO, Any

import numpy as np

from torchloader.packs.format import MANIFEST, Manifest
from torchloader.readers._npy_header import read_npy_header
from torchloader.remote.cache import ShardCache, default_cache_dir
from torchloader.remote.retries import Retries, retrying
from torchloader.remote.urls import filesystem, join_url

__all__ = ["RemotePack"]

_HEAD = 65536 + 12  # bytes that hold any .npy header of format 1.0 (a pack's are 128)


class RemotePack:
    """A pack at ``url`` (see the module docstring); picklable, opens nothing until used.

    Args:
        url: the pack's URL (``s3://bucket/prefix``, ``gs://...``, ``https://...``).
        cache_dir: the local cache folder (default ``default_cache_dir()``).
        cache_limit: bytes the cache folder may hold (``"200GiB"``; None: no limit).
        storage_options: passed to fsspec (``{"anon": True}``, an ``endpoint_url``, ...).
        retries: how failed reads are retried (default: 5 tries, from 0.5 s apart).
    """

    def __init__(
        self,
        url: str,
        *,
        cache_dir: str | None = None,
        cache_limit: int | str | None = None,
        storage_options: dict[str, Any] | None = None,
        retries: Retries | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.retries = retries or Retries()
        self._fs, self.path = filesystem(self.url, self.storage_options)
        self._pid = os.getpid()
        self.cache_dir = cache_dir or default_cache_dir()
        self.cache_limit = cache_limit
        self._cache: ShardCache | None = None
        self._files: dict[str, tuple[str, str, int]] = {}  # cached path -> (name, sha256, bytes)
        self._paths: dict[str, str] = {}  # name in the pack -> cached path
        self._manifest: Manifest | None = None

    @property
    def fs(self) -> Any:
        """The fsspec filesystem, made anew in a forked process (fsspec's are not fork-safe)."""
        if self._pid != os.getpid() or self._fs is None:
            self._fs, _ = filesystem(self.url, {**self.storage_options, "skip_instance_cache": True})
            self._pid = os.getpid()
        return self._fs

    def manifest(self) -> Manifest:
        """The pack's manifest, read from the URL (once)."""
        if self._manifest is None:
            url = join_url(self.url, MANIFEST)
            try:
                data = retrying(lambda: self.fs.cat_file(join_url(self.path, MANIFEST)), url, "reading", self.retries)
            except FileNotFoundError as exc:
                raise FileNotFoundError(
                    f"'{url}' does not exist: '{self.url}' is not a pack, or its pack was interrupted; "
                    f"run `torchloader pack SRC {self.url}` (again) to complete it"
                ) from exc
            self._manifest = Manifest.parse(data, url, self.url)
            self._index_files(self._manifest)
        return self._manifest

    def _index_files(self, m: Manifest) -> None:
        files = [(s.file, s.sha256, s.nbytes) for s in m.shards]
        for small in (m.labels, m.encoded and m.encoded["index"]):
            if small:
                files.append((small["file"], small["sha256"], -1))
        for name, sha256, nbytes in files:
            self._paths[name] = self.cache.local(name, sha256)
            self._files[self._paths[name]] = (name, sha256, nbytes)

    @property
    def cache(self) -> ShardCache:
        if self._cache is None:
            self._cache = ShardCache(
                self.url, lambda: self.fs, self.path, self.cache_dir, self.cache_limit, self.retries
            )
        return self._cache

    def cached(self, name: str) -> str:
        """The local path of the pack's file ``name`` in the cache (downloaded or not)."""
        return self._paths[name]

    def open(self, path: str) -> IO[bytes]:
        """The cached file at ``path`` (from :meth:`cached`), downloaded first if needed."""
        name, sha256, nbytes = self._files[path]
        if nbytes >= 0:
            return self.cache.open(name, sha256, nbytes)
        url, remote = join_url(self.url, name), join_url(self.path, name)  # a small file: its size when downloaded
        return self.cache.open(
            name, sha256, lambda: int(retrying(lambda: self.fs.size(remote), url, "reading", self.retries))
        )

    def read_range(self, name: str, start: int, length: int) -> bytes:
        """``length`` bytes of the pack's file ``name`` from ``start`` (one ranged request)."""
        url, path = join_url(self.url, name), join_url(self.path, name)
        data = retrying(lambda: self.fs.cat_file(path, start=start, end=start + length), url, "reading", self.retries)
        if len(data) > length:  # a server that ignores ranges (Python's http.server) sends it all
            data = data[start : start + length]
        if len(data) != length:
            raise ValueError(f"'{url}' is shorter than its manifest says (a damaged pack)")
        return data

    def read_row(self, name: str, row: int, manifest: Manifest) -> np.ndarray:
        """Row ``row`` of the raw pack's shard ``name``: its header, then the row (two ranged requests)."""
        nbytes = next(s.nbytes for s in manifest.shards if s.file == name)
        url = join_url(self.url, name)
        try:  # a pack's headers are 128 bytes; a longer one is read again, whole
            header = read_npy_header(io.BytesIO(self.read_range(name, 0, min(nbytes, 128))), url)
        except ValueError:
            header = read_npy_header(io.BytesIO(self.read_range(name, 0, min(nbytes, _HEAD))), url)
        size = int(np.prod(manifest.sample_shape)) * header.dtype.itemsize
        data = self.read_range(name, header.offset + row * size, size)
        return np.frombuffer(data, header.dtype).reshape(manifest.sample_shape)

    def fetch_small_files(self) -> None:
        """Download the pack's small files (labels, index) if they are not cached."""
        self.manifest()
        for path, (_, _, nbytes) in list(self._files.items()):
            if nbytes < 0:
                self.open(path).close()

    def cached_shards(self) -> frozenset[int]:
        """The numbers of the shards in the cache now."""
        m = self.manifest()
        return frozenset(k for k, s in enumerate(m.shards) if self.cache.is_cached(s.file, s.sha256))

    def prefetch(self, shards: list[int]) -> None:
        """Start downloading the shards numbered ``shards`` that are not cached."""
        m = self.manifest()
        self.cache.prefetch([(m.shards[k].file, m.shards[k].sha256, m.shards[k].nbytes) for k in shards])

    def verify(self) -> list[str]:
        """Every object of the pack hashed as it streams from the URL; [] if all is well."""
        from torchloader.packs.verify import count_problems, expected_files

        manifest, problems = self.manifest(), []
        for name, shape, dtype, sha256 in expected_files(manifest):
            url = join_url(self.url, name)
            try:
                problems += retrying(
                    lambda: self._verify_one(name, url, shape, dtype, sha256), url, "reading", self.retries
                )
            except FileNotFoundError:
                problems.append(f"'{url}' is missing")
        return problems + count_problems(manifest)

    def _verify_one(self, name: str, url: str, shape: tuple, dtype: str, sha256: str) -> list[str]:
        from torchloader.packs.verify import check_npy

        with self.fs.open(join_url(self.path, name), "rb") as f:
            return check_npy(f, url, shape, dtype, sha256)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"] = None  # each process makes its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._cache is not None:
            self._cache.fs_of = lambda: self.fs
