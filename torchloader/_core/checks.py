"""One check per mistake, one text each: counts, ranks and block sizes.

Every count a user passes (``batch_size``, ``num_workers``, ``chunk_size``, ``seed``,
``epoch``, ...) goes through :func:`check_int`: a value that is not an int is a
``TypeError``, one below the minimum a ``ValueError``, with the same words
wherever it was passed. Pure Python, so the pure-NumPy order can use it.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

__all__ = ["check_block", "check_int", "check_rank"]


def check_int(name: str, value: Any, *, minimum: int = 0) -> int:
    """``value`` as an ``int`` >= ``minimum`` (``bool`` is refused: ``True`` is no count).

    Example:
        >>> check_int("batch_size", 32, minimum=1)
        32
        >>> check_int("batch_size", 2.5, minimum=1)
        Traceback (most recent call last):
        TypeError: batch_size must be an int (got 2.5, a float)
    """
    _check_type(name, value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (got {name}={value})")
    return int(value)


def check_rank(rank: Any, num_replicas: int) -> int:
    """``rank`` as an ``int`` in ``[0, num_replicas)``."""
    _check_type("rank", rank)
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas - 1}] for num_replicas={num_replicas} (got rank={rank})")
    return int(rank)


def check_block(block_size: Any, chunk_size: int) -> int:
    """``block_size`` as an ``int`` in ``[1, chunk_size)``."""
    block_size = check_int("block_size", block_size, minimum=1)
    if block_size >= chunk_size:
        raise ValueError(
            f"block_size must be smaller than chunk_size (got block_size={block_size}, "
            f"chunk_size={chunk_size}); leave it None for chunks of one block"
        )
    return block_size


def _check_type(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int (got {value!r}, a {type(value).__name__})")
