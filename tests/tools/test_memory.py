"""Tests for torchloader/tools/memory.py: memory of the process tree, and its peak."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from torchloader.tools.memory import PeakMemory, process_tree_memory

MiB = 2**20
linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="PSS is read from /proc")


# A child interpreter holding 256 MiB until its stdin closes (no torch: a start of 30 ms).
# Much more than the noise: PSS splits a shared page among every process that maps it, so
# this tree's share of torch's libraries moves by MiBs as other processes (the other xdist
# worker's) map them; with 64 MiB the sum once came out at 63.2 MiB.
_HOLD = (
    "import sys\n"
    "data = bytearray(256 * 2**20)\n"
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

    assert during - before > 192 * MiB  # the child's 256 MiB and its interpreter, less the noise


@linux_only
def test_peak_memory_sees_an_allocation_that_is_gone_at_the_end():
    with PeakMemory(interval=0.001) as memory:
        data = bytearray(192 * MiB)  # far above the noise (see _HOLD): 48 MiB once read as 39.2
        data[::4096] = b"x" * len(data[::4096])
        time.sleep(0.2)  # readings every ms, on a busy machine too
        del data

    assert memory.above_baseline >= 160 * MiB
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
