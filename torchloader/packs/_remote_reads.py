"""What a ``PackedDataset`` at a URL adds: prefetching shards, peeking at one sample, and
the plan ``ChunkedSampler`` orders its epochs by (``remote/``). A local pack has the same
methods; they do nothing more than ``ds[i]`` would."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from torchloader._core.indices import check_index
from torchloader.packs._encoded import HEADER_BYTES as HEADER
from torchloader.remote.open import CachePlan

__all__ = ["RemoteReads"]


class RemoteReads:
    """Mixed into ``PackedDataset`` (its ``remote``, ``manifest``, ``_stops``, ``_files``)."""

    remote: Any
    manifest: Any
    _stops: np.ndarray
    _files: Any
    _encoded: Any
    _peeked: dict[int, np.ndarray]

    def prefetch_samples(self, indices: Sequence[int] | np.ndarray) -> None:
        """Start downloading the shards that hold ``indices`` (a remote pack; a local
        one has nothing to fetch). ``ChunkedLoader`` calls it with the next chunk's."""
        if self.remote is not None and len(indices):
            self.remote.prefetch(np.unique(np.searchsorted(self._stops, np.asarray(indices), side="right")).tolist())

    def peek_sample(self, index: int) -> Any:
        """``ds[index]``, read without downloading its shard where it is not cached (a
        remote pack: one ranged request for the sample's bytes). ``ChunkedLoader`` reads
        the samples' layout with it, so a rank downloads only the shards of its own chunks."""
        index = check_index(index, len(self))
        self._open()  # type: ignore[attr-defined]
        k = int(np.searchsorted(self._stops, index, side="right"))
        shard = self.manifest.shards[k]
        if self.remote is None or self.remote.cache.is_cached(shard.file, shard.sha256):
            return self[index]  # type: ignore[index]
        if self._encoded is not None:
            offset, length = (int(v) for v in self._files.index[index, :2])
            self._peeked[index] = np.frombuffer(self.remote.read_range(shard.file, HEADER + offset, length), np.uint8)
        else:
            self._peeked[index] = self.remote.read_row(shard.file, index - shard.start, self.manifest)
        try:
            return self[index]  # type: ignore[index]
        finally:
            self._peeked.pop(index, None)

    def cache_plan(self) -> Any:
        """What ``ChunkedSampler`` orders a remote pack's epochs by (``order/cached.py``):
        where each shard ends, its bytes, the shards cached now and the cache limit;
        None for a local pack."""
        if self.remote is None:
            return None
        return CachePlan(self._stops, [s.nbytes for s in self.manifest.shards], self.remote)
