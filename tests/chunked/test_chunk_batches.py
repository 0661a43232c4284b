"""Tests for torchloader/chunked/_cutter.py: BatchCutter, chunks cut into batches.

Sample ``p`` of the order is ``x = p`` (and ``y = 1000 + p``), so a batch tells
which positions it holds. For any chunk sizes, batch size, samples left out and
``drop_last``, the batches must be the order cut into ``batch_size`` positions,
each without its left-out samples: nothing shifted, replaced or dropped.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchloader._core.layout import ChunkBuffer
from torchloader.chunked._cutter import BatchCutter
from torchloader.error_log import SkippedSample


def cut(chunk_sizes, batch_size, bad, drop_last=False, labels=True, capacity_extra=0):
    """Run the cutter over chunks of the given sizes (positions laid end to end)."""
    cutter = BatchCutter(batch_size)
    cuts, start = [], 0
    for size in chunk_sizes:
        capacity = size + capacity_extra  # a buffer may be larger than its chunk
        x = torch.full((capacity, 2), -1, dtype=torch.int64)
        x[:size] = torch.arange(start, start + size).unsqueeze(1)
        y = None
        if labels:
            y = torch.full((capacity,), -1, dtype=torch.int64)
            y[:size] = torch.arange(start, start + size) + 1000
        skipped = [(p - start, SkippedSample(p, None, "bad")) for p in sorted(bad) if start <= p < start + size]
        cuts += list(cutter.batches_of(ChunkBuffer(x, y), size, skipped))
        start += size
    if cutter.pending and not drop_last:
        cuts.append(cutter.finish())
    return [c.batch for c in cuts], [(c.positions, [r.index for r in c.skipped]) for c in cuts]


def positions(batch):
    x, y = batch if isinstance(batch, tuple) else (batch, None)
    assert torch.equal(x[:, 0], x[:, 1])
    if y is not None:
        assert torch.equal(y, x[:, 0] + 1000), "a label moved away from its sample"
    return x[:, 0].tolist()


def expected(total, batch_size, bad, drop_last):
    order = list(range(total))
    batches = [order[a : a + batch_size] for a in range(0, total, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return [[p for p in b if p not in bad] for b in batches], [(len(b), [p for p in b if p in bad]) for b in batches]


@settings(max_examples=300, deadline=None)
@given(
    chunk_sizes=st.lists(st.integers(1, 23), min_size=1, max_size=8),
    batch_size=st.integers(1, 11),
    bad_fraction=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
    drop_last=st.booleans(),
    labels=st.booleans(),
    capacity_extra=st.integers(0, 3),
)
def test_batches_are_the_order_cut_into_positions_without_the_left_out_samples(
    chunk_sizes, batch_size, bad_fraction, seed, drop_last, labels, capacity_extra
):
    total = sum(chunk_sizes)
    rng = np.random.default_rng(seed)
    bad = set(rng.choice(total, size=int(bad_fraction * total), replace=False).tolist())

    batches, sizes = cut(chunk_sizes, batch_size, bad, drop_last, labels, capacity_extra)

    want, want_sizes = expected(total, batch_size, bad, drop_last)
    assert [positions(b) for b in batches] == want
    assert sizes == want_sizes  # positions per batch (what a resume counts), the samples left out


def test_a_batch_inside_a_chunk_with_nothing_left_out_is_a_view_of_the_buffer():
    x = torch.arange(8).unsqueeze(1)
    skipped = [(5, SkippedSample(5, None, "bad"))]
    batches = [c.batch for c in BatchCutter(4).batches_of(ChunkBuffer(x, None), 8, skipped)]
    assert batches[0].data_ptr() == x.data_ptr()  # no copy
    assert batches[1].tolist() == [[4], [6], [7]]  # a copy, without slot 5


def test_a_batch_that_lost_samples_keeps_the_buffer_s_memory_order():
    base = torch.arange(6 * 2 * 2 * 3).reshape(6, 2, 2, 3)  # stored channels-last
    x = base.permute(0, 3, 1, 2)
    batch = next(BatchCutter(6).batches_of(ChunkBuffer(x, None), 6, [(1, SkippedSample(1, None, "b"))])).batch
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, x[[0, 2, 3, 4, 5]])


def test_a_straddling_batch_with_an_all_bad_piece_keeps_the_memory_order():
    def chunk(start):
        return ChunkBuffer((torch.arange(4 * 3) + 12 * start).reshape(4, 1, 1, 3).permute(0, 3, 1, 2), None)

    cutter = BatchCutter(6)
    first = list(cutter.batches_of(chunk(0), 4, [(k, SkippedSample(k, None, "b")) for k in range(4)]))
    second = list(cutter.batches_of(chunk(1), 4, []))
    assert first == [] and len(second) == 1
    batch = second[0].batch
    assert batch.shape == (2, 3, 1, 1) and batch.is_contiguous(memory_format=torch.channels_last)
