"""A batch read straight into one buffer, for datasets that can write a sample in place.

A ``DataLoader`` with ``batch_size=256`` builds a batch by calling
``dataset[i]`` 256 times and stacking the results: every sample is decoded into
a temporary array, wrapped in a tensor and copied once more by the stack. A
dataset with ``read_into(indices, out)`` (``PathDataset``) skips both: the batch
buffer is allocated once, with the first sample's memory order (a ``C x H x W``
image decoded as ``H x W x C`` gets channels-last slots, so no transposition),
and each JPEG is decoded by libjpeg-turbo directly into its slot. In a
``DataLoader`` worker the buffer is allocated in shared memory, so sending the
batch to the main process copies nothing (as torch's own collate does).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .chunk_buffer import SampleLayout
from .samples import ShapeMismatch, describe, mismatch_message, split_sample

__all__ = ["as_index_array", "is_batch", "read_batch"]


def is_batch(index: Any) -> bool:
    """Whether ``ds[index]`` asks for a batch (a list, tuple, slice, array or tensor)."""
    if isinstance(index, (list, tuple, slice)):
        return True
    return isinstance(index, (np.ndarray, torch.Tensor)) and index.ndim >= 1


def as_index_array(indices: Any, length: int) -> np.ndarray:
    """``indices`` (list, array, tensor or slice) as ``int64``, checked against ``length``."""
    if isinstance(indices, slice):
        return np.arange(*indices.indices(length), dtype=np.int64)
    if isinstance(indices, torch.Tensor):
        indices = indices.numpy()
    array = np.asarray(indices)
    if array.ndim != 1 or not (array.dtype.kind in "iu" or array.size == 0):
        raise IndexError(
            f"a batch of indices must be a one-dimensional sequence of integers "
            f"(got {array.dtype} with shape {array.shape})"
        )
    array = array.astype(np.int64, copy=False)
    if array.size and (array.min() < -length or array.max() >= length):
        bad = array[(array < -length) | (array >= length)][0]
        raise IndexError(f"index {bad} is out of range for {length} samples")
    return np.where(array < 0, array + length, array)


def read_batch(dataset: Any, indices: np.ndarray) -> Any:
    """``x`` or ``(x, y)`` of the samples at ``indices``, each read into its slot.

    ``dataset[indices[0]]`` fixes the layout; ``dataset.read_into(rest, slots)``
    writes the others and returns their labels.
    """
    if len(indices) == 0:
        raise IndexError("a batch needs at least one index")
    first = int(indices[0])
    x0, y0 = split_sample(dataset[first])
    layout = SampleLayout.of(x0, y0)
    buffer = layout.allocate(len(indices), pin=False, shared=get_worker_info() is not None)
    buffer.x[0].copy_(x0)
    try:
        ys = dataset.read_into(indices[1:].tolist(), buffer.x[1:])
    except ShapeMismatch as exc:
        raise ValueError(mismatch_message(exc.index, exc.what, first, describe(x0, None))) from None
    if buffer.y is None:
        return buffer.x
    buffer.y[0].copy_(y0)
    if ys is not None:
        buffer.y[1:].copy_(ys)
    return buffer.x, buffer.y
