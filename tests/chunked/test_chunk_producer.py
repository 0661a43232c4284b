"""Tests for torchloader/chunked/_producer.py: the thread that loads chunks ahead."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
from helpers import deadline, wait_until

from torchloader import ChunkedSampler, PreloadedDataset
from torchloader.chunked import _producer as chunk_producer
from torchloader.chunked._buffers import BufferPool
from torchloader.chunked._fill import ChunkFiller
from torchloader.chunked._producer import LoadedChunk, Producer, chunk_plan
from torchloader.chunked.stats import LoaderStats

DS = PreloadedDataset(torch.arange(40).reshape(20, 2), torch.arange(20))


class Failing:
    """A filler whose ``fail``-th fill raises."""

    def __init__(self, fail=0):
        self.inner, self.fail, self.calls = ChunkFiller(DS, 0), fail, 0

    def fill(self, buffer, indices, stop, epoch=None):
        self.calls += 1
        if self.calls > self.fail:
            raise OSError("disk gone")
        return self.inner.fill(buffer, indices, stop, epoch)


def _plan(*chunks, epoch=0):
    """``(epoch, indices, last)`` of each chunk, the last one flagged."""
    return [(epoch, np.asarray(c), k == len(chunks) - 1) for k, c in enumerate(chunks)]


@contextlib.contextmanager
def running(plan, filler=None, chunk_size=4):
    if filler is None:
        filler = ChunkFiller(DS, 0)
    layout = (filler.inner if isinstance(filler, Failing) else filler).layout
    pool = BufferPool(layout, chunk_size, slots=2, pin=False)
    stats = LoaderStats()
    producer = Producer(iter(plan), pool, filler, stats)
    try:
        with deadline(30):
            yield producer, pool, stats
    finally:
        producer.close()


def test_chunks_come_in_plan_order_with_their_epoch_size_and_flag():
    plan = _plan([3, 1, 2, 0], [7, 5], epoch=0) + _plan([9, 8, 6], epoch=1)
    with running(plan) as (producer, _, stats):
        got = []
        for _ in plan:
            chunk = producer.next_chunk()
            assert isinstance(chunk, LoadedChunk) and chunk.waited >= 0
            got.append((chunk.epoch, chunk.buffer.y[: chunk.size].tolist(), chunk.last))
            producer.release(chunk)

    assert got == [(0, [3, 1, 2, 0], False), (0, [7, 5], True), (1, [9, 8, 6], True)]
    assert (stats.chunks_loaded, stats.samples_loaded) == (3, 9)
    assert stats.bytes_loaded == 9 * (2 * 8 + 8)
    assert stats.load_seconds >= 0 and stats.wait_seconds >= 0
    assert stats.peak_buffer_bytes == 2 * 4 * (2 * 8 + 8)


def test_the_producer_loads_two_chunks_ahead_then_waits_for_a_buffer():
    plan = _plan([0], [1], [2], [3])
    with running(plan) as (producer, _, stats):
        wait_until(lambda: producer._queue.qsize() == 2)
        assert stats.chunks_loaded == 2 and producer._consumer_busy()

        producer.release(producer.next_chunk())  # a buffer comes back: one more loads
        wait_until(lambda: stats.chunks_loaded == 3)
        assert producer._thread.is_alive()


def test_the_loading_thread_is_named_and_ends_on_close():
    with running(_plan([0], [1], [2])) as (producer, _, _):
        thread = producer._thread
        assert thread.name == "torchloader-chunks" and thread.daemon
    assert not thread.is_alive()
    assert producer not in chunk_producer._running


def test_close_gives_the_queued_buffers_back():
    with running(_plan([0], [1], [2])) as (producer, pool, _):
        wait_until(lambda: producer._queue.qsize() == 2)
        producer.close()
        stop = threading.Event()
        stop.set()  # acquire returns None at once if no slot is free
        assert pool.acquire(stop) is not None and pool.acquire(stop) is not None


def test_a_fill_error_is_raised_in_the_consumer_and_its_buffer_given_back():
    with running(_plan([0, 1], [2, 3], [4]), filler=Failing(fail=1)) as (producer, pool, _):
        first = producer.next_chunk()
        with pytest.raises(OSError, match="^disk gone$"):
            producer.next_chunk()
        producer.release(first)
        stop = threading.Event()
        stop.set()
        assert pool.acquire(stop) is not None and pool.acquire(stop) is not None


def test_an_error_in_the_plan_is_raised_in_the_consumer():
    def plan():
        yield 0, np.array([1]), False
        raise ValueError("bad plan")

    with running(plan()) as (producer, _, _):
        producer.release(producer.next_chunk())
        with pytest.raises(ValueError, match="^bad plan$"):
            producer.next_chunk()


def test_asking_past_the_end_of_the_plan_fails_instead_of_waiting():
    with running(_plan([1, 2])) as (producer, _, _):
        producer.release(producer.next_chunk())
        with pytest.raises(RuntimeError, match="^the chunk loading thread ended unexpectedly$"):
            producer.next_chunk()


def test_the_exit_hook_stops_every_running_producer():
    with running(_plan([0], [1], [2], [3])) as (producer, _, _):
        wait_until(lambda: producer._queue.qsize() == 2)  # now waiting for a buffer
        chunk_producer._close_running()
        assert not producer._thread.is_alive()
        assert producer not in chunk_producer._running


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_script_that_exits_with_loaders_still_loading_ends_cleanly():
    """Daemon threads inside torch at interpreter exit abort the process; the hook stops them."""
    script = textwrap.dedent(
        """
        import torch
        from torchloader import ChunkedLoader, PreloadedDataset

        ds = PreloadedDataset(torch.arange(60).reshape(20, 3), torch.arange(20))
        loaders = [ChunkedLoader(ds, 4, chunk_size=5, seed=s) for s in range(4)]
        for loader in loaders:
            for batch in loader:  # an epoch: the producer goes on with the next one
                pass
        print("done")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")


