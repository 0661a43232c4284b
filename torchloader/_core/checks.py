"""Checks of the arguments samplers and loaders share: counts, ranks, chunk size or budget."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import numpy as np
import torch.distributed as dist

from torchloader._core.sizes import sample_nbytes
from torchloader._core.units import parse_bytes
from torchloader.order.chunking import chunk_size_for_budget

__all__ = ["check_block", "check_chunk_args", "check_chunking", "check_non_negative_int", "check_replicas"]


def check_chunk_args(chunk_size: Any, ram_budget: Any) -> tuple[int | None, int | None]:
    """``(chunk_size, ram_budget in bytes)`` checked, exactly one of them not None."""
    if (chunk_size is None) == (ram_budget is None):
        raise ValueError(
            f"give exactly one of chunk_size (samples) or ram_budget (bytes) "
            f"(got chunk_size={chunk_size!r}, ram_budget={ram_budget!r})"
        )
    if chunk_size is not None:
        return check_non_negative_int("chunk_size", chunk_size, minimum=1), None
    try:
        return None, parse_bytes(ram_budget)
    except (TypeError, ValueError) as err:
        raise type(err)(f"ram_budget={ram_budget!r}: {err}") from None


def check_chunking(data_source: Sized, chunk_size: Any, ram_budget: Any) -> int:
    chunk_size, budget = check_chunk_args(chunk_size, ram_budget)
    if chunk_size is not None:
        return chunk_size
    return chunk_size_for_budget(budget, sample_nbytes(data_source))


def check_block(block_size: Any, chunk_size: int) -> int:
    block_size = check_non_negative_int("block_size", block_size, minimum=1)
    if block_size >= chunk_size:
        raise ValueError(
            f"block_size must be smaller than chunk_size (got block_size={block_size}, "
            f"chunk_size={chunk_size}); leave it None for chunks of one block"
        )
    return block_size


def check_replicas(num_replicas: Any, rank: Any) -> tuple[int, int]:
    distributed = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if distributed else 1
    if rank is None:
        rank = dist.get_rank() if distributed else 0
    num_replicas = check_non_negative_int("num_replicas", num_replicas, minimum=1)
    rank = check_non_negative_int("rank", rank)
    if rank >= num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas - 1}] for num_replicas={num_replicas} (got rank={rank})")
    return num_replicas, rank


def check_non_negative_int(name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name!r} must be <int> (got {value!r} that is a <{type(value).__name__}>)")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (got {name}={value})")
    return int(value)
