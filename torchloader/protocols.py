"""The dataset contract: what a dataset offers decides how a loader reads it.

Every dataset torchloader reads is a map-style ``torch.utils.data.Dataset``:
``len(ds)`` and ``ds[i] -> x`` or ``(x, y)`` tensors. A dataset of your own can
offer more, and the loaders then take the fast path for it. Each protocol below
is one such offer. A loader takes it where the method is there and callable,
``offers(ds, "gather")``: a ``__getattr__`` that forwards to a wrapped dataset counts,
an attribute set to None does not. ``isinstance(ds, SupportsGather)`` checks the
names only (from Python 3.12 without ``__getattr__``); the protocols are for type
checkers and for reading.

# NOTE [ how a chunk is filled ]
``ChunkedLoader`` fills each RAM chunk (a preallocated buffer of ``chunk_size``
slots, in the first sample's memory order) with the first of these the dataset
supports, after looking through plain ``torch.utils.data.Subset`` wrappers
(``random_split``'s parts; see ``_core/subsets.py``):

1. :class:`SupportsGatherInto`, and no ``transform``: one
   ``gather_into(indices, out)`` writes the chunk straight into the buffer
   (``PreloadedDataset``, ``PackedDataset``). Where it returns False (the buffer
   is laid out otherwise), step 2.
2. :class:`SupportsGather`, and no ``transform``: one ``gather(indices)``, copied
   into the buffer.
3. :class:`SupportsReadSamplesInto`: each worker takes a run of the chunk's
   indices in storage order and calls ``read_samples_into(indices, out, slots)``
   32 samples at a time, so files are read as sequentially as the chunk allows and
   JPEGs are decoded straight into their slots (``PathDataset``).
4. Any other dataset: ``ds[i]`` per sample, copied into its slot, by the same runs.

The first sample the loader reads fixes the layout (shape, dtype, memory order)
every other sample must have; it is read once, when the loader is built (through
``peek_sample(index)`` where the dataset has one: a remote ``PackedDataset`` reads that
one sample without downloading its shard). A dataset with ``prefetch_samples(indices)``
is told the next two chunks' indices while a chunk loads (a remote pack downloads their shards). A
dataset whose ``on_error`` is ``"skip"`` has the samples it cannot read left out
of their batch, and listed in its ``errors`` where it has an ``ErrorLog`` there
(:class:`SkipsErrors` describes both).
A ``transform`` or ``target_transform`` attribute that is not None means
``ds[i]`` is not what a gather returns, so steps 1 and 2 are not taken.

The same offers serve whole batches elsewhere: ``PathDataset`` builds
``ds[indices]`` with ``read_samples_into``, and an :class:`IntoReader` (a reader
with ``read_into``) is how ``PathDataset`` decodes a file into a slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from torchloader.error_log import ErrorLog, SkippedSlots

__all__ = [
    "IntoReader",
    "MapDataset",
    "SkipsErrors",
    "SupportsGather",
    "SupportsGatherInto",
    "SupportsReadSamplesInto",
    "offers",
    "transforms_samples",
]


@runtime_checkable
class MapDataset(Protocol):
    """What every dataset torchloader reads is: sized and indexed, ``ds[i] -> x`` or
    ``(x, y)`` (a ``torch.utils.data.Dataset`` with ``__len__``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


@runtime_checkable
class SupportsGather(Protocol):
    """Reads many samples in one call: ``gather(indices)`` is ``ds[indices]`` as one
    batch, ``x`` or ``(x, y)`` with a first dimension of ``len(indices)``."""

    def __len__(self) -> int: ...

    def gather(self, indices: Sequence[int] | np.ndarray) -> Any: ...


@runtime_checkable
class SupportsGatherInto(SupportsGather, Protocol):
    """Also writes a gather straight into tensors it is given.

    ``gather_into(indices, out)`` writes sample ``indices[k]`` into ``out[0][k]``
    (and its label into ``out[1][k]`` where ``out[1]`` is not None) and returns True,
    or returns False having written nothing, where ``out`` is laid out in a way it
    cannot write (the caller then uses ``gather``)."""

    def gather_into(
        self, indices: Sequence[int] | np.ndarray, out: tuple[torch.Tensor, torch.Tensor | None]
    ) -> bool: ...


@runtime_checkable
class SupportsReadSamplesInto(Protocol):
    """Reads samples one by one straight into slots of a buffer.

    ``read_samples_into(indices, out, slots)`` writes sample ``indices[k]`` into
    ``out[slots[k]]`` and returns the samples' labels as one tensor (None without
    labels). Given a ``skipped`` list, a sample that cannot be read is appended to it
    as ``(slot, SkippedSample)`` instead; otherwise it raises ``SampleLoadError``."""

    def __len__(self) -> int: ...

    def read_samples_into(
        self,
        indices: Sequence[int],
        out: torch.Tensor,
        slots: Sequence[int] | None = None,
        *,
        skipped: SkippedSlots | None = None,
    ) -> torch.Tensor | None: ...


@runtime_checkable
class SkipsErrors(Protocol):
    """Can leave out the samples it cannot read: ``on_error`` is ``"raise"`` or
    ``"skip"``, and ``errors`` lists what was left out in this process."""

    on_error: str
    errors: ErrorLog


@runtime_checkable
class IntoReader(Protocol):
    """A file reader (``reader(path) -> tensor or array``) that can also decode a file
    straight into a slot: ``read_into(path, out)`` fills the ``H x W x C`` array ``out``
    and returns True, or returns False having written nothing (then ``reader(path)``)."""

    def __call__(self, path: str) -> torch.Tensor | np.ndarray: ...

    def read_into(self, path: str, out: np.ndarray) -> bool: ...


def offers(obj: Any, method: str) -> bool:
    """Whether ``obj`` has a callable ``method``: the test every fast path is chosen by.
    A dataset may list in ``declines`` the ones it has but does not offer (an encoded
    ``PackedDataset`` has ``gather`` and decodes into slots instead)."""
    return callable(getattr(obj, method, None)) and method not in getattr(obj, "declines", ())


def transforms_samples(dataset: Any) -> bool:
    """Whether ``dataset[i]`` transforms what a gather would return as stored."""
    return getattr(dataset, "transform", None) is not None or getattr(dataset, "target_transform", None) is not None
