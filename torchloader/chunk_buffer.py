"""RAM chunks: preallocated buffers of ``n`` samples, pinned where CUDA is present.

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
from dataclasses import dataclass

import numpy as np
import torch

from .shared_memory import new_shared

__all__ = ["BufferPool", "ChunkBuffer", "SampleLayout", "memory_order", "rows_of"]


def rows_of(t: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """A copy of ``t[rows]`` (``rows`` ascending), in ``t``'s memory order.

    Made of the runs of consecutive rows, one slice each: 9x faster than
    ``t[rows]`` here on a channels-last batch with a few rows missing.
    """
    if len(rows) == 0:
        return t[:0].clone()
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate(([0], breaks)).tolist()
    stops = np.concatenate((breaks, [len(rows)])).tolist()
    return torch.cat([t[int(rows[a]) : int(rows[b - 1]) + 1] for a, b in zip(starts, stops)])


def memory_order(t: torch.Tensor) -> tuple[int, ...]:
    """The dims of ``t`` from outermost to innermost in memory (contiguous: in order,
    also when only size-1 dims, like a grey channel, look permuted)."""
    if t.is_contiguous():
        return tuple(range(t.ndim))
    return tuple(sorted(range(t.ndim), key=lambda d: (-t.stride(d), d)))


@dataclass(frozen=True)
class SampleLayout:
    """Shape, dtype and memory order of one sample's ``x`` and ``y``."""

    x_shape: tuple[int, ...]
    x_dtype: torch.dtype
    x_order: tuple[int, ...]  # dims of x from outermost to innermost in memory
    y_shape: tuple[int, ...] | None
    y_dtype: torch.dtype | None

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor | None) -> SampleLayout:
        order = memory_order(x)
        return cls(
            tuple(x.shape), x.dtype, order,
            None if y is None else tuple(y.shape), None if y is None else y.dtype,
        )  # fmt: skip

    @property
    def nbytes(self) -> int:
        """Bytes of one sample, x and y."""
        size = _numel(self.x_shape) * _itemsize(self.x_dtype)
        if self.y_shape is not None:
            size += _numel(self.y_shape) * _itemsize(self.y_dtype)
        return size

    def allocate(self, n: int, *, pin: bool, shared: bool = False) -> ChunkBuffer:
        """Room for ``n`` samples; ``shared``: in shared memory, for worker processes."""
        stored = [self.x_shape[d] for d in self.x_order]
        base = _empty((n, *stored), self.x_dtype, pin=pin, shared=shared)
        inverse = [self.x_order.index(d) + 1 for d in range(len(self.x_shape))]
        x = base.permute(0, *inverse)
        y = None
        if self.y_shape is not None:
            y = _empty((n, *self.y_shape), self.y_dtype, pin=pin, shared=shared)
        return ChunkBuffer(x, y)


def _empty(shape: tuple[int, ...], dtype: torch.dtype | None, *, pin: bool, shared: bool) -> torch.Tensor:
    if not shared:
        return torch.empty(shape, dtype=dtype, pin_memory=pin)
    nbytes = _numel(shape) * _itemsize(dtype)
    storage = new_shared(nbytes)  # no copy, unlike share_memory_()
    tensor = torch.empty(0, dtype=dtype).set_(storage, 0, shape)
    if pin and nbytes:  # page-lock the shared pages in place for fast H2D copies
        torch.cuda.cudart().cudaHostRegister(tensor.data_ptr(), nbytes, 0)
    return tensor


@dataclass(eq=False)  # identity: the pool finds its buffers with list.remove
class ChunkBuffer:
    """Room for ``len(x)`` samples: ``x`` (N x ...) and ``y`` (N x ...) or None."""

    x: torch.Tensor
    y: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.x)

    @property
    def nbytes(self) -> int:
        size = self.x.untyped_storage().nbytes()
        return size + (0 if self.y is None else self.y.untyped_storage().nbytes())

    def in_use(self) -> bool:
        """Whether a view of this buffer lives outside the pool (see the NOTE above)."""
        return any(_outside_refs(t) for t in (self.x, self.y) if t is not None)


def _outside_refs(tensor: torch.Tensor) -> bool:
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None:  # private API gone: assume the worst, never reuse
        return True
    # references: the buffer's own tensor, the temporary storage object, and
    # torch.empty's base tensor when x is a permuted view of it
    return use_count(tensor.untyped_storage()._cdata) > (2 if tensor._base is None else 3)


class BufferPool:
    """Chunk buffers of ``chunk_size`` samples, at most ``slots`` handed out at once."""

    def __init__(
        self, layout: SampleLayout, chunk_size: int, *, slots: int, pin: bool, shared: bool = False
    ) -> None:
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


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _itemsize(dtype: torch.dtype | None) -> int:
    return torch.empty((), dtype=dtype).element_size()
