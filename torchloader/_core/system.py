"""What this machine gives the process: the cores it may run on.

One probe, used wherever a default depends on it (worker counts, ``torchloader
env``, ``torchloader bench``), so every place counts the same cores: the ones the
process's CPU affinity allows (a ``taskset``, a container's cpuset, a Slurm
allocation), not every core of the machine.
"""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on (at least 1).

    Example:
        >>> usable_cores() >= 1
        True
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1  # pragma: no cover - macOS and Windows have no affinity call
