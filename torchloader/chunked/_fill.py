"""Fill a RAM chunk: the samples at given indices, written into a preallocated buffer.

Which way a dataset is read is NOTE [ how a chunk is filled ] in
``torchloader/protocols.py``. Read sample by sample, ``num_workers`` threads each
take a run of the chunk's indices in storage order (so reads are as sequential as
the chunk allows) and write each sample straight into its shuffled slot
(``ProcessFiller`` does the same with processes). Decoding in Pillow, simplejpeg
and NumPy's file reads release the GIL, and a thread writes into the (pinned)
buffer with no inter-process copy. Measured on 2 cores: 2 threads read 128x128
JPEGs at 1.5x one thread.

The workers are sent the dataset read, not a plain ``Subset``'s list of indices
(see ``torchloader/_core/subsets.py``).
"""

from __future__ import annotations

import functools
import threading
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import torch

from torchloader._core.intraop import use_one_intraop_thread
from torchloader._core.layout import ChunkBuffer, SampleLayout
from torchloader._core.randomness import reading_epoch
from torchloader._core.samples import ShapeMismatch, describe, mismatch_message, split_sample
from torchloader._core.subsets import ReadThrough
from torchloader.datasets._batch import first_readable
from torchloader.error_log import SkippedSample
from torchloader.error_log import SkippedSlots as Skipped
from torchloader.errors import SampleLoadError
from torchloader.protocols import MapDataset, SupportsGather, SupportsReadSamplesInto, offers, transforms_samples

__all__ = ["ChunkFiller", "Skipped", "check_sample", "fill_batched", "fill_slots", "read_sample", "storage_runs"]


