"""The stacks of the run's processes, asked for when a test hangs.

Each pytest process registers ``faulthandler`` on SIGUSR2 (``register``): its threads'
stacks go to its own file in the session's folder (``background.root()``), and a process
forked from it (a DataLoader worker) inherits that and writes to the same file. ``collect``
signals processes one at a time and returns what each wrote, by pid. A signal handler of
faulthandler's is C code: it answers even where the main thread is stuck in C, holding
the GIL or not, where no Python-level handler would run.

Two callers (tests/conftest.py): pytest-timeout's alarm asks the hung test's children
(the test's own stack comes from pytest-timeout), and, in the first pytest process of an
xdist run, a ``Watchdog`` thread asks every process of the run once no test has ended
for ``quiet`` seconds (a hang pytest-timeout cannot end, as the last resort).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
from collections.abc import Callable

import background
import psutil

__all__ = ["Watchdog", "collect", "register"]

_files: list = []  # kept open for faulthandler


def register() -> None:
    """Stacks of this process (and of its forks) on SIGUSR2, into the session's folder."""
    folder = background.root() / "stacks"
    folder.mkdir(exist_ok=True)
    file = open(folder / f"{os.getpid()}.txt", "a")  # (open for the life of the process)
    _files.append(file)
    faulthandler.register(signal.SIGUSR2, file=file, all_threads=True)


def answers(pid: int) -> bool:
    """Whether process ``pid`` catches SIGUSR2 (a pytest process or a fork of one); any
    other process (a spawned child, a program) would be killed by it."""
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) >> (signal.SIGUSR2 - 1) & 1)


def collect(processes: list[psutil.Process]) -> str:
    """The stacks of ``processes`` (those that answer), one after the other, by pid."""
    folder = background.root() / "stacks"
    parts = []
    for proc in processes:
        if not answers(proc.pid):
            continue
        before = _sizes(folder)
        try:
            name = proc.name()
            proc.send_signal(signal.SIGUSR2)
        except psutil.Error:
            continue
        end, last = time.monotonic() + 2.0, before
        while time.monotonic() < end:
            time.sleep(0.2)
            now = _sizes(folder)
            if now != before and now == last:  # it wrote, and has stopped
                break
            last = now
        text = "".join(_read(folder / f, before.get(f, 0)) for f, n in last.items() if n != before.get(f, 0))
        parts.append(f"--- pid {proc.pid} ({name}) ---\n{text or '(nothing written)'}")
    return "\n".join(parts)


def _sizes(folder) -> dict[str, int]:
    out = {}
    for entry in os.scandir(folder) if folder.exists() else []:
        out[entry.name] = entry.stat().st_size
    return out


def _read(path, start: int) -> str:
    with open(path, errors="replace") as f:
        f.seek(start)
        return f.read()


class Watchdog(threading.Thread):
    """In the first pytest process: once no test has ended for ``quiet`` seconds, writes the
    stacks of every process of the run that answers (``write``), then waits as long again."""

    def __init__(self, quiet: float, write: Callable[[str], None]) -> None:
        super().__init__(name="test-stacks-watchdog", daemon=True)
        self.quiet, self.write = quiet, write
        self.last = time.monotonic()
        self.done = threading.Event()

    def reported(self) -> None:
        self.last = time.monotonic()

    def run(self) -> None:
        while not self.done.wait(10.0):
            if time.monotonic() - self.last < self.quiet:
                continue
            everyone = psutil.Process().children(recursive=True)
            self.write(
                f"no test ended for {self.quiet:.0f} s; the stacks of the run's processes:\n" + collect(everyone)
            )
            self.last = time.monotonic()
