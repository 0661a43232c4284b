"""Tests for torchloader/memory.py: memory of the process tree, and its peak."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from torchloader.memory import PeakMemory, process_tree_memory

MiB = 2**20
linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="PSS is read from /proc")


# a child interpreter holding 64 MiB until its stdin closes (no torch: a start of 30 ms)
_HOLD = (
    "import sys\n"
    "data = bytearray(64 * 2**20)\n"
    "data[::4096] = b'x' * len(data[::4096])  # touch every page\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


@linux_only
def test_a_childs_memory_counts_in_the_tree():
    before = process_tree_memory()
    child = subprocess.Popen([sys.executable, "-c", _HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        during = process_tree_memory()
    finally:
        child.stdin.close()
        child.wait(30)
        child.stdout.close()

    assert during - before > 64 * MiB  # the child's 64 MiB, plus its interpreter


@linux_only
def test_peak_memory_sees_an_allocation_that_is_gone_at_the_end():
    with PeakMemory(interval=0.001) as memory:
        data = bytearray(48 * MiB)
        data[:: 4096] = b"x" * len(data[:: 4096])
        time.sleep(0.05)
        del data

    assert memory.above_baseline >= 40 * MiB
    assert memory.peak >= memory.baseline


def test_without_proc_or_psutil_memory_is_unknown(monkeypatch):
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    monkeypatch.setitem(sys.modules, "psutil", None)

    assert process_tree_memory() is None
    with PeakMemory() as memory:
        pass
    assert memory.peak is None and memory.above_baseline is None


def test_psutil_gives_rss_where_proc_has_no_pss(monkeypatch):
    pytest.importorskip("psutil")
    monkeypatch.setattr(os.path, "exists", lambda path: False)

    assert process_tree_memory() > 10 * MiB