# --- chunk_plan: what the producer walks ----------------------------------------------


@pytest.mark.parametrize(("num_replicas", "rank"), [(1, 0), (3, 2)])
@pytest.mark.parametrize(("n", "chunk_size"), [(1, 1), (10, 4), (23, 1), (23, 5), (23, 23)])
def test_the_plan_is_the_samplers_chunks_epoch_after_epoch(n, chunk_size, num_replicas, rank):
    sampler = ChunkedSampler(range(n), chunk_size=chunk_size, seed=3, num_replicas=num_replicas, rank=rank)
    plan = chunk_plan(sampler, 2, 0)
    for epoch in (2, 3):
        sampler.set_epoch(epoch)
        want = [c.tolist() for c in sampler.chunks()]
        got = [next(plan) for _ in want]
        assert [c.tolist() for _, c, _ in got] == want
        assert [e for e, _, _ in got] == [epoch] * len(want)
        assert [last for _, _, last in got] == [False] * (len(want) - 1) + [True]


@pytest.mark.parametrize("start", [0, 1, 4, 5, 9, 10])
def test_a_plan_from_a_resume_point_starts_inside_its_chunk(start):
    sampler = ChunkedSampler(range(10), chunk_size=4, seed=1)
    order = sampler.indices()
    plan = chunk_plan(sampler, 0, start)
    rest = []
    while True:
        epoch, chunk, last = next(plan)
        if epoch > 0:  # a resume at the very end has nothing left of epoch 0
            break
        rest += chunk.tolist()
        if last:
            epoch, chunk, last = next(plan)
            break
    assert rest == order[start:].tolist()
    sampler.set_epoch(1)
    assert (epoch, chunk.tolist()) == (1, sampler.chunks()[0].tolist())


def test_a_dataset_that_prefetches_is_given_the_next_two_chunks_and_a_failing_plan_still_serves_what_came_before():
    def plan():
        yield 0, np.array([0, 1]), False
        yield 0, np.array([2]), False
        yield 0, np.array([3, 4]), True
        raise ValueError("bad plan")

    seen = []
    with pytest.raises(ValueError, match="^bad plan$"):
        for (_, indices, _), coming in chunk_producer._ahead(plan()):
            seen.append((indices.tolist(), coming.tolist()))
    assert seen == [([0, 1], [2, 3, 4]), ([2], [3, 4]), ([3, 4], [])]
