"""Shared helpers for the benchmark scripts: timing, machine description, tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable

import numpy as np
import PIL
import torch


def epoch_rate(run_epoch: Callable[[], Iterable], samples: int, repeats: int = 3) -> float:
    """Samples/s of one epoch: one warm-up epoch, then the median of ``repeats``."""
    for _ in run_epoch():
        pass
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in run_epoch():
            pass
        times.append(time.perf_counter() - start)
    return samples / statistics.median(times)


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {cores} cores; Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {np.__version__}, Pillow {PIL.__version__}, "
        f"torch threads {torch.get_num_threads()}"
    )


def table(rows: list[tuple], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def measure_epochs(make: Callable[[], Iterable], samples: int, *, warmup: int = 1) -> tuple[float, int]:
    """Build a loader with ``make()``, run ``warmup`` epochs, time one more.

    Returns (samples/s of the timed epoch, peak PSS of the process tree over the
    PSS before the loader was built, in bytes): ``torchloader.tools.bench.time_epochs``,
    for the peers' scripts. Each ``iter(loader)`` must start a new epoch.
    """
    from torchloader.tools.bench import time_epochs

    return time_epochs(make, samples, warmup=warmup)
