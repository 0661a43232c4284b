"""Tests for torchloader/memory.py: memory of the process tree, and its peak."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

import pytest

from torchloader.memory import PeakMemory, process_tree_memory

MiB = 2**20
linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="PSS is read from /proc")


def _hold(megabytes, ready, done):
    data = bytearray(megabytes * MiB)
    data[:: 4096] = b"x" * len(data[:: 4096])  # touch every page
    ready.set()
    done.wait(30)


@linux_only
def test_a_childs_memory_counts_in_the_tree():
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    before = process_tree_memory()
    child = context.Process(target=_hold, args=(64, ready, done))
    child.start()
    try:
        assert ready.wait(30)
        during = process_tree_memory()
    finally:
        done.set()
        child.join(30)

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