def read_sample(dataset: MapDataset, index: int, read: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``dataset[index]`` (or ``read(index)``) as ``(x, y)`` tensors; any failure names the index.

    A sample the dataset fails to give may be skipped (``on_error="skip"``); one
    it gives in a form that is not ``x`` or ``(x, y)`` tensors is a bug, and is not.
    """
    try:
        sample = dataset[index] if read is None else read(index)
    except SampleLoadError:
        raise
    except Exception as exc:
        raise SampleLoadError.from_exception(index, None, exc) from exc
    try:
        return split_sample(sample)
    except Exception as exc:
        raise SampleLoadError.from_exception(index, None, exc, skippable=False) from exc


def check_sample(first: tuple[int, SampleLayout], index: int, x: torch.Tensor, y: torch.Tensor | None) -> None:
    """Refuse a sample whose shape or dtype differs from the first one, naming both."""
    first_index, layout = first
    if (
        tuple(x.shape) != layout.x_shape
        or x.dtype != layout.x_dtype
        or (None if y is None else tuple(y.shape)) != layout.y_shape
        or (None if y is None else y.dtype) != layout.y_dtype
    ):
        y0 = None if layout.y_shape is None else torch.empty(layout.y_shape, dtype=layout.y_dtype)
        expected = describe(torch.empty(layout.x_shape, dtype=layout.x_dtype), y0)
        raise ValueError(mismatch_message(index, describe(x, y), first_index, expected))


def fill_slots(
    dataset: MapDataset,
    first: tuple[int, SampleLayout],
    buffer: ChunkBuffer,
    slots: np.ndarray,
    indices: np.ndarray,
    stop: threading.Event | None = None,
    skipped: Skipped | None = None,
    reading: tuple[int, int] | None = None,
) -> None:
    """Write ``dataset[indices[k]]`` into slot ``slots[k]`` of ``buffer``, for every k.

    A dataset that :class:`~torchloader.protocols.SupportsReadSamplesInto`
    (``PathDataset``) writes the samples straight into their slots, a run at a time.
    Given a ``skipped`` list, a sample that cannot be read goes there instead.
    ``reading``: the ``(seed, epoch)`` the samples are read for, from which their
    transforms are seeded (see NOTE [ per-sample randomness ]).
    """
    with reading_epoch(*(reading or (None, None))):
        _fill_slots(dataset, first, buffer, slots, indices, stop, skipped)


def _fill_slots(
    dataset: MapDataset,
    first: tuple[int, SampleLayout],
    buffer: ChunkBuffer,
    slots: np.ndarray,
    indices: np.ndarray,
    stop: threading.Event | None,
    skipped: Skipped | None,
) -> None:
    if offers(dataset, "read_samples_into"):
        _fill_by_read_into(dataset, first, buffer, slots, indices, stop, skipped)
        return
    filled, ys = [], []  # labels go in with one write per run: a copy per 0-dim tensor costs ~7 us
    for slot, index in zip(slots.tolist(), indices.tolist()):
        if stop is not None and stop.is_set():
            return
        try:
            x, y = read_sample(dataset, index)
        except SampleLoadError as exc:
            if skipped is None or not exc.skippable:
                raise
            skipped.append((slot, SkippedSample.of(exc, index)))
            continue
        check_sample(first, index, x, y)
        buffer.x[slot].copy_(x)
        filled.append(slot)
        ys.append(y)
    if buffer.y is not None and ys:
        buffer.y[torch.tensor(filled)] = torch.stack(ys)


RUN = 32  # samples per read_samples_into call: a stop request is seen within one run


def _fill_by_read_into(
    dataset: SupportsReadSamplesInto,
    first: tuple[int, SampleLayout],
    buffer: ChunkBuffer,
    slots: np.ndarray,
    indices: np.ndarray,
    stop: threading.Event | None,
    skipped: Skipped | None,
) -> None:
    first_index, layout = first
    options = {} if skipped is None else {"skipped": skipped}
    for start in range(0, len(slots), RUN):
        if stop is not None and stop.is_set():
            return
        run = slots[start : start + RUN]
        try:
            ys = dataset.read_samples_into(indices[start : start + RUN].tolist(), buffer.x, run.tolist(), **options)
        except ShapeMismatch as exc:
            expected = describe(torch.empty(layout.x_shape, dtype=layout.x_dtype), None)
            raise ValueError(mismatch_message(exc.index, exc.what, first_index, expected)) from None
        if buffer.y is not None and ys is not None:
            buffer.y[torch.from_numpy(run)] = ys


def fill_batched(dataset: SupportsGather, buffer: ChunkBuffer, indices: np.ndarray) -> None:
    """Fill a buffer with one gather of ``indices``: straight into the buffer where the
    dataset :class:`~torchloader.protocols.SupportsGatherInto` it, else a copy."""
    n = len(indices)
    if offers(dataset, "gather_into"):
        if dataset.gather_into(indices, (buffer.x[:n], None if buffer.y is None else buffer.y[:n])):
            return
    x, y = split_sample(dataset.gather(indices))
    buffer.x[:n].copy_(x)
    if buffer.y is not None and y is not None:
        buffer.y[:n].copy_(y)


def storage_runs(indices: np.ndarray, parts: int) -> list[np.ndarray]:
    """Split the slots of a chunk into ``parts`` runs, each in storage order."""
    order = np.argsort(indices, kind="stable")
    return [run for run in np.array_split(order, max(1, min(parts, len(order)))) if len(run)]


class ChunkFiller:
    """Reads samples of ``dataset`` into chunk buffers with ``num_workers`` threads.

    ``layout`` (the first sample's) is read when first asked for, by the loader or by
    the first ``fill``: there is no order of calls to get wrong.
    """

    shared_buffers = False  # threads write into ordinary (pinned) memory

    def __init__(self, dataset: MapDataset, num_workers: int, *, skip: bool = False, seed: int = 0) -> None:
        self.through = ReadThrough(dataset)
        self.dataset = self.through.dataset
        self.num_workers = num_workers
        self.skip = skip  # on_error="skip": fill() returns the samples it left out
        self.seed = seed  # of the loader: per-sample transforms draw from (seed, epoch, index)
        _warn_of_the_old_contract(self.dataset)
        self.batched = offers(self.dataset, "gather") and not transforms_samples(self.dataset)
        self.prefetches = offers(self.dataset, "prefetch_samples")  # is told the next chunk (a remote pack)
        self._threads: ThreadPoolExecutor | None = None  # started on first use

    def prefetch(self, indices: np.ndarray) -> None:
        """Let the dataset fetch what ``indices`` (a coming chunk) need ahead of time (a
        remote ``PackedDataset`` downloads their shards)."""
        if self.prefetches and len(indices):
            self.dataset.prefetch_samples(self.through.inner_indices(np.asarray(indices)))

    @functools.cached_property
    def first(self) -> tuple[int, SampleLayout]:
        """The index and layout of sample 0 (or, when skipping, of the first sample that
        can be read); a sample passed over here is listed when its batch is served."""
        candidates = self.through.inner_indices(np.arange(0, self.through.size if self.skip else 1))
        read = self.dataset.peek_sample if offers(self.dataset, "peek_sample") else None  # a remote pack: no download
        with reading_epoch(self.seed, 0):  # a random transform seeded as in epoch 0, not from the loop's generators
            return first_readable(lambda i: read_sample(self.dataset, i, read), candidates, skip=self.skip)

    @property
    def layout(self) -> SampleLayout:
        """The layout every sample must have: the first sample's."""
        return self.first[1]

    def fill(
        self, buffer: ChunkBuffer, indices: np.ndarray, stop: threading.Event, epoch: int | None = None
    ) -> Skipped:
        """Write ``dataset[indices[j]]`` into slot ``j`` of ``buffer``; return the
        ``(slot, SkippedSample)`` of the samples left out (only when skipping).
        ``epoch``: the one the chunk belongs to (it seeds per-sample transforms)."""
        reading = None if epoch is None else (self.seed, epoch)
        try:
            return self._fill(buffer, self.through.inner_indices(indices), stop, reading)
        except ValueError as exc:  # two shapes: say which dataset the numbers are of
            if not self.through.note:
                raise
            raise ValueError(f"{exc}{self.through.note}") from exc

    def _fill(
        self, buffer: ChunkBuffer, indices: np.ndarray, stop: threading.Event, reading: tuple[int, int] | None
    ) -> Skipped:
        if self.batched:
            fill_batched(self.dataset, buffer, indices)
            return []
        runs = storage_runs(indices, self.num_workers)
        skipped: list[Skipped | None] = [[] if self.skip else None for _ in runs]  # one list per run
        if self.num_workers == 0:
            for run, part in zip(runs, skipped):
                fill_slots(self.dataset, self.first, buffer, run, indices[run], stop, part, reading)
            return [item for part in skipped for item in part or ()]
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                self.num_workers, thread_name_prefix="torchloader-fill", initializer=use_one_intraop_thread
            )  # see NOTE [ torch ops in a background thread ]
        failed = _Either(stop)
        futures = [
            self._threads.submit(fill_slots, self.dataset, self.first, buffer, run, indices[run], failed, part, reading)
            for run, part in zip(runs, skipped)
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed.set()  # the others stop early: the chunk is lost anyway
        wait(futures)  # no thread may still write into the buffer once it is handed back
        for future in futures:
            future.result()  # re-raises the first error of a thread
        return [item for part in skipped for item in part or ()]

    def close(self) -> None:
        """End the threads (a later ``fill`` starts new ones)."""
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
            self._threads = None


def _warn_of_the_old_contract(dataset: MapDataset) -> None:
    """Name the methods of torchloader 0.1's contract, which no loader calls any more."""
    kind = type(dataset).__name__
    if getattr(dataset, "gather_into_supported", False) and not offers(dataset, "gather_into"):
        warnings.warn(
            f"{kind}.gather_into_supported and gather(indices, out=...) are no longer used: define "
            f"gather_into(indices, out) -> bool to fill chunks in place (see torchloader.SupportsGatherInto)",
            DeprecationWarning,
            stacklevel=4,
        )
    if offers(dataset, "read_into") and not offers(dataset, "read_samples_into"):
        warnings.warn(
            f"{kind}.read_into(indices, out, slots) is no longer used: it is called read_samples_into "
            f"now (see torchloader.SupportsReadSamplesInto); the samples are read one by one meanwhile",
            DeprecationWarning,
            stacklevel=4,
        )


class _Either(threading.Event):
    """An event of one fill that also reads as set once ``stop`` is set."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self._stop = stop

    def is_set(self) -> bool:
        return super().is_set() or self._stop.is_set()
