"""A worker's batch slots: lent to the main process, taken again only once free.

These run the lending in one process: what a worker does (``take``, ``send``) and what
unpickling does in the main process (the reducer of the tensor ``send`` makes). The
DataLoader tests in ``tests/datasets/test_plain_dataloader.py`` run it across processes.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest
import torch

from torchloader._core import shared_batches
from torchloader._core.shared_batches import MAX_SLOTS, lending, take


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch):
    monkeypatch.setattr(shared_batches, "_POOL", None)
    monkeypatch.setattr(shared_batches, "_MAPPED", {})


def batch_in(storage, shape=(4, 3), dtype=torch.float32):
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def received(sent):
    """What the main process unpickles from ``sent``."""
    rebuild, args = sent.__reduce_ex__(2)
    return rebuild(*args)


def flag(storage, nbytes):
    return shared_batches._flag(storage, nbytes).value


def test_a_lent_batch_arrives_as_a_plain_tensor_with_its_values_and_layout():
    with lending() as lent:
        storage = take(4 * 3 * 4)
        x = batch_in(storage).t().contiguous().t()  # a copy: not the slot
        y = batch_in(storage)
        y.copy_(torch.arange(12.0).view(4, 3))
        sent = lent.send((y, x))
    got_y, got_x = sent
    assert got_x is x  # not a slot: sent as it is
    out = received(got_y)
    assert type(out) is torch.Tensor and out.tolist() == torch.arange(12.0).view(4, 3).tolist()
    assert out.stride() == (3, 1) and out.dtype == torch.float32


def test_a_slot_is_taken_again_only_after_every_view_of_its_batch_is_gone():
    nbytes = 4 * 3 * 4
    with lending() as lent:
        first = take(nbytes)
        out = received(lent.send(batch_in(first)))
    view = out[1:].numpy()  # a NumPy view keeps the batch's lease too
    del out
    gc.collect()
    assert flag(first, nbytes) == 1
    with lending():
        assert take(nbytes).data_ptr() != first.data_ptr()  # still lent: another slot
    del view
    assert flag(first, nbytes) == 0
    with lending():
        assert take(nbytes).data_ptr() == first.data_ptr()  # free again: the same memory


def test_slots_that_were_not_sent_are_freed_when_the_read_ends():
    nbytes = 64
    with pytest.raises(ValueError), lending():
        failed = take(nbytes)
        raise ValueError("a file could not be read")
    assert flag(failed, nbytes) == 0
    with lending() as lent:
        storage = take(nbytes)
        part = lent.send(batch_in(storage, (4, 4))[:2])  # a batch cut down: copied out
    assert part.untyped_storage().data_ptr() != storage.data_ptr() and flag(storage, nbytes) == 0


def test_past_max_slots_lent_batches_get_fresh_shared_memory():
    nbytes = 32
    kept = []
    for _ in range(MAX_SLOTS):
        with lending() as lent:
            kept.append(received(lent.send(batch_in(take(nbytes), (8,)))))
    assert len(shared_batches._POOL.slots) == MAX_SLOTS
    with lending():
        fresh = take(nbytes)
    assert fresh.is_shared() and fresh.data_ptr() not in {s.storage.data_ptr() for s in shared_batches._POOL.slots}
    kept.clear()
    with lending():
        assert take(nbytes).data_ptr() in {s.storage.data_ptr() for s in shared_batches._POOL.slots}


def test_outside_a_read_nothing_is_lent():
    storage = take(16)
    assert storage.is_shared() and shared_batches._POOL is None
    with lending(False) as lent:
        x = batch_in(take(16), (4,))
        assert lent.send(x) is x and shared_batches._POOL is None


def trip(nbytes=16, shape=(4,)):
    """One batch sent from a slot: (its storage, what went over, the tensor received)."""
    with lending() as lent:
        storage = take(nbytes)
        batch = batch_in(storage, shape)
        batch.copy_(torch.arange(float(shape[0])))
        rebuild, args = lent.send(batch).__reduce_ex__(2)
    return storage, args, rebuild(*args)


@pytest.mark.skipif(os.name != "posix", reason="slots are mapped once where exited workers can be told apart")
def test_a_slots_memory_crosses_once_and_later_batches_name_it():
    storage, args, first = trip()
    token, storage_sent = args[0], args[2]
    assert storage_sent is storage and token in shared_batches._MAPPED
    del first  # the slot is free again: the next batch goes into it
    again, args, second = trip()
    assert again.data_ptr() == storage.data_ptr() and args[0] == token and args[2] is None  # the token alone
    assert second.tolist() == [0.0, 1.0, 2.0, 3.0] and second.data_ptr() == storage.data_ptr()


@pytest.mark.skipif(os.name != "posix", reason="slots are mapped once where exited workers can be told apart")
def test_a_dropped_slot_is_named_in_the_next_batch_and_forgotten():
    kept = []
    for _ in range(MAX_SLOTS):  # every slot sent once, then all free
        kept.append(trip()[2])
    tokens = set(shared_batches._MAPPED)
    kept.clear()
    _, args, _ = trip(nbytes=8, shape=(2,))  # another size: a free slot makes room for it
    dropped = args[7]
    assert len(dropped) == 1 and dropped[0] in tokens and dropped[0] not in shared_batches._MAPPED
    assert len(shared_batches._MAPPED) == MAX_SLOTS


@pytest.mark.skipif(os.name != "posix", reason="slots are mapped once where exited workers can be told apart")
def test_the_slots_of_an_exited_worker_are_let_go():
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    shared_batches._MAPPED["gone"] = (exited.pid, torch.UntypedStorage(8))
    kept = trip()[2]  # a new slot arrives: exited workers' slots are looked for
    assert "gone" not in shared_batches._MAPPED and len(shared_batches._MAPPED) == 1
    shared_batches._MAPPED["gone"] = (exited.pid, torch.UntypedStorage(8))
    del kept  # the slot is free again: its next batch names it
    shared_batches._SWEPT[0] = 0.0
    again = trip()  # a batch arrives: looked for too (at most twice a second)
    assert again[1][2] is None and "gone" not in shared_batches._MAPPED and len(shared_batches._MAPPED) == 1


def test_a_batch_naming_a_slot_this_process_does_not_map_is_refused():
    with pytest.raises(RuntimeError, match="no longer maps"):
        shared_batches._received("unknown", 1, None, 16, torch.float32, (4,), (1,), [])
