"""Fill a RAM chunk: the samples at given indices, written into a preallocated buffer.

Two ways, chosen by the dataset:

- a dataset with ``gather(indices)`` (``PreloadedDataset``, packed shards) reads the
  whole chunk in one batched call;
- any other map-style dataset is read sample by sample by ``num_workers``
  threads, each taking a run of the chunk's indices in storage order (so reads
  are as sequential as the chunk allows) and copying each sample straight into
  its shuffled slot (``ProcessFiller`` does the same with processes). Decoding
  in Pillow, simplejpeg and NumPy's file reads release the GIL, and a thread
  writes into the (pinned) buffer with no inter-process copy. Measured on 2
  cores: 2 threads read 128x128 JPEGs at 1.5x one thread.

A plain ``torch.utils.data.Subset`` (``random_split``'s parts) is read through to
the dataset it wraps (see ``torchloader/datasets/_subsets.py``); the workers are sent that
dataset, not the subset's list of indices. A dataset with a ``transform`` is read
sample by sample, as ``ds[i]`` applies it, even if it has a ``gather``.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import torch

from torchloader._core.intraop import use_one_intraop_thread
from torchloader._core.layout import ChunkBuffer, SampleLayout
from torchloader._core.randomness import reading_epoch
from torchloader._core.samples import ShapeMismatch, describe, mismatch_message, split_sample
from torchloader.datasets._batch import first_readable
from torchloader.datasets._subsets import ReadThrough
from torchloader.error_log import SkippedSample
from torchloader.error_log import SkippedSlots as Skipped
from torchloader.errors import SampleLoadError

__all__ = ["ChunkFiller", "Skipped", "check_sample", "fill_batched", "fill_slots", "read_sample", "storage_runs"]


def read_sample(dataset: Any, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``dataset[index]`` as ``(x, y)`` tensors; any failure names the index.

    A sample the dataset fails to give may be skipped (``on_error="skip"``); one
    it gives in a form that is not ``x`` or ``(x, y)`` tensors is a bug, and is not.
    """
    try:
        sample = dataset[index]
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
    dataset: Any,
    first: tuple[int, SampleLayout],
    buffer: ChunkBuffer,
    slots: np.ndarray,
    indices: np.ndarray,
    stop: threading.Event | None = None,
    skipped: Skipped | None = None,
    reading: tuple[int, int] | None = None,
) -> None:
    """Write ``dataset[indices[k]]`` into slot ``slots[k]`` of ``buffer``, for every k.

    A dataset with ``read_into(indices, out, slots)`` (``PathDataset``) writes the
    samples straight into their slots (JPEGs decoded there), a run at a time.
    Given a ``skipped`` list, a sample that cannot be read goes there instead.
    ``reading``: the ``(seed, epoch)`` the samples are read for, from which their
    transforms are seeded (see NOTE [ per-sample randomness ]).
    """
    with reading_epoch(*(reading or (None, None))):
        _fill_slots(dataset, first, buffer, slots, indices, stop, skipped)


def _fill_slots(
    dataset: Any,
    first: tuple[int, SampleLayout],
    buffer: ChunkBuffer,
    slots: np.ndarray,
    indices: np.ndarray,
    stop: threading.Event | None,
    skipped: Skipped | None,
) -> None:
    if getattr(dataset, "read_into", None) is not None:
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


RUN = 32  # samples per read_into call: a stop request is seen within one run


def _fill_by_read_into(
    dataset: Any,
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
            ys = dataset.read_into(indices[start : start + RUN].tolist(), buffer.x, run.tolist(), **options)
        except ShapeMismatch as exc:
            expected = describe(torch.empty(layout.x_shape, dtype=layout.x_dtype), None)
            raise ValueError(mismatch_message(exc.index, exc.what, first_index, expected)) from None
        if buffer.y is not None and ys is not None:
            buffer.y[torch.from_numpy(run)] = ys


def fill_batched(dataset: Any, buffer: ChunkBuffer, indices: np.ndarray) -> None:
    """Fill a buffer with one ``dataset.gather(indices)`` call.

    A dataset whose ``gather`` takes ``out=(x, y)`` (``PackedDataset``) reads
    straight into the buffer: one copy, no temporary batch.
    """
    n = len(indices)
    if getattr(dataset, "gather_into_supported", False):
        out = (buffer.x[:n], None if buffer.y is None else buffer.y[:n])
        if dataset.gather(indices, out=out) is not None:
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
    """Reads samples of ``dataset`` into chunk buffers with ``num_workers`` threads."""

    shared_buffers = False  # threads write into ordinary (pinned) memory

    def __init__(self, dataset: Any, num_workers: int, *, skip: bool = False, seed: int = 0) -> None:
        self.through = ReadThrough(dataset)
        self.dataset = self.through.dataset
        self.num_workers = num_workers
        self.skip = skip  # on_error="skip": fill() returns the samples it left out
        self.seed = seed  # of the loader: per-sample transforms draw from (seed, epoch, index)
        self.batched = callable(getattr(self.dataset, "gather", None)) and not _transforms(self.dataset)
        self._threads: ThreadPoolExecutor | None = None  # started on first use
        self.first: tuple[int, SampleLayout] | None = None

    def layout(self, index: int) -> SampleLayout:
        """The layout every sample must have, taken from sample ``index`` (or, when
        skipping, the first one from there on that can be read)."""
        if self.first is None:  # a sample passed over here is listed when its batch is served
            candidates = self.through.own(np.arange(index, self.through.size if self.skip else index + 1))
            with reading_epoch(self.seed, 0):  # a random transform seeded as in epoch 0, not from the loop's generators
                self.first = first_readable(lambda i: read_sample(self.dataset, i), candidates, skip=self.skip)
        return self.first[1]

    def fill(
        self, buffer: ChunkBuffer, indices: np.ndarray, stop: threading.Event, epoch: int | None = None
    ) -> Skipped:
        """Write ``dataset[indices[j]]`` into slot ``j`` of ``buffer``; return the
        ``(slot, SkippedSample)`` of the samples left out (only when skipping).
        ``epoch``: the one the chunk belongs to (it seeds per-sample transforms)."""
        reading = None if epoch is None else (self.seed, epoch)
        try:
            return self._fill(buffer, self.through.own(indices), stop, reading)
        except ValueError as exc:  # two shapes: say which dataset the numbers are of
            if not self.through.note:
                raise
            raise ValueError(f"{exc}{self.through.note}") from exc

    def _fill(
        self, buffer: ChunkBuffer, indices: np.ndarray, stop: threading.Event, reading: tuple[int, int] | None
    ) -> Skipped:
        assert self.first is not None
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


def _transforms(dataset: Any) -> bool:
    """Whether ``dataset[i]`` transforms what a batched ``gather`` would return as stored."""
    return getattr(dataset, "transform", None) is not None or getattr(dataset, "target_transform", None) is not None


class _Either(threading.Event):
    """An event of one fill that also reads as set once ``stop`` is set."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self._stop = stop

    def is_set(self) -> bool:
        return super().is_set() or self._stop.is_set()
