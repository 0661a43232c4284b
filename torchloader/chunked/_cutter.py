"""Cut loaded RAM chunks into batches; a batch that runs past its chunk is carried on.

Batches are consecutive runs of ``batch_size`` positions of the epoch's order,
whatever the chunk boundaries: a batch inside a chunk is a view of the chunk
buffer (no copy); one that straddles chunks is assembled from copies of its
pieces, since its first chunk's buffer is handed back before the batch is
complete. A sample ``on_error="skip"`` left out still takes its position: its
batch is one sample shorter (a copy of the others) and no batch boundary moves,
so every rank of a distributed job takes the same number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from torchloader._core.layout import ChunkBuffer, rows_of
from torchloader.error_log import SkippedSample
from torchloader.error_log import SkippedSlots as Skipped

__all__ = ["BatchCutter", "Cut"]

Piece = tuple[torch.Tensor, "torch.Tensor | None"]


class Cut(NamedTuple):
    """A batch as cut from the chunks, with what it stands for in the epoch's order."""

    batch: Any  # x, or (x, y)
    positions: int  # positions of the order it covers: samples served or left out
    skipped: list[SkippedSample]  # the samples left out of it


class BatchCutter:
    """Cuts the chunks of one pass into batches of ``batch_size`` positions, each a
    :class:`Cut` that says how many positions it covers (so the consumer can count
    where in the order it stands) and which samples were left out of it."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._pieces: list[Piece] = []
        self._positions = 0  # positions of the order the pieces cover
        self._skipped: list[SkippedSample] = []  # of the pieces

    @property
    def pending(self) -> bool:
        """Whether a batch begun in earlier chunks is still unfinished."""
        return self._positions > 0

    def batches_of(self, buffer: ChunkBuffer, size: int, skipped: Skipped | None = None) -> Iterator[Cut]:
        """The batches that end in the first ``size`` slots of ``buffer``; the
        ``(slot, record)`` of ``skipped`` are the samples that were left out."""
        skipped = skipped or []
        keep = None
        if len(skipped):
            keep = np.ones(size, dtype=bool)
            keep[np.array([slot for slot, _ in skipped], dtype=np.int64)] = False
        pos = 0
        if self._positions:  # finish the batch that started in an earlier chunk
            pos = min(self.batch_size - self._positions, size)
            self._carry(buffer, 0, pos, keep, skipped)
            if self._positions == self.batch_size:
                yield self.finish()
        while pos + self.batch_size <= size:
            batch = _batch(*_take(buffer, pos, pos + self.batch_size, keep, copy=False))
            yield Cut(batch, self.batch_size, _records(skipped, pos, pos + self.batch_size))
            pos += self.batch_size
        if pos < size:  # the start of a batch that ends in a later chunk
            self._carry(buffer, pos, size, keep, skipped)

    def finish(self) -> Cut:
        """The batch made of the pieces carried so far (which are then dropped)."""
        pieces = [p for p in self._pieces if len(p[0])] or self._pieces[:1]  # cat keeps the memory order
        cut = Cut(None, self._positions, self._skipped)
        self._pieces, self._positions, self._skipped = [], 0, []
        x = torch.cat([p[0] for p in pieces])
        y = None if pieces[0][1] is None else torch.cat([p[1] for p in pieces])  # type: ignore[misc]
        return cut._replace(batch=_batch(x, y))

    def _carry(self, buffer: ChunkBuffer, a: int, b: int, keep: np.ndarray | None, skipped: Skipped) -> None:
        self._pieces.append(_take(buffer, a, b, keep, copy=True))
        self._positions += b - a
        self._skipped += _records(skipped, a, b)


def _records(skipped: Skipped, a: int, b: int) -> list[SkippedSample]:
    return [record for slot, record in skipped if a <= slot < b]


def _take(buffer: ChunkBuffer, a: int, b: int, keep: np.ndarray | None, *, copy: bool) -> Piece:
    """Slots ``a:b`` of ``buffer`` without the left-out ones: a view where none is
    left out and ``copy`` is false, else a copy."""
    if keep is not None and not keep[a:b].all():
        rows = np.flatnonzero(keep[a:b]) + a
        return rows_of(buffer.x, rows), None if buffer.y is None else rows_of(buffer.y, rows)
    x, y = buffer.x[a:b], None if buffer.y is None else buffer.y[a:b]
    if copy:
        return x.clone(), None if y is None else y.clone()
    return x, y


def _batch(x: torch.Tensor, y: torch.Tensor | None) -> Any:
    return x if y is None else (x, y)
