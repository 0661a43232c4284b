"""A dataset of a user's own takes the fast paths NOTE [ how a chunk is filled ] lists.

Each dataset below offers one protocol of torchloader/protocols.py; the loader must
call what it offers, in the order the NOTE gives, and serve exactly the batches a
``DataLoader`` with the same ``ChunkedSampler`` serves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from torchloader import ChunkedLoader, ChunkedSampler, SupportsGather, SupportsGatherInto, SupportsReadSamplesInto

N, CHUNK, BATCH = 24, 8, 4
CHUNKS = (N // CHUNK, N // CHUNK + 1)  # an epoch's, and maybe the next epoch's first, loaded ahead


class Plain:
    """Sample ``i`` is ``(full((2, 3), i), i)``; counts the calls of each kind."""

    def __init__(self):
        self.x = torch.arange(N, dtype=torch.float32).view(N, 1, 1).expand(N, 2, 3).contiguous()
        self.y = torch.arange(N)
        self.calls = {"getitem": 0, "gather": 0, "gather_into": 0, "read_samples_into": 0}

    def __len__(self):
        return N

    def __getitem__(self, i):
        self.calls["getitem"] += 1
        return self.x[i], self.y[i]


class Gathers(Plain):
    def gather(self, indices):
        self.calls["gather"] += 1
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self.x[index], self.y[index]


class GathersInto(Gathers):
    writes = True  # False: declines every buffer, as for one laid out otherwise

    def gather_into(self, indices, out):
        self.calls["gather_into"] += 1
        if not self.writes:
            return False
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        out[0].copy_(self.x[index])
        out[1].copy_(self.y[index])
        return True


class ReadsInto(Plain):
    def read_samples_into(self, indices, out, slots=None, *, skipped=None):
        self.calls["read_samples_into"] += 1
        slots = range(len(indices)) if slots is None else slots
        for slot, i in zip(slots, indices):
            out[slot].copy_(self.x[i])
        return self.y[list(indices)].clone()


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def reference(ds):
    return list(DataLoader(ds, batch_size=BATCH, sampler=ChunkedSampler(ds, chunk_size=CHUNK, seed=5)))


def served(ds, num_workers=0):
    loader = ChunkedLoader(ds, BATCH, chunk_size=CHUNK, seed=5, num_workers=num_workers, worker_type="thread")
    try:
        got = batches(loader)
    finally:
        loader.close()
    return got


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_the_protocols_are_what_the_classes_offer():
    assert isinstance(Gathers(), SupportsGather) and not isinstance(Gathers(), SupportsGatherInto)
    assert isinstance(GathersInto(), SupportsGatherInto)
    assert isinstance(ReadsInto(), SupportsReadSamplesInto) and not isinstance(Plain(), SupportsReadSamplesInto)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_plain_dataset_is_read_sample_by_sample(num_workers):
    ds = Plain()
    got = served(ds, num_workers)
    # every sample, sample 0 once more for the layout, and maybe some of the next epoch's first chunk
    assert N + 1 <= ds.calls["getitem"] <= N + 1 + CHUNK
    assert same(got, reference(Plain()))


def test_a_dataset_that_gathers_fills_a_chunk_with_one_gather():
    ds = Gathers()
    got = served(ds)
    assert ds.calls["gather"] in CHUNKS and ds.calls["getitem"] == 1  # the layout only
    assert same(got, reference(Gathers()))


def test_a_dataset_that_gathers_into_writes_the_buffer_and_never_gathers():
    ds = GathersInto()
    got = served(ds)
    assert ds.calls["gather_into"] in CHUNKS and ds.calls["gather"] == 0
    assert same(got, reference(GathersInto()))


def test_a_gather_into_that_declines_falls_back_to_gather():
    ds = GathersInto()
    ds.writes = False
    got = served(ds)
    assert ds.calls["gather_into"] == ds.calls["gather"] and ds.calls["gather"] in CHUNKS
    assert same(got, reference(GathersInto()))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_dataset_that_reads_samples_into_slots_is_called_with_runs(num_workers):
    ds = ReadsInto()
    got = served(ds, num_workers)
    assert ds.calls["read_samples_into"] >= N // CHUNK and ds.calls["getitem"] == 1
    assert same(got, reference(ReadsInto()))


def test_a_transform_turns_the_gather_off():
    ds = Gathers()
    ds.transform = lambda x: x  # ds[i] may differ from what gather returns: sample by sample
    got = served(ds)
    assert ds.calls["gather"] == 0 and N + 1 <= ds.calls["getitem"] <= N + 1 + CHUNK
    assert same(got, reference(Gathers()))
