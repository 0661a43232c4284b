"""Byte counts: read from ``"8GiB"``-style strings, written for people."""

from __future__ import annotations

import re
from decimal import Decimal

import numpy as np

__all__ = ["format_bytes", "parse_bytes"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_bytes(size: int | str) -> int:
    """Bytes from an int or a string such as ``"8GiB"``, ``"512 MB"``, ``"1.5G"``.

    ``KiB``/``MiB``/``GiB``/``TiB`` and the bare ``K``/``M``/``G``/``T`` are
    powers of 1024; ``KB``/``MB``/``GB``/``TB`` are powers of 1000.

    Example:
        >>> parse_bytes("1.5GiB"), parse_bytes("2MB"), parse_bytes(4096)
        (1610612736, 2000000, 4096)
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer, str)):
        raise TypeError(f"size must be an int or a string like '8GiB' (got {type(size).__name__})")
    if not isinstance(size, str):
        if size < 0:
            raise ValueError(f"size must be >= 0 bytes (got {size})")
        return int(size)
    match = _SIZE.match(size)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"cannot read {size!r} as a size; write e.g. '8GiB', '512MB' or 1048576")
    # Decimal, not float: float("2.01") * 1000 is 2009.99..., which int() makes 2009
    return int(Decimal(match.group(1)) * _UNITS[unit])


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``: a byte count for people."""
    for unit, digits in (("B", 0), ("KiB", 1), ("MiB", 1), ("GiB", 1)):
        if abs(round(n, digits)) < 1024:  # so 1048575 is '1.0 MiB', not '1024.0 KiB'
            return f"{n:.{digits}f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
