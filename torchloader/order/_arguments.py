"""The arguments ``ChunkedSampler`` and ``ChunkedLoader`` share: a chunk size or a RAM
budget, and the replicas (given, or those of ``torch.distributed``)."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import torch.distributed as dist

from torchloader._core.checks import check_int, check_rank
from torchloader._core.sizes import sample_nbytes
from torchloader._core.units import parse_bytes
from torchloader.order.chunking import chunk_size_for_budget

__all__ = ["check_chunk_args", "check_chunking", "check_replicas"]


def check_chunk_args(chunk_size: Any, ram_budget: Any) -> tuple[int | None, int | None]:
    """``(chunk_size, ram_budget in bytes)`` checked, exactly one of them not None."""
    if (chunk_size is None) == (ram_budget is None):
        raise ValueError(
            f"give exactly one of chunk_size (samples) or ram_budget (bytes) "
            f"(got chunk_size={chunk_size!r}, ram_budget={ram_budget!r})"
        )
    if chunk_size is not None:
        return check_int("chunk_size", chunk_size, minimum=1), None
    try:
        return None, parse_bytes(ram_budget)
    except (TypeError, ValueError) as err:
        raise type(err)(f"ram_budget={ram_budget!r}: {err}") from None


def check_chunking(data_source: Sized, chunk_size: Any, ram_budget: Any) -> int:
    """The chunk size in samples: ``chunk_size``, or as many samples as ``ram_budget`` holds."""
    chunk_size, budget = check_chunk_args(chunk_size, ram_budget)
    if chunk_size is not None:
        return chunk_size
    return chunk_size_for_budget(budget, sample_nbytes(data_source))


def check_replicas(num_replicas: Any, rank: Any) -> tuple[int, int]:
    """``(num_replicas, rank)``, each None taken from ``torch.distributed`` (or 1 and 0)."""
    distributed = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if distributed else 1
    if rank is None:
        rank = dist.get_rank() if distributed else 0
    num_replicas = check_int("num_replicas", num_replicas, minimum=1)
    return num_replicas, check_rank(rank, num_replicas)
