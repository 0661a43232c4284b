"""A ``PathDataset``'s paths: one NumPy array of bytes, cheap to send to workers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from torchloader.readers._read_ahead import read_ahead, wanted
from torchloader.remote.files import fetched

__all__ = ["batch_files", "encode_paths", "has_urls"]

PathLike = Union[str, bytes, "os.PathLike[str]"]


def encode_paths(paths: Sequence[PathLike] | np.ndarray) -> np.ndarray:
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(
            f"paths must be a sequence of paths (got the single path {paths!r}); "
            f"for a folder use PathDataset.from_folder"
        )
    # os.fsencode keeps non-UTF-8 names (surrogate escapes) round-trippable.
    return np.array([os.fsencode(p) for p in paths], dtype=np.bytes_)


def has_urls(paths: np.ndarray) -> bool:
    """Whether any of ``paths`` (an array of bytes) is a URL (``s3://...``: ``remote/``)."""
    if not len(paths):
        return False
    from torchloader.remote.urls import is_url

    maybe = np.flatnonzero(np.char.find(paths, b"://") > 0)
    return any(is_url(paths[i]) for i in maybe[:1000])


def batch_files(paths: np.ndarray, indices: Any, urls: bool, storage_options: dict[str, Any] | None) -> Any:
    """A context in which the files of the batch ``indices`` are read together: URLs all at
    once (``remote/files.py``), local files a window ahead of the reader (``readers/_read_ahead.py``)."""
    if not urls and not wanted():
        return contextlib.nullcontext()  # nothing to read ahead here (or an outer batch does)
    try:
        batch = [os.fsdecode(paths[i]) for i in indices]
    except (IndexError, TypeError, ValueError):
        return contextlib.nullcontext()  # indices that are not the batch's: the read names them
    return fetched(batch, storage_options) if urls else read_ahead(batch)
