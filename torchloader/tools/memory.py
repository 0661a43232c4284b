"""Memory of this process and its children, as a data loader's cost is measured.

A loader's footprint is the whole process tree: the main process and every
worker. Summing RSS over it counts each shared page (a forked worker's view of
the parent's data, a shared-memory batch) once per process that maps it, so the
sum can exceed the machine's RAM. PSS (proportional set size) divides each
shared page among the processes that map it, so the sum over the tree is what
the tree really costs. Linux reports it in ``/proc/<pid>/smaps_rollup``;
elsewhere RSS is used (``psutil``, when installed).
"""

from __future__ import annotations

import os
import threading

__all__ = ["PeakMemory", "process_tree_memory"]


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(child) for child in f.read().split()]
        except OSError:
            pass
    return found


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # the process ended while being read
        pass
    return 0


def process_tree_memory(pid: int | None = None) -> int | None:
    """Bytes used by process ``pid`` (default: this one) and all its descendants.

    PSS summed over the tree on Linux; RSS through ``psutil`` elsewhere; None
    where neither is available.

    Example:
        >>> process_tree_memory() > 0  # doctest: +SKIP
        True
    """
    pid = os.getpid() if pid is None else pid
    if os.path.exists(f"/proc/{pid}/smaps_rollup"):
        total, todo = 0, [pid]
        while todo:
            current = todo.pop()
            total += _pss(current)
            todo += _children(current)
        return total
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process(pid)
    total = 0
    for process in [me, *me.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


class PeakMemory:
    """Peak of :func:`process_tree_memory` while the ``with`` block runs.

    A background thread samples every ``interval`` seconds; ``peak`` and
    ``baseline`` (taken on entry) are bytes, or None where memory cannot be read.
    Each reading costs up to milliseconds of kernel time for a large process
    tree (PSS walks the page tables), so do not sample while timing.

    Example:
        >>> with PeakMemory() as memory:
        ...     data = bytearray(10_000_000)
        >>> memory.peak is None or memory.peak >= memory.baseline
        True
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.baseline: int | None = None
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="torchloader-memory", daemon=True)

    @property
    def above_baseline(self) -> int | None:
        """Peak minus the memory on entry, in bytes."""
        if self.peak is None or self.baseline is None:
            return None
        return self.peak - self.baseline

    def sample(self) -> None:
        """Take one reading now (also after the block has ended)."""
        now = process_tree_memory()
        if now is not None:
            self.peak = now if self.peak is None else max(self.peak, now)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.baseline = process_tree_memory()
        self.peak = self.baseline
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
