"""Where a dataset meets a URL: ``open_remote`` for ``PackedDataset``, and ``CachePlan``,
what ``ChunkedSampler`` needs to know of a remote pack's cache (``order/cached.py``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from torchloader._core.units import parse_bytes
from torchloader.remote.retries import Retries
from torchloader.remote.urls import is_url

__all__ = ["CachePlan", "open_remote"]


def open_remote(
    root: str, cache_dir: Any, cache_limit: Any, storage_options: Any, retries: int
) -> Any:  # a RemotePack, or None for a local pack
    """The ``RemotePack`` of the URL ``root``; None (and no remote options) for a local path."""
    if not is_url(root):
        given = [
            name
            for name, value in (
                ("cache_dir", cache_dir),
                ("cache_limit", cache_limit),
                ("storage_options", storage_options),
            )
            if value is not None
        ]
        if given:
            raise ValueError(f"{', '.join(given)} apply to a pack at a URL (s3://...); '{root}' is a local folder")
        return None
    from torchloader.remote.packs import RemotePack

    if cache_limit is not None:
        parse_bytes(cache_limit)  # a bad limit fails here, by name
    folder = None if cache_dir is None else os.fspath(cache_dir)
    return RemotePack(
        root, cache_dir=folder, cache_limit=cache_limit, storage_options=storage_options, retries=Retries(retries)
    )


@dataclass
class CachePlan:
    """A remote pack's shards and cache, as ``ChunkedSampler`` orders an epoch by them."""

    stops: np.ndarray  # one past the last sample of each shard
    nbytes: list[int]  # of each shard
    remote: Any  # the RemotePack

    def cached(self) -> frozenset[int]:
        """The shards in the cache now."""
        return self.remote.cached_shards()

    @property
    def limit(self) -> int | None:
        limit = self.remote.cache_limit
        return None if limit is None else parse_bytes(limit)

    def room(self) -> int | None:
        """Bytes the cache has for shards: its limit less the small files of every pack in
        it (``_space.pinned_bytes``; this pack's are downloaded first), which eviction never
        frees; None: no limit."""
        from torchloader.remote._space import pinned_bytes

        limit = self.limit
        if limit is None:
            return None
        self.remote.fetch_small_files()
        return limit - pinned_bytes(self.remote.cache.root)
