"""Indices checked once, one way, for every dataset: ``ds[i]``, ``ds[indices]``, ``gather``.

A single index that is not an integer and a batch that is not a one-dimensional
sequence of integers are ``TypeError`` (as Python's ``list[1.5]`` is); an index
outside ``[-len, len)`` is ``IndexError``; negative indices count from the end.
Floats are refused, never truncated: ``[0.5, 1.7]`` is not samples 0 and 1.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch

__all__ = ["as_index_array", "check_index", "is_batch"]


def is_batch(index: Any) -> bool:
    """Whether ``ds[index]`` asks for a batch (a list, tuple, slice, array or tensor)."""
    if isinstance(index, (list, tuple, slice)):
        return True
    return isinstance(index, (np.ndarray, torch.Tensor)) and index.ndim >= 1


def check_index(index: Any, length: int) -> int:
    """``index`` as an ``int`` in ``[0, length)`` (negative ones count from the end)."""
    try:
        index = operator.index(index)
    except TypeError:
        raise TypeError(
            f"index must be an integer (got {type(index).__name__}); for a batch pass a list or array of indices"
        ) from None
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range for {length} samples")
    return index + length if index < 0 else index


def as_index_array(indices: Any, length: int) -> np.ndarray:
    """``indices`` (list, array, tensor or slice) as ``int64``, checked against ``length``."""
    if isinstance(indices, slice):
        return np.arange(*indices.indices(length), dtype=np.int64)
    if isinstance(indices, torch.Tensor):
        indices = indices.numpy()
    array = np.asarray(indices)
    if array.ndim != 1 or not (array.dtype.kind in "iu" or array.size == 0):
        raise TypeError(
            f"a batch of indices must be a one-dimensional sequence of integers "
            f"(got {array.dtype} with shape {array.shape})"
        )
    array = array.astype(np.int64, copy=False)
    if not array.size:
        return array
    low, high = array.min(), array.max()
    if low >= 0 and high < length:  # the common case: one pass less (a copy of an array of yours)
        return array if not isinstance(indices, (np.ndarray, torch.Tensor)) else np.array(array)
    if low < -length or high >= length:
        bad = array[(array < -length) | (array >= length)][0]
        raise IndexError(f"index {bad} is out of range for {length} samples")
    return np.where(array < 0, array + length, array)
