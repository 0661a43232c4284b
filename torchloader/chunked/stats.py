"""What a ``ChunkedLoader`` did, so a user can see whether loading is the bottleneck."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields

__all__ = ["LoaderStats"]


@dataclass
class LoaderStats:
    """Counters since the loader was made (or since :meth:`reset`).

    Attributes:
        chunks_loaded: RAM chunks filled.
        samples_loaded: samples read into chunks.
        bytes_loaded: bytes written into chunk buffers.
        load_seconds: time spent filling chunks (in the background).
        wait_seconds: time the consumer waited for a chunk; near zero means
            loading keeps up, close to ``load_seconds`` means loading is the bottleneck.
        first_chunk_wait_seconds: the wait for the first chunk of the latest epoch
            (the stall at the epoch boundary; the first epoch's includes start-up).
        peak_buffer_bytes: the most bytes of chunk buffers alive at once.
        samples_skipped: samples left out of the batches handed out
            (``on_error="skip"``), each listed once in the loader's ``errors``.
    """

    chunks_loaded: int = 0
    samples_loaded: int = 0
    bytes_loaded: int = 0
    load_seconds: float = 0.0
    wait_seconds: float = 0.0
    first_chunk_wait_seconds: float = 0.0
    peak_buffer_bytes: int = 0
    samples_skipped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_chunk(self, samples: int, nbytes: int, seconds: float, peak_bytes: int) -> None:
        with self._lock:
            self.chunks_loaded += 1
            self.samples_loaded += samples
            self.bytes_loaded += nbytes
            self.load_seconds += seconds
            self.peak_buffer_bytes = max(self.peak_buffer_bytes, peak_bytes)

    def add_skipped(self, samples: int) -> None:
        with self._lock:
            self.samples_skipped += samples

    def add_wait(self, seconds: float) -> None:
        with self._lock:
            self.wait_seconds += seconds

    def reset(self) -> None:
        with self._lock:
            for f in fields(self):
                if not f.name.startswith("_"):
                    setattr(self, f.name, f.default)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
