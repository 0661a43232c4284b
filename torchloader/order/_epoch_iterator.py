"""One pass of a ``ChunkedSampler`` over an epoch's order: it knows its position, for ``state_dict``."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["EpochIterator"]

_BLOCK = 4096  # indices turned into Python ints at a time


class EpochIterator:
    """One pass over an epoch's order; knows its position for ``state_dict``."""

    def __init__(self, sampler: Any, order: np.ndarray, start: int) -> None:
        self._sampler = sampler
        self.epoch = sampler.epoch
        self._order = order
        self._block: list[int] = []  # order[_block_start:][:_BLOCK] as ints, for __next__
        self._block_start = 0
        self._cursor = 0
        self._start = start
        self.finished = False  # handed out its last index (or found none left)

    @property
    def position(self) -> int:
        """Indices of this epoch handed out, counted from the start of the epoch."""
        return self._start + self._cursor

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self) -> int:
        offset = self._cursor - self._block_start
        if offset >= len(self._block):  # Python ints a block at a time: RAM stays small
            if self._cursor >= len(self._order):
                self._advance(0)  # an empty remainder (resumed at the end) ends the epoch
                raise StopIteration
            self._block_start, offset = self._cursor, 0
            self._block = self._order[self._cursor : self._cursor + _BLOCK].tolist()
        index = self._block[offset]
        self._advance(1)
        return index

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` indices as one array (fewer at the end of the epoch)."""
        batch = self._order[self._cursor : self._cursor + count]
        self._advance(len(batch))
        return batch

    def _advance(self, count: int) -> None:
        self._cursor += count
        if self._cursor >= len(self._order) and not self.finished:
            self.finished = True
            self._order, self._block = self._order[:0].copy(), []  # the sampler keeps us
            self._sampler._finish_epoch(self)
