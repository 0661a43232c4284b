"""One pass of a ``ChunkedLoader``: its epoch's chunks cut into batches, counted as handed out.

A pass begins at its first ``next()``, not at ``iter()`` (Lightning calls
``iter()`` once only to check that a loader is iterable). It is over once its
last batch has been handed out, before the caller asks past it: Lightning and
most step-counting loops stop after ``len(loader)`` batches and never see the
end of the iterator, and the next pass must still be the next epoch. For the
same reason the last chunk's buffer goes back to the pool before that batch is
handed out (its batches are views, so the pool never refills it under them).

A loader serves one pass at a time (two buffers); a later pass may take over
the producer an earlier, finished pass left loading the next epoch, so a pass
closes the producer on the way out only while it is still the loader's latest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any, Protocol

import torch

from torchloader.chunked._cutter import BatchCutter, Cut
from torchloader.chunked._producer import LoadedChunk, Producer
from torchloader.chunked.stats import LoaderStats
from torchloader.device import DeviceLoader
from torchloader.error_log import ErrorLog
from torchloader.order.sampler import ChunkedSampler

__all__ = ["LoaderPass"]


class Loader(Protocol):
    """What a pass uses of its ``ChunkedLoader`` (``torchloader/chunked/loader.py``)."""

    sampler: ChunkedSampler
    batch_size: int
    drop_last: bool
    device: torch.device | None
    transform: Callable[[Any], Any] | None
    stats: LoaderStats
    errors: ErrorLog
    latest_pass: LoaderPass | None

    def last_position(self) -> int: ...

    def producer_for(self, epoch: int, start: int) -> Producer: ...

    def chunks_of(self, producer: Producer) -> Iterator[LoadedChunk]: ...

    def close_producer(self) -> None: ...


class LoaderPass:
    """The batches of one epoch of ``loader`` from position ``start`` on.

    It holds no reference to the loader (which holds it as ``latest_pass``): only its
    running generators do, so a loader nobody iterates is freed at once.
    """

    def __init__(self, loader: Loader, epoch: int, start: int) -> None:
        self.epoch = epoch
        self.generation = loader.sampler.generation  # the sampler's when it began
        self.position = start  # samples of the epoch's order handed out (or resumed past)
        self.start = start
        self.done = False  # handed out its last batch
        self.closed = False  # its iterator finished, was closed or collected

    @property
    def active(self) -> bool:
        """Whether it may still hand out batches."""
        return not self.done and not self.closed

    def batches(self, loader: Loader) -> Iterator[Any]:
        host = self._host_batches(loader)
        cuts: Iterator[Cut] = host
        transform = None if loader.transform is None else _on_batch(loader.transform)
        if loader.device is not None:  # a Cut's batch goes to the device; its counts stay as they are
            cuts = iter(DeviceLoader(host, loader.device, transform=transform))
        elif transform is not None:
            cuts = map(transform, host)
        return self._handed_out(loader, host, cuts)

    def _handed_out(self, loader: Loader, host: Generator, cuts: Iterator[Cut]) -> Iterator[Any]:
        """Count what the caller got (a ``DeviceLoader`` makes batches one ahead)."""
        end = loader.last_position()
        try:
            if self.position >= end:  # resumed at the end of its epoch: nothing left
                self._end(loader)
            for cut in cuts:
                self.position += cut.positions
                if cut.skipped:
                    loader.stats.add_skipped(len(cut.skipped))
                    loader.errors.record(cut.skipped, where="loader.errors", stacklevel=4)
                if self.position >= end:  # the last batch: the epoch is done once it is handed out
                    self._end(loader)
                yield cut.batch
        finally:
            self.closed = True
            host.close()  # a break: stop loading now, not when the generators are collected

    def _end(self, loader: Loader) -> None:
        self.done = True
        loader.sampler.end_pass(self.epoch)

    def _host_batches(self, loader: Loader) -> Iterator[Cut]:
        cutter = BatchCutter(loader.batch_size)
        held = None  # the chunk being served, until its buffer goes back to the pool
        try:
            if self.start < len(loader.sampler):
                producer = loader.producer_for(self.epoch, self.start)
                for chunk in loader.chunks_of(producer):
                    held = chunk
                    batches = deque(cutter.batches_of(chunk.buffer, chunk.size, chunk.skipped))
                    if chunk.last:  # see the module docstring
                        producer.release(chunk)
                        held = None
                    while batches:
                        yield batches.popleft()  # the pass keeps no view it has handed out
                    if held is not None:
                        producer.release(held)
                        held = None
            if cutter.pending and not loader.drop_last:
                yield cutter.finish()
        except BaseException:
            if held is not None:  # left mid-chunk: its buffer goes back, or the pool runs dry
                producer.release(held)
            if loader.latest_pass is self:  # a later pass may have taken the producer over
                loader.close_producer()
            raise


def _on_batch(transform: Callable[[Any], Any]) -> Callable[[Cut], Cut]:
    """``transform`` applied to a :class:`Cut`'s batch."""
    return lambda cut: cut._replace(batch=transform(cut.batch))
