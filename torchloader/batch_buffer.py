"""A batch read straight into one buffer, for datasets that can write a sample in place.

A ``DataLoader`` with ``batch_size=256`` builds a batch by calling
``dataset[i]`` 256 times and stacking the results: every sample is decoded into
a temporary array, wrapped in a tensor and copied once more by the stack. A
dataset with ``read_into(index, out)`` (``PathDataset``) skips both: the batch
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

__all__ = ["as_index_array", "read_batch", "stack_labels"]


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


def stack_labels(ys: list[Any]) -> torch.Tensor:
    """One tensor of per-sample labels (ints, NumPy scalars or tensors)."""
    if all(isinstance(y, torch.Tensor) for y in ys):
        return torch.stack(ys)
    return torch.as_tensor(np.asarray(ys))


def read_batch(dataset: Any, indices: np.ndarray, labels: np.ndarray | None = None) -> Any:
    """``x`` or ``(x, y)`` of the samples at ``indices``, each read into its slot.

    ``dataset[indices[0]]`` fixes the layout; the others go through
    ``dataset.read_into(index, slot)``, which returns the label. ``labels``, when
    given, are taken as the batch's ``y`` in one gather instead.
    """
    if len(indices) == 0:
        raise IndexError("a batch needs at least one index")
    first = int(indices[0])
    x0, y0 = split_sample(dataset[first])
    layout = SampleLayout.of(x0, y0)
    buffer = layout.allocate(len(indices), pin=False, shared=get_worker_info() is not None)
    buffer.x[0].copy_(x0)
    ys = [y0]
    for slot, index in enumerate(indices[1:].tolist(), 1):
        try:
            ys.append(dataset.read_into(index, buffer.x[slot]))
        except ShapeMismatch as exc:
            raise ValueError(mismatch_message(index, exc.what, first, describe(x0, None))) from None
    if buffer.y is None:
        return buffer.x
    buffer.y.copy_(torch.from_numpy(labels[indices]) if labels is not None else stack_labels(ys))
    return buffer.x, buffer.y
