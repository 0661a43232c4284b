"""A pool of RAM chunk buffers for the chunked loader, pinned where CUDA is present.

A buffer slot has the strides of the sample it holds (a ``C x H x W`` view of
``H x W x C`` pixels gets channels-last slots), so filling a slot is a plain
memory copy rather than a transposition, and a batch is a slice of the buffer.

# NOTE [ reusing a chunk buffer ]
Batches are views of the buffer, so a buffer may only be refilled when nobody
holds such a view any more. The pool reuses a buffer whose storage has no
reference beyond the pool's own (a training loop drops each batch before it
asks for the next, so this is the normal case, after a few milliseconds at
most); if views are still alive it allocates a fresh buffer instead and lets
the old one go when they die. It waits as long as the consumer has a loaded
chunk still to serve: a training loop's variable keeps the last batch of an
epoch alive through evaluation, and that must not cost a third buffer. Data
is never overwritten under a live batch; keeping batches alive only costs RAM
above the budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from torchloader._core.layout import ChunkBuffer, SampleLayout

__all__ = ["BufferPool"]


class BufferPool:
    """Chunk buffers of ``chunk_size`` samples, at most ``slots`` handed out at once."""

    def __init__(self, layout: SampleLayout, chunk_size: int, *, slots: int, pin: bool, shared: bool = False) -> None:
        self.layout = layout
        self.chunk_size = chunk_size
        self.pin = pin
        self.shared = shared
        self.peak_bytes = 0
        self._slots = threading.Semaphore(slots)
        self._free: list[ChunkBuffer] = []
        self._held: list[ChunkBuffer] = []  # free or handed out
        self._dropped: list[ChunkBuffer] = []  # replaced while views were alive
        self._lock = threading.Lock()

    def acquire(
        self,
        stop: threading.Event,
        patience: float = 0.05,
        busy: Callable[[], bool] | None = None,
    ) -> ChunkBuffer | None:
        """A buffer to fill, waiting for a slot; None if ``stop`` is set meanwhile.

        A returned buffer whose views are still alive is waited for while
        ``busy()`` holds (the consumer has a chunk to serve, so a view it holds
        is likely its loop variable) and then ``patience`` seconds more; after
        that the views are taken to be kept and a fresh buffer is allocated.
        """
        while not self._slots.acquire(timeout=0.05):
            if stop.is_set():
                return None
        buffer = self._take_free()
        if buffer is None:
            return self._allocate()
        if not self._wait_unused(buffer, stop, patience, busy):
            if stop.is_set():
                self.release(buffer)
                return None
            with self._lock:  # views outlived the patience: let them keep it
                self._held.remove(buffer)
                self._dropped.append(buffer)
            return self._allocate()
        return buffer

    def _take_free(self) -> ChunkBuffer | None:
        """A returned buffer: one nobody holds a view of, else the one returned first."""
        with self._lock:
            if not self._free:
                return None
            unused = [k for k, b in enumerate(self._free) if not b.in_use()]
            return self._free.pop(unused[0] if unused else 0)

    @staticmethod
    def _wait_unused(
        buffer: ChunkBuffer, stop: threading.Event, patience: float, busy: Callable[[], bool] | None
    ) -> bool:
        """Whether the views of ``buffer`` died before the patience ran out."""
        deadline, pause = time.monotonic() + patience, 0.0005
        while buffer.in_use():
            if stop.is_set():
                return False
            if busy is not None and busy():
                deadline = time.monotonic() + patience
            elif time.monotonic() >= deadline:
                return False
            pause = min(2 * pause, 0.01)  # 1 ms first, then 10 ms at most (GIL)
            time.sleep(pause)
        return True

    def _allocate(self) -> ChunkBuffer:
        buffer = self.layout.allocate(self.chunk_size, pin=self.pin, shared=self.shared)
        with self._lock:
            self._held.append(buffer)
            self._dropped = [b for b in self._dropped if b.in_use()]
            live = sum(b.nbytes for b in self._held + self._dropped)
            self.peak_bytes = max(self.peak_bytes, live)
        return buffer

    def held(self) -> list[ChunkBuffer]:
        """The buffers the pool may still hand out."""
        with self._lock:
            return list(self._held)

    def release(self, buffer: ChunkBuffer) -> None:
        """Hand a served buffer back; its views may still be alive for a while."""
        with self._lock:
            self._free.append(buffer)
        self._slots.release()
