"""What ``torchloader bench`` reads: the data set at a path, as the loaders will see it."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from torchloader.datasets.path import PathDataset
from torchloader.packs._source import open_source
from torchloader.packs.dataset import PackedDataset
from torchloader.packs.format import MANIFEST
from torchloader.readers.crops import RandomResizedCrop
from torchloader.remote.urls import is_url

__all__ = ["download_rate", "open_for_bench"]


def open_for_bench(
    path: str, *, limit: int | None = None, crop: int | None = None, cache_dir: str | None = None
) -> Dataset:
    """The data set at ``path`` (image folder, CSV, ``.npy`` folder, packed directory,
    or a pack at a URL, cached in ``cache_dir``), reduced to ``limit`` samples spread over
    it (every k-th); ``crop``: images decoded with ``RandomResizedCrop(crop)`` (a folder
    or an encoded pack of images of many sizes)."""
    decode = None if crop is None else {"decode": RandomResizedCrop(crop)}
    if is_url(path) or os.path.exists(os.path.join(path, MANIFEST)):
        remote = {"cache_dir": cache_dir} if is_url(path) else {}
        ds: Any = PackedDataset(path, **(decode or {}), **remote)
        if limit is not None and limit < len(ds):
            raise ValueError(f"--limit is for file folders; '{path}' is packed (pack fewer samples instead)")
        return ds
    ds = open_source(path, size=None, crop=False, mode="RGB")[0].dataset
    keep = np.arange(len(ds))
    if limit is not None and limit < len(ds):
        keep = (np.arange(limit) * (len(ds) / limit)).astype(np.int64)
    if decode is None and len(keep) == len(ds):
        return ds
    labels = None if ds.labels is None else ds.labels[keep]
    reader = {} if decode is not None else {"reader": ds.reader}
    return PathDataset(ds.paths[keep], labels, classes=ds.classes, **reader, **(decode or {}))


def download_rate(ds: PackedDataset) -> tuple[float, float]:
    """``(samples/s, bytes/s)`` of downloading every shard of the remote pack ``ds`` into
    its (empty) cache, two at a time as ``ChunkedLoader``'s prefetch does."""
    from concurrent.futures import ThreadPoolExecutor

    shards = ds.manifest.shards
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        for f in pool.map(lambda s: ds.remote.cache.open(s.file, s.sha256, s.nbytes), shards):
            f.close()
    seconds = max(time.perf_counter() - start, 1e-9)
    return len(ds) / seconds, sum(s.nbytes for s in shards) / seconds
