"""A dataset of a user's own takes the fast paths NOTE [ how a chunk is filled ] lists.

Each dataset below offers one protocol of torchloader/protocols.py; the loader must
call what it offers, in the order the NOTE gives, and serve exactly the batches a
``DataLoader`` with the same ``ChunkedSampler`` serves.
"""

from __future__ import annotations

import threading

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
        self.lock = threading.Lock()  # two loading threads count at once

    def count(self, kind):
        with self.lock:
            self.calls[kind] += 1

    def __len__(self):
        return N

    def __getitem__(self, i):
        self.count("getitem")
        return self.x[i], self.y[i]


class Gathers(Plain):
    def gather(self, indices):
        self.count("gather")
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self.x[index], self.y[index]


class GathersInto(Gathers):
    writes = True  # False: declines every buffer, as for one laid out otherwise

    def gather_into(self, indices, out):
        self.count("gather_into")
        if not self.writes:
            return False
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        out[0].copy_(self.x[index])
        out[1].copy_(self.y[index])
        return True


class ReadsInto(Plain):
    def read_samples_into(self, indices, out, slots=None, *, skipped=None):
        self.count("read_samples_into")
        slots = range(len(indices)) if slots is None else slots
        for slot, i in zip(slots, indices):
            out[slot].copy_(self.x[i])
        return self.y[list(indices)].clone()


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def reference(ds):
    return list(DataLoader(ds, batch_size=BATCH, sampler=ChunkedSampler(ds, chunk_size=CHUNK, seed=5)))


def served(ds, num_workers=0, *, counted=None):
    """The batches of one pass; the calls of ``counted`` (default: ``ds``) are then those
    made when the last batch came (by then the loader may have loaded the next epoch's
    first chunk, no more)."""
    counted = ds if counted is None else counted
    loader = ChunkedLoader(ds, BATCH, chunk_size=CHUNK, seed=5, num_workers=num_workers, worker_type="thread")
    got, calls = [], None
    try:
        for x, y in loader:
            got.append((x.clone(), y.clone()))
            with counted.lock:
                calls = dict(counted.calls)
    finally:
        loader.close()
    counted.calls = calls
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


class AttributeNamedGather(Plain):
    gather = "not a method"


class GatherPropertyOfNone(Plain):
    @property
    def gather(self):
        return None  # a wrapper whose inner dataset has none


class GatherSwitchedOff(Gathers):
    def __init__(self):
        super().__init__()
        self.gather = None


@pytest.mark.parametrize("kind", [AttributeNamedGather, GatherPropertyOfNone, GatherSwitchedOff])
def test_a_gather_that_is_not_callable_is_no_offer(kind):
    ds = kind()
    got = served(ds)
    assert N + 1 <= ds.calls["getitem"] <= N + 1 + CHUNK  # read sample by sample, as before
    assert same(got, reference(kind()))


class Forwarding:
    """A wrapper that hands every attribute on to the dataset it wraps."""

    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        return self.inner[i]

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_wrapper_that_forwards_gather_gets_the_fast_path():
    inner = GathersInto()
    got = served(Forwarding(inner), counted=inner)
    assert inner.calls["gather_into"] in CHUNKS and inner.calls["getitem"] == 1
    assert same(got, reference(GathersInto()))


class OldContract(Plain):
    gather_into_supported = True

    def gather(self, indices, out=None):
        return self.x[list(indices)], self.y[list(indices)]

    def read_into(self, indices, out, slots=None):
        raise AssertionError("never called")


def test_the_methods_of_the_old_contract_are_named_in_a_warning():
    with pytest.warns(DeprecationWarning) as caught:
        got = served(OldContract())
    messages = [str(w.message) for w in caught]
    assert any("gather_into(indices, out) -> bool" in m for m in messages)
    assert any("read_into(indices, out, slots) is no longer used" in m for m in messages)
    assert same(got, reference(OldContract()))  # read through gather, as any gathering dataset
