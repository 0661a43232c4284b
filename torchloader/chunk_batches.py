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

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .chunk_buffer import ChunkBuffer

__all__ = ["BatchCutter"]

Piece = tuple[torch.Tensor, "torch.Tensor | None"]


class BatchCutter:
    """Cuts the chunks of one pass into batches of ``batch_size`` positions.

    ``sizes`` receives each batch's positions (samples served or left out), so
    the consumer can count where in the order it stands.
    """

    def __init__(self, batch_size: int, sizes: deque[int]) -> None:
        self.batch_size = batch_size
        self.sizes = sizes
        self._pieces: list[Piece] = []
        self._positions = 0  # positions of the order the pieces cover

    @property
    def pending(self) -> bool:
        """Whether a batch begun in earlier chunks is still unfinished."""
        return self._positions > 0

    def batches_of(self, buffer: ChunkBuffer, size: int, bad: Sequence[int] = ()) -> Iterator[Any]:
        """The batches that end in the first ``size`` slots of ``buffer``; the slots
        in ``bad`` hold samples that were left out."""
        keep = None
        if len(bad):
            keep = np.ones(size, dtype=bool)
            keep[np.asarray(bad, dtype=np.int64)] = False
        pos = 0
        if self._positions:  # finish the batch that started in an earlier chunk
            pos = min(self.batch_size - self._positions, size)
            self._carry(buffer, 0, pos, keep)
            if self._positions == self.batch_size:
                yield self.finish()
        while pos + self.batch_size <= size:
            self.sizes.append(self.batch_size)
            yield _batch(*_take(buffer, pos, pos + self.batch_size, keep, copy=False))
            pos += self.batch_size
        if pos < size:  # the start of a batch that ends in a later chunk
            self._carry(buffer, pos, size, keep)

    def finish(self) -> Any:
        """The batch made of the pieces carried so far (which are then dropped)."""
        pieces, self._pieces = self._pieces, []
        self.sizes.append(self._positions)
        self._positions = 0
        x = torch.cat([p[0] for p in pieces])
        y = None if pieces[0][1] is None else torch.cat([p[1] for p in pieces])  # type: ignore[misc]
        return _batch(x, y)

    def _carry(self, buffer: ChunkBuffer, a: int, b: int, keep: np.ndarray | None) -> None:
        self._pieces.append(_take(buffer, a, b, keep, copy=True))
        self._positions += b - a


def _take(buffer: ChunkBuffer, a: int, b: int, keep: np.ndarray | None, *, copy: bool) -> Piece:
    """Slots ``a:b`` of ``buffer`` without the left-out ones: a view where none is
    left out and ``copy`` is false, else a copy."""
    if keep is not None and not keep[a:b].all():
        rows = torch.from_numpy(np.flatnonzero(keep[a:b]) + a)
        return buffer.x[rows], None if buffer.y is None else buffer.y[rows]
    x, y = buffer.x[a:b], None if buffer.y is None else buffer.y[a:b]
    if copy:
        return x.clone(), None if y is None else y.clone()
    return x, y


def _batch(x: torch.Tensor, y: torch.Tensor | None) -> Any:
    return x if y is None else (x, y)
