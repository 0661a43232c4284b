"""How ``ChunkedLoader``'s ``ram_budget`` becomes its ``chunk_size``.

Two chunk buffers share the budget, less a reserve for what loading costs
besides them (each worker process's own pages, a batch that straddles two
chunks, allocator slack: 21-38 MiB measured with 2 workers, BENCHMARKS.md): an eighth of the
budget, at most 12 MiB per process. A chunk holds whole batches, so that no
batch straddles two chunks (and is copied).
"""

from __future__ import annotations

from typing import Any

from torchloader._core.units import format_bytes
from torchloader.order._arguments import check_chunk_args

__all__ = ["BUFFERS", "loader_chunk_size"]

BUFFERS = 2  # double buffering: one chunk served while the next loads
_RESERVE_PER_PROCESS = 12 * 2**20  # of ram_budget, for what loading costs besides the buffers


def loader_chunk_size(
    chunk_size: Any, ram_budget: Any, *, sample_bytes: int, batch_size: int, processes: int, samples: int
) -> int:
    """The chunk size given, or the largest that ``ram_budget`` holds (see the module docstring)."""
    chunk_size, budget = check_chunk_args(chunk_size, ram_budget)
    if chunk_size is None:
        assert budget is not None
        chunk_size = _buffer_share(budget, processes) // (BUFFERS * sample_bytes)
        if chunk_size < batch_size:
            smallest = _smallest_budget(BUFFERS * batch_size * sample_bytes, processes)
            raise ValueError(
                f"ram_budget={budget} bytes ({format_bytes(budget)}) cannot hold "
                f"{BUFFERS} chunks of one batch and the workers' reserve: a sample takes "
                f"{sample_bytes} bytes, a batch of {batch_size} takes "
                f"{batch_size * sample_bytes} bytes; the smallest budget "
                f"that works is ram_budget={smallest} ({format_bytes(smallest)})"
            )
        chunk_size -= chunk_size % batch_size
    return min(chunk_size, samples)


def _buffer_share(budget: int, processes: int) -> int:
    """The bytes of ``budget`` left for the chunk buffers after the reserve."""
    return budget - min(budget // 8, processes * _RESERVE_PER_PROCESS)


def _smallest_budget(buffers: int, processes: int) -> int:
    budget = buffers
    while _buffer_share(budget, processes) < buffers:
        budget += buffers - _buffer_share(budget, processes)
    return budget
