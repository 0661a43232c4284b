"""The background thread that loads RAM chunks ahead of the consumer.

It walks a plan of ``(epoch, indices)`` chunks, takes a buffer from the pool
(which hands out at most two, so chunk ``k + 1`` loads while chunk ``k`` is
served: double buffering), fills it and queues it. The plan runs on into the
next epoch, so the first chunk of epoch ``e + 1`` is loading while the last
chunk of epoch ``e`` is served and there is no stall at the epoch boundary.
Errors travel through the queue and are raised in the consumer.

Producers still running when the interpreter exits are stopped by an
``atexit`` hook: a daemon thread inside torch when Python finalizes aborts the
process ("terminate called without an active exception").
"""

from __future__ import annotations

import atexit
import collections
import itertools
import queue
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from torchloader._core.intraop import use_one_intraop_thread
from torchloader._core.layout import ChunkBuffer
from torchloader.chunked._buffers import BufferPool
from torchloader.chunked._fill import ChunkFiller, Skipped
from torchloader.chunked.stats import LoaderStats
from torchloader.order.sampler import ChunkedSampler

__all__ = ["LoadedChunk", "Producer", "chunk_plan"]

AHEAD = 2  # chunks whose data a dataset that prefetches (a remote pack) is asked for ahead


@dataclass
class LoadedChunk:
    epoch: int
    buffer: ChunkBuffer
    size: int  # samples filled, from slot 0
    last: bool  # the last chunk of its epoch on this rank
    skipped: Skipped  # (slot, record) of the samples on_error="skip" left out
    waited: float = 0.0  # seconds the consumer waited for it


def chunk_plan(sampler: ChunkedSampler, epoch: int, start: int) -> Iterator[tuple[int, np.ndarray, bool]]:
    """Every chunk of ``sampler``'s order as ``(epoch, indices, last)``.

    It starts at sample ``start`` of ``epoch`` and goes on into the next epochs
    without end. ``last`` marks the last chunk of an epoch.
    """
    while True:
        order, lengths = sampler.order_of(epoch)
        stops = np.cumsum(lengths)
        ranges = [(max(a, start), b) for a, b in zip((stops - lengths).tolist(), stops.tolist()) if b > start]
        for k, (a, b) in enumerate(ranges):
            yield epoch, order[a:b], k == len(ranges) - 1
        epoch, start = epoch + 1, 0


def _ahead(
    plan: Iterator[tuple[int, np.ndarray, bool]], depth: int = AHEAD
) -> Iterator[tuple[tuple[int, np.ndarray, bool], np.ndarray]]:
    """Each chunk of ``plan`` with the indices of the ``depth`` chunks after it (fewer at
    the end, or before a chunk the plan fails to give: the chunks before it are served)."""
    coming: collections.deque = collections.deque()
    failed: BaseException | None = None
    while True:
        while failed is None and len(coming) <= depth:
            try:
                chunk = next(plan, None)
            except BaseException as error:
                failed = error
                break
            if chunk is None:
                break
            coming.append(chunk)
        if not coming:
            if failed is not None:
                raise failed
            return
        current = coming.popleft()
        after = [c[1] for c in itertools.islice(coming, depth)]
        yield current, np.concatenate(after) if after else current[1][:0]


def _slot(skipped: tuple[int, object]) -> int:
    return skipped[0]  # in the order of the epoch, however the workers finished


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_running: weakref.WeakSet[Producer] = weakref.WeakSet()


@atexit.register
def _close_running() -> None:
    for producer in list(_running):
        producer.close()


class Producer:
    """Loads the chunks of ``plan`` into buffers of ``pool`` on a daemon thread."""

    def __init__(
        self,
        plan: Iterator[tuple[int, np.ndarray, bool]],
        pool: BufferPool,
        filler: ChunkFiller,
        stats: LoaderStats,
    ) -> None:
        self._plan = plan
        self._pool = pool
        self._filler = filler
        self._stats = stats
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="torchloader-chunks", daemon=True)
        _running.add(self)
        self._thread.start()

    def _run(self) -> None:
        use_one_intraop_thread()  # see NOTE [ torch ops in a background thread ]
        prefetch = self._filler.prefetch if getattr(self._filler, "prefetches", False) else None
        plan = _ahead(self._plan) if prefetch is not None else ((chunk, None) for chunk in self._plan)
        try:
            for (epoch, indices, last), coming in plan:
                if prefetch is not None:  # the next chunk's data arrives while this one loads
                    prefetch(coming)
                buffer = self._pool.acquire(self._stop, busy=self._consumer_busy)
                if buffer is None:
                    return
                forget = getattr(self._filler, "forget", None)
                if forget is not None:  # workers let go of buffers the pool replaced
                    forget(self._pool.held())
                start = time.perf_counter()
                try:
                    skipped = sorted(self._filler.fill(buffer, indices, self._stop, epoch), key=_slot)
                except BaseException:
                    self._pool.release(buffer)
                    raise
                if self._stop.is_set():
                    self._pool.release(buffer)
                    return
                self._stats.add_chunk(
                    len(indices),
                    self._pool.layout.nbytes * len(indices),
                    time.perf_counter() - start,
                    self._pool.peak_bytes,
                )
                self._queue.put(LoadedChunk(epoch, buffer, len(indices), last, skipped))
        except BaseException as error:  # raised again in the consumer
            self._queue.put(_Failure(error))

    def _consumer_busy(self) -> bool:
        """Whether the consumer still has a loaded chunk to serve."""
        return not self._queue.empty()

    def next_chunk(self) -> LoadedChunk:
        """The next loaded chunk, waiting for it (the wait is counted in the stats)."""
        start = time.perf_counter()
        while True:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the chunk loading thread ended unexpectedly") from None
        waited = time.perf_counter() - start
        self._stats.add_wait(waited)
        if isinstance(item, _Failure):
            raise item.error
        item.waited = waited
        return item

    def release(self, chunk: LoadedChunk) -> None:
        """Give a served chunk's buffer back to the pool."""
        self._pool.release(chunk.buffer)

    def close(self) -> None:
        """Stop loading and give the queued buffers back; returns once the thread ended."""
        self._stop.set()
        self._thread.join()
        _running.discard(self)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, LoadedChunk):
                self._pool.release(item.buffer)
