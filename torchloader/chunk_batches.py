"""Cut a loaded RAM chunk into batches; a batch that runs past its chunk is carried on.

Batches are consecutive runs of ``batch_size`` in the epoch's order, whatever the
chunk boundaries: a batch inside a chunk is a view of the chunk buffer (no
copy); one that straddles chunks is assembled from copies of its pieces, since
its first chunk's buffer is handed back before the batch is complete.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import torch

from .chunk_buffer import ChunkBuffer

__all__ = ["batches_of", "finish"]

Piece = tuple[torch.Tensor, "torch.Tensor | None"]


def batches_of(
    buffer: ChunkBuffer, size: int, batch_size: int, pieces: list[Piece], sizes: deque[int]
) -> Iterator[Any]:
    """The batches that end in the first ``size`` slots of ``buffer``.

    ``pieces`` holds the start of a batch begun in earlier chunks and receives the
    start of one that this chunk cannot finish; ``sizes`` gets each batch's length.
    """
    pos = 0
    if pieces:  # finish the batch that started in an earlier chunk
        pos = min(batch_size - _count(pieces), size)
        pieces.append(_copy(buffer, 0, pos))
        if _count(pieces) == batch_size:
            yield finish(pieces, sizes)
    while pos + batch_size <= size:
        sizes.append(batch_size)
        yield _batch(buffer.x[pos : pos + batch_size], _y(buffer, pos, pos + batch_size))
        pos += batch_size
    if pos < size:  # the start of a batch that ends in a later chunk
        pieces.append(_copy(buffer, pos, size))


def finish(pieces: list[Piece], sizes: deque[int]) -> Any:
    """The batch made of ``pieces`` (which is then emptied)."""
    sizes.append(_count(pieces))
    x = torch.cat([p[0] for p in pieces])
    y = None if pieces[0][1] is None else torch.cat([p[1] for p in pieces])  # type: ignore[misc]
    pieces.clear()
    return _batch(x, y)


def _y(buffer: ChunkBuffer, a: int, b: int) -> torch.Tensor | None:
    return None if buffer.y is None else buffer.y[a:b]


def _copy(buffer: ChunkBuffer, a: int, b: int) -> Piece:
    y = _y(buffer, a, b)
    return buffer.x[a:b].clone(), None if y is None else y.clone()


def _count(pieces: list[Piece]) -> int:
    return sum(len(x) for x, _ in pieces)


def _batch(x: torch.Tensor, y: torch.Tensor | None) -> Any:
    return x if y is None else (x, y)
