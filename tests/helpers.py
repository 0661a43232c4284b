"""Helpers shared by several test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import multiprocessing.connection
import os
import signal
import time

import numpy as np
import pytest
from PIL import Image


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging: SIGALRM interrupts the main thread after ``seconds``.

    pytest-timeout's own alarm for the whole test (the same timer) is put back after,
    less the time spent here."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 0.001))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a torchrun rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, seconds=10.0):
    """Poll ``condition`` until it holds; fail after ``seconds`` (not a timing check)."""
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "the condition never held"
        time.sleep(0.005)


@functools.cache
def china() -> np.ndarray:
    """scikit-learn's sample photograph, 427 x 640 x 3, read without importing sklearn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        pytest.skip("needs scikit-learn's sample images")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "images", "china.jpg")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# Python >= 3.12 warns on fork() in a process with threads; not about this library.
IGNORE_FORK_WARNING = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
)


def wait_for_ranks(ranks, end):
    """Wait for the rank processes ``ranks`` until all have ended, one has failed (the
    others would wait for it) or ``end`` (``time.monotonic()``) has passed; kill those
    left. Returns the names of the ranks still running at the deadline (a hang)."""
    try:
        running = list(ranks)
        while running and time.monotonic() < end:
            multiprocessing.connection.wait([process.sentinel for process in running], end - time.monotonic())
            running = [process for process in running if process.exitcode is None]
            if any(process.exitcode for process in ranks):
                break
        return [process.name for process in running] if time.monotonic() >= end else []
    finally:
        for process in ranks:
            if process.is_alive():
                process.kill()
            process.join(10)
