"""Files written whole or not at all: a temporary name, synced, then moved into place."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = ["atomic_file", "write_json_atomic"]


def write_json_atomic(path: str, value: Any) -> None:
    with atomic_file(path) as f:
        json.dump(value, f, indent=1)


@contextmanager
def atomic_file(path: str, mode: str = "w", **options: Any) -> Iterator[IO]:
    """A file to write ``path`` through: a temporary name, synced, then moved into
    place; a write that fails (a full disk) removes the temporary file."""
    temp = f"{path}.{os.getpid()}.partial"
    try:
        with open(temp, mode, **options) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise
