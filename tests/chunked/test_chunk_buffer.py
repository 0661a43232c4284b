"""Tests for torchloader/_core/layout.py: sample layouts, chunk buffers and their pool."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from torchloader._core.layout import ChunkBuffer, SampleLayout, rows_of
from torchloader.chunked._buffers import BufferPool


def _hwc_image(height=4, width=5, channels=3):
    """A ``C x H x W`` view of ``H x W x C`` pixels, as image readers return."""
    pixels = torch.arange(height * width * channels, dtype=torch.uint8)
    return pixels.reshape(height, width, channels).permute(2, 0, 1)


LAYOUT = SampleLayout.of(torch.zeros(2, 3), torch.tensor(1))  # 24 + 8 bytes


def _pool(chunk_size=4, slots=2, layout=LAYOUT, shared=False):
    return BufferPool(layout, chunk_size, slots=slots, pin=False, shared=shared)


# --- SampleLayout -----------------------------------------------------------------


def test_layout_of_a_contiguous_sample_and_a_label():
    layout = SampleLayout.of(torch.zeros(3, 4, 5, dtype=torch.float16), torch.tensor(7))

    assert layout == SampleLayout((3, 4, 5), torch.float16, (0, 1, 2), (), torch.int64)
    assert layout.nbytes == 3 * 4 * 5 * 2 + 8


def test_layout_of_a_channels_last_view_records_its_memory_order():
    layout = SampleLayout.of(_hwc_image(), None)

    assert layout.x_shape == (3, 4, 5)
    assert layout.x_order == (1, 2, 0)  # H, W, then C innermost
    assert (layout.y_shape, layout.y_dtype) == (None, None)
    assert layout.nbytes == 60


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("sample", ["contiguous", "channels_last"])
def test_allocate_gives_slots_with_the_sample_strides(sample, shared):
    x = _hwc_image() if sample == "channels_last" else torch.arange(60, dtype=torch.uint8).reshape(3, 4, 5)
    y = torch.tensor(5, dtype=torch.int16)
    layout = SampleLayout.of(x, y)

    buffer = layout.allocate(6, pin=False, shared=shared)

    assert buffer.x.shape == (6, 3, 4, 5) and buffer.x.dtype == torch.uint8
    assert buffer.y.shape == (6,) and buffer.y.dtype == torch.int16
    assert buffer.x[2].stride() == x.stride()  # filling a slot is a plain copy
    assert buffer.x.is_shared() == shared and buffer.y.is_shared() == shared
    buffer.x[2].copy_(x)
    buffer.y[2].copy_(y)
    assert torch.equal(buffer.x[2], x) and buffer.y[2] == 5
    assert len(buffer) == 6
    assert buffer.nbytes == 6 * layout.nbytes


def test_a_buffer_without_labels_has_y_none():
    buffer = SampleLayout.of(torch.zeros(2), None).allocate(3, pin=False)
    assert buffer.y is None and buffer.nbytes == 3 * 8


# --- ChunkBuffer.in_use: the NOTE [ reusing a chunk buffer ] ----------------------


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("what", ["x", "y"])
def test_a_buffer_is_in_use_while_a_view_of_it_lives(what, shared):
    buffer = SampleLayout.of(_hwc_image(), torch.tensor(1)).allocate(4, pin=False, shared=shared)
    assert not buffer.in_use()

    view = getattr(buffer, what)[1:3]
    assert buffer.in_use()

    del view
    assert not buffer.in_use()


def test_without_torchs_use_count_a_buffer_is_never_reused(monkeypatch):
    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    assert LAYOUT.allocate(2, pin=False).in_use()


def test_buffers_compare_by_identity():
    a, b = LAYOUT.allocate(2, pin=False), LAYOUT.allocate(2, pin=False)
    assert a == a and a != b
    assert [a, b].index(b) == 1


# --- BufferPool ---------------------------------------------------------------------


def test_the_pool_hands_out_at_most_its_slots():
    pool, stop = _pool(slots=2), threading.Event()
    first, second = pool.acquire(stop), pool.acquire(stop)
    assert first is not None and second is not None and first is not second

    stop.set()
    assert pool.acquire(stop) is None  # a third waits for a slot until stopped


def test_a_released_buffer_without_views_is_reused():
    pool, stop = _pool(), threading.Event()
    first = pool.acquire(stop)
    second = pool.acquire(stop)
    pool.release(first)

    assert pool.acquire(stop) is first
    assert pool.held() == [first, second]
    assert pool.peak_bytes == 2 * 4 * LAYOUT.nbytes


def test_a_buffer_with_live_views_is_replaced_and_its_data_kept():
    pool, stop = _pool(), threading.Event()
    first = pool.acquire(stop)
    second = pool.acquire(stop)
    first.x.fill_(1)
    kept = first.x[:2]  # a batch the consumer keeps
    pool.release(first)

    third = pool.acquire(stop, patience=0)
    third.x.fill_(3)

    assert third is not first and third is not second
    assert bool((kept == 1).all())
    assert pool.held() == [second, third]
    assert pool.peak_bytes == 3 * 4 * LAYOUT.nbytes  # above the budget while views live


def test_a_replaced_buffer_stops_counting_once_its_views_die():
    pool, stop = _pool(slots=1), threading.Event()
    first = pool.acquire(stop)
    kept = first.x[:1]
    pool.release(first)
    second = pool.acquire(stop, patience=0)
    del kept
    pool.release(second)
    pool.release(pool.acquire(stop))  # second again, nothing allocated

    # first is gone: a new allocation counts second and itself only
    view = second.x[:1]
    third = pool.acquire(stop, patience=0)
    del view

    assert third is not second
    assert pool.peak_bytes == 2 * 4 * LAYOUT.nbytes


def test_a_buffer_without_views_is_preferred_to_one_returned_earlier():
    pool, stop = _pool(), threading.Event()
    first, second = pool.acquire(stop), pool.acquire(stop)
    view = first.x[:1]  # e.g. the loop variable still holds the last batch of first
    pool.release(first)
    pool.release(second)

    assert pool.acquire(stop, patience=0) is second
    del view
    assert pool.acquire(stop) is first


def test_of_two_unused_buffers_the_one_returned_first_is_taken():
    pool, stop = _pool(), threading.Event()
    first, second = pool.acquire(stop), pool.acquire(stop)
    pool.release(second)
    pool.release(first)
    assert pool.acquire(stop) is second


def test_the_pool_waits_for_views_while_the_consumer_is_busy():
    """A view held while ``busy()`` is true is not taken as kept: the buffer is reused."""
    pool, stop = _pool(slots=1), threading.Event()
    first = pool.acquire(stop)
    views = [first.x[:1]]  # the loop variable, through an evaluation after the epoch
    pool.release(first)
    calls = []

    def busy():
        calls.append(1)
        if len(calls) == 5:  # the consumer moves on and drops its batch
            views.clear()
        return True

    assert pool.acquire(stop, patience=0, busy=busy) is first
    assert len(calls) == 5
    assert pool.peak_bytes == 4 * LAYOUT.nbytes


def test_once_the_consumer_is_not_busy_the_patience_runs_out():
    pool, stop = _pool(slots=1), threading.Event()
    first = pool.acquire(stop)
    kept = first.x[:1]
    pool.release(first)
    answers = iter([True, True, True])

    buffer = pool.acquire(stop, patience=0, busy=lambda: next(answers, False))

    assert buffer is not first and kept.shape == (1, 2, 3)


def test_stop_ends_the_wait_for_views_and_gives_the_slot_back():
    pool, stop = _pool(slots=1), threading.Event()
    first = pool.acquire(stop)
    view = first.x[:1]
    pool.release(first)

    def busy():
        stop.set()
        return True

    assert pool.acquire(stop, busy=busy) is None
    del view
    assert pool.acquire(threading.Event()) is first  # the slot and the buffer came back


def test_shared_pool_buffers_live_in_shared_memory():
    buffer = _pool(shared=True).acquire(threading.Event())
    assert isinstance(buffer, ChunkBuffer)
    assert buffer.x.is_shared() and buffer.y.is_shared()


@pytest.mark.parametrize("rows", [[], [0], [1, 2, 3], [0, 2, 5, 6, 7], list(range(8)), [7]])
def test_rows_of_is_a_copy_of_the_rows_in_the_same_memory_order(rows):
    x = torch.arange(8 * 2 * 2 * 3, dtype=torch.uint8).reshape(8, 2, 2, 3).permute(0, 3, 1, 2)
    got = rows_of(x, np.array(rows, dtype=np.int64))
    assert torch.equal(got, x[rows]) and got.shape == (len(rows), 3, 2, 2)
    assert got.is_contiguous(memory_format=torch.channels_last) or len(rows) <= 1
    if len(rows):
        got.fill_(0)
        assert x.any()  # a copy: x is untouched
