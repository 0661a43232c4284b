"""What ``torchloader bench`` reads: the data set at a path, as the loaders will see it."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from torchloader.datasets.path import PathDataset
from torchloader.packs._source import open_source
from torchloader.packs.dataset import PackedDataset
from torchloader.packs.format import MANIFEST
from torchloader.readers.crops import RandomResizedCrop

__all__ = ["open_for_bench"]


def open_for_bench(path: str, *, limit: int | None = None, crop: int | None = None) -> Dataset:
    """The data set at ``path`` (image folder, CSV, ``.npy`` folder or packed
    directory), reduced to ``limit`` samples spread over it (every k-th); ``crop``:
    images decoded with ``RandomResizedCrop(crop)`` (a folder or an encoded pack of
    images of many sizes)."""
    decode = None if crop is None else {"decode": RandomResizedCrop(crop)}
    if os.path.exists(os.path.join(path, MANIFEST)):
        ds: Any = PackedDataset(path, **(decode or {}))
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
