"""``ShardCache``: files of remote packs downloaded whole into a local folder under a byte limit.

A file is downloaded once, under a name that carries the first 16 hex digits of
its SHA-256 from the manifest (``shard-00003.<sha>.npy``): a pack rebuilt at the
same URL has other names, so a cached file of the old pack is never served for
the new one. A download goes to a temporary name preallocated to the file's size
(``_space.py`` keeps the folder under the limit), is hashed as its bytes arrive
and is renamed into place only if its size and SHA-256 match the manifest: a
damaged or replaced object is refused by name, never served. One process
downloads a given file at a time (a ``flock`` per file); the others wait for it
and then open the finished file. Failed reads are retried (``retries.py``).

Layout::

    CACHE/
        .lock                          # usage accounting (_space.py)
        <16 hex of the pack URL>/
            url.txt                    # which URL this folder caches
            shard-00000.<sha16>.npy    # finished downloads
            shard-00001.<sha16>.npy.<pid>.partial   # one in progress
            labels.<sha16>.npy
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from torchloader._core.units import format_bytes, parse_bytes
from torchloader.remote._space import evict_for, locked
from torchloader.remote.retries import Retries, retrying
from torchloader.remote.urls import join_url

__all__ = ["ShardCache", "cached_name", "default_cache_dir", "touch"]

_BLOCK = 8 << 20  # bytes asked for in one request
_RANGES = 4  # requests at once per download (32 MiB in RAM per download in flight: 3 at most)


def default_cache_dir() -> str:
    """``$TORCHLOADER_CACHE``, else ``$XDG_CACHE_HOME/torchloader``, else ``~/.cache/torchloader``."""
    if os.environ.get("TORCHLOADER_CACHE"):
        return os.environ["TORCHLOADER_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "torchloader")


def cached_name(name: str, sha256: str) -> str:
    """``shard-00003.npy`` -> ``shard-00003.<first 16 hex of sha256>.npy``."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{sha256[:16]}.{suffix}" if dot else f"{name}.{sha256[:16]}"


