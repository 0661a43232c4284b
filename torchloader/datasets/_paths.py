"""A ``PathDataset``'s paths: one NumPy array of bytes, cheap to send to workers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Union

import numpy as np

__all__ = ["encode_paths", "has_urls"]

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
