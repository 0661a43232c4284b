"""A batch read straight into one buffer, for datasets that can write a sample in place.

A ``DataLoader`` with ``batch_size=256`` builds a batch by calling
``dataset[i]`` 256 times and stacking the results: every sample is decoded into
a temporary array, wrapped in a tensor and copied once more by the stack. A
dataset with ``read_samples_into(indices, out)`` (``PathDataset``) skips both: the batch
buffer is allocated once, with the first sample's memory order (a ``C x H x W``
image decoded as ``H x W x C`` gets channels-last slots, so no transposition),
and each JPEG is decoded by libjpeg-turbo directly into its slot. In a
``DataLoader`` worker the buffer is allocated in shared memory, so sending the
batch to the main process copies nothing (as torch's own collate does).

With ``on_error="skip"`` a sample that cannot be read is left out: the samples
after it move up one slot (a copy, only in a batch that lost one), and a batch
whose every sample failed is empty, with the shape of the data set's samples.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from torchloader._core.layout import SampleLayout, rows_of
from torchloader._core.samples import MixedShapes, ShapeMismatch, describe, mismatch_message, split_sample
from torchloader.datasets._rows import in_shared_memory
from torchloader.error_log import SkippedSample
from torchloader.errors import SampleLoadError
from torchloader.protocols import MapDataset, SupportsReadSamplesInto

__all__ = ["first_readable", "read_batch"]

# the layout of a sample each dataset served in this process: the shape of an empty batch
_LAYOUTS: weakref.WeakKeyDictionary[Any, SampleLayout] = weakref.WeakKeyDictionary()


def read_batch(
    dataset: SupportsReadSamplesInto, indices: np.ndarray, *, skip: bool = False
) -> tuple[Any, list[SkippedSample]]:
    """``x`` or ``(x, y)`` of the samples at ``indices``, each read into its slot,
    and the samples left out (``skip``: those that cannot be read; else it raises).

    The first sample that loads, ``dataset[i]``, fixes the layout;
    ``dataset.read_samples_into(rest, out)`` writes the others and returns their labels.
    """
    if len(indices) == 0:
        raise IndexError("a batch needs at least one index")
    skipped: list[SkippedSample] = []
    k, first = _first_that_loads(dataset, indices.tolist(), skipped if skip else None)
    if first is None:  # not one sample of the batch could be read
        return _empty_batch(dataset), skipped
    x0, y0 = first
    layout = SampleLayout.of(x0, y0)
    if skip:
        _LAYOUTS[dataset] = layout
    n = len(indices) - k
    buffer = layout.allocate(n, pin=False, shared=in_shared_memory(layout.contiguous))
    buffer.x[0].copy_(x0)
    bad: list[tuple[int, SkippedSample]] | None = [] if skip else None
    ys = None
    if n > 1:
        try:
            ys = dataset.read_samples_into(indices[k + 1 :].tolist(), buffer.x[1:], skipped=bad)
        except ShapeMismatch as exc:
            raise MixedShapes(mismatch_message(exc.index, exc.what, int(indices[k]), describe(x0, None))) from None
    if buffer.y is not None:
        buffer.y[0].copy_(y0)
        if ys is not None:
            buffer.y[1:].copy_(ys)
    x, y = buffer.x, buffer.y
    if bad:  # the samples after a bad one move up
        skipped += [record for _, record in bad]
        keep = np.setdiff1d(np.arange(n), [slot + 1 for slot, _ in bad])
        x = x[: len(keep)].copy_(rows_of(x, keep))
        y = None if y is None else y[: len(keep)].copy_(rows_of(y, keep))
    return (x if y is None else (x, y)), skipped


def _first_that_loads(
    dataset: MapDataset, indices: list[int], skipped: list[SkippedSample] | None
) -> tuple[int, tuple[torch.Tensor, torch.Tensor | None] | None]:
    """The position of the first sample that loads and the sample (None if none does)."""
    for k, index in enumerate(indices):
        try:
            return k, split_sample(dataset[index])
        except SampleLoadError as exc:
            if skipped is None or not exc.skippable:
                raise
            skipped.append(SkippedSample.of(exc, index))
    return len(indices), None


def first_readable(
    read: Callable[[int], tuple[torch.Tensor, torch.Tensor | None]], indices: Sequence[int], *, skip: bool
) -> tuple[int, SampleLayout]:
    """The first of ``indices`` whose sample ``read(i)`` gives, and its layout.

    With ``skip``, samples that cannot be read are passed over (a failure that is
    not skippable still raises); without, the first failure raises.
    """
    first_error = None
    for index in map(int, indices):
        try:
            return index, SampleLayout.of(*read(index))
        except SampleLoadError as exc:
            if not (skip and exc.skippable):
                raise
            first_error = first_error or exc
    raise SampleLoadError(
        f"none of the {len(indices)} samples could be read (on_error='skip' has "
        f"nothing left to serve); the first error: {first_error}",
        skippable=False,
    )


def _empty_batch(dataset: MapDataset) -> Any:
    """A batch of no samples, shaped as the samples ``dataset`` served in this
    process, or else as the first of its samples that can be read."""
    layout = _LAYOUTS.get(dataset)
    if layout is None:
        _, layout = first_readable(lambda i: split_sample(dataset[i]), range(len(dataset)), skip=True)
        _LAYOUTS[dataset] = layout
    buffer = layout.allocate(0, pin=False)
    return buffer.x if buffer.y is None else (buffer.x, buffer.y)