class ShardCache:
    """The local cache of one remote pack (see the module docstring).

    Args:
        url: the pack's URL (its folder in the cache is named after it).
        fs_of, path: gives the fsspec filesystem (of this process); the pack's path in it.
        cache_dir: the cache folder, shared by every pack cached there.
        limit: bytes the whole cache folder may hold (None: no limit).
        retries: how failed reads are retried.
    """

    def __init__(
        self, url: str, fs_of: Callable[[], Any], path: str, cache_dir: str, limit: int | str | None, retries: Retries
    ) -> None:
        self.url, self.fs_of, self.path = url, fs_of, path
        self.root = os.path.abspath(cache_dir)
        self.limit = None if limit is None else parse_bytes(limit)
        self.retries = retries
        self.folder = os.path.join(self.root, hashlib.sha256(url.encode()).hexdigest()[:16])  # made by a download
        self.downloaded = 0  # bytes this process downloaded
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, Future] = {}
        self._guard = threading.Lock()
        self._pid = os.getpid()

    def local(self, name: str, sha256: str) -> str:
        """Where ``name`` is (or will be) in the cache."""
        return os.path.join(self.folder, cached_name(name, sha256))

    def is_cached(self, name: str, sha256: str) -> bool:
        return os.path.exists(self.local(name, sha256))

    def open(self, name: str, sha256: str, nbytes: int | Callable[[], int]) -> IO[bytes]:
        """The cached file ``name``, open for reading, downloaded first if it is not cached
        (``nbytes``: its size, or what gives it: asked for only to download it). Once open,
        an eviction cannot take it away (it is opened right after the rename, under the
        folder's lock; a file evicted before that is downloaded again)."""
        final = self.local(name, sha256)
        for _ in range(3):
            try:
                f = open(final, "rb")
                touch(final)
                return f
            except FileNotFoundError:
                pass
            self._made()
            with locked(os.path.join(self.folder, "." + os.path.basename(final) + ".lock")):
                if not os.path.exists(final):
                    return self._download(name, sha256, nbytes if isinstance(nbytes, int) else nbytes(), final)
        raise FileNotFoundError(
            f"'{final}' (of '{join_url(self.url, name)}') was evicted as soon as it was cached 3 times"
        )

    def prefetch(self, files: list[tuple[str, str, int]]) -> None:
        """Start downloading ``(name, sha256, nbytes)`` of files not cached, two at a
        time on background threads; a failure is left for the reader to meet again."""
        self._after_fork()
        with self._guard:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(2, thread_name_prefix="torchloader-prefetch")
            for name, sha256, nbytes in files:
                pending = self._pending.get(name)
                if (pending is None or pending.done()) and not self.is_cached(name, sha256):
                    self._pending[name] = self._pool.submit(self._prefetch_one, name, sha256, nbytes)

    def _after_fork(self) -> None:
        """A forked process starts with no prefetch threads (and a lock no thread holds)."""
        if self._pid != os.getpid():
            self._pid, self._pool, self._pending, self._guard = os.getpid(), None, {}, threading.Lock()

    def _prefetch_one(self, name: str, sha256: str, nbytes: int) -> None:
        try:
            self.open(name, sha256, nbytes).close()
        except Exception:  # the reader downloads it again, and raises what fails
            pass

    def _made(self) -> None:
        """The pack's folder in the cache, with ``url.txt`` (which URL it caches)."""
        url_txt = os.path.join(self.folder, "url.txt")
        if not os.path.exists(url_txt):
            os.makedirs(self.folder, exist_ok=True)
            with locked(os.path.join(self.root, ".lock")):  # (counted: its bytes are the folder's)
                with open(url_txt, "w", encoding="utf-8") as f:
                    f.write(self.url + "\n")

    def _download(self, name: str, sha256: str, nbytes: int, final: str) -> IO[bytes]:
        url = join_url(self.url, name)
        if self.limit is not None and nbytes > self.limit:
            raise ValueError(
                f"'{url}' is {format_bytes(nbytes)}, more than cache_limit="
                f"{format_bytes(self.limit)}: raise cache_limit (or re-pack with a smaller shard_bytes)"
            )
        partial = f"{final}.{os.getpid()}.{threading.get_ident()}.partial"
        evict_for(self.root, nbytes, self.limit, partial, url)
        try:
            digest = retrying(lambda: self._copy(name, partial, nbytes), url, "downloading", self.retries)
            if digest != sha256:
                raise ValueError(
                    f"'{url}' does not match its checksum in the pack's manifest (its bytes changed, or "
                    f"another pack was written there since): refused. `torchloader verify {self.url}` "
                    f"lists what differs; `torchloader pack SRC {self.url} --overwrite` rebuilds it"
                )
            with locked(os.path.join(self.root, ".lock")):  # no count sees neither name; no eviction before open
                os.replace(partial, final)
                f = open(final, "rb")
            self.downloaded += nbytes
            return f
        finally:
            if os.path.exists(partial):
                os.remove(partial)

    def _copy(self, name: str, partial: str, nbytes: int) -> str:
        """One try: the object's bytes into ``partial`` (from its start), synced; their SHA-256.
        Never more than ``nbytes`` (the space reserved): a shorter or another object fails its
        checksum. The object is asked for in ranges of ``_BLOCK`` bytes, ``_RANGES`` at once
        (concurrent requests where the filesystem is asynchronous, as s3fs, gcsfs and http are)."""
        digest, fs = hashlib.sha256(), self.fs_of()
        source = self.path.rstrip("/") + "/" + name
        with open(partial, "r+b") as f:
            for first in range(0, nbytes, _BLOCK * _RANGES):
                starts = list(range(first, min(first + _BLOCK * _RANGES, nbytes), _BLOCK))
                stops = [min(start + _BLOCK, nbytes) for start in starts]
                for start, stop, block in zip(
                    starts, stops, fs.cat_ranges([source] * len(starts), starts, stops, on_error="return")
                ):
                    if isinstance(block, BaseException):
                        if getattr(block, "errno", None) == errno.EINVAL or "InvalidRange" in str(block):
                            return "shorter than the manifest says"  # (S3 answers 416 past the end)
                        raise block
                    if len(block) > stop - start:  # a server that ignores ranges sends it all
                        block = block[start:stop]
                    if len(block) != stop - start:
                        return "shorter than the manifest says"
                    digest.update(block)
                    f.write(block)
            f.flush()
            os.fsync(f.fileno())  # a cached file is trusted by its name: never a torn one
        return digest.hexdigest()

    def close(self) -> None:
        """Stop prefetching (a download under way finishes first)."""
        self._after_fork()
        with self._guard:
            pool, self._pool = self._pool, None
            self._pending = {}
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(fs_of=None, _pool=None, _pending={}, _guard=None, downloaded=0)  # fs_of: RemotePack's
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._guard = threading.Lock()


def touch(path: str) -> None:
    try:
        os.utime(path)  # recently used: evicted last
    except OSError:
        pass
