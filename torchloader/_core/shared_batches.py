"""Shared-memory batch buffers that a DataLoader worker reuses, lent to the main process.

NOTE [ reused shared batches ]

A ``DataLoader`` worker sends each batch to the main process through shared memory;
torch's collate allocates it there, fresh for every batch. Allocating and faulting
in 12.5 MB of fresh ``/dev/shm`` cost 6.4 ms a batch here, a quarter of what decoding
the batch's JPEGs costs. A worker of ours instead writes a batch into a *slot*, a
shared buffer it keeps, and lends it: the main process gets a plain tensor over the
slot whose last reference, when it goes, marks the slot free again (a flag in the
slot's last bytes), and the worker writes its next batch into a free slot.

Why a batch can never change under its reader: the worker takes only a slot whose
flag says free; the flag is set by the worker before it writes and cleared only by
the main process's :class:`_Lease`, which every tensor made from the batch keeps
alive (views, ``.numpy()`` arrays and storages hold the tensor's storage, which holds
the NumPy array over the slot, whose base is the lease). A pinned copy lets it go at
once. A batch you keep keeps its slot; the worker then takes another, up to
``MAX_SLOTS``, and past that allocates fresh shared memory as torch does. A slot taken
for a read that did not send it (an error, a batch cut down) is freed by
:func:`lending` when the read ends.

A slot's memory crosses to the main process once. Sending shared memory means sending
its file descriptor, which Python's resource sharer does over a new authenticated
socket connection each time: 1.5 ms a batch in the main process here (two storages,
``x`` and ``y``), more than gathering the batch from a warm pack. So a slot carries a
random token; its first trip carries the storage too, which the main process keeps
under the token (``_MAPPED``), and later trips carry the token alone. The worker says
in its next batch which slots it dropped (a slot of another size taking their place),
and the main process lets go of the slots of workers that have exited, looking when a
new slot arrives and at most twice a second as batches arrive (POSIX; elsewhere every
trip carries the storage). The slots of the last workers to exit stay mapped until the
next batch from any worker arrives: at most ``MAX_SLOTS`` batches a worker. (Not when a
batch is let go: a lease's ``__del__`` does one store, so that torch's SIGCHLD handler,
which raises wherever the main process is, cannot land in work of ours there.)

Example (in a DataLoader worker; elsewhere :func:`take` gives fresh storage)::

    with lending() as lent:
        storage = take(nbytes)            # write the batch into it
        batch = lent.send(batch)          # pickles as a lease on the slot
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from torchloader._core.shared_memory import new_shared

__all__ = ["MAX_SLOTS", "Lending", "lending", "take"]

MAX_SLOTS = 6  # per worker: prefetch_factor (2) batches in flight, one in use, one spare, ...
_TAIL = 64  # bytes after a slot's data: its in-use flag (an int32), 64-byte aligned


class _Slot:
    """A shared storage of ``nbytes`` data bytes and a flag: 1 while a batch in it is lent."""

    __slots__ = ("flag", "nbytes", "sent", "storage", "token")

    def __init__(self, nbytes: int) -> None:
        self.storage = new_shared(nbytes + _TAIL)
        self.nbytes = nbytes
        self.flag = _flag(self.storage, nbytes)
        self.token = secrets.token_hex(8)  # names the slot to the main process
        self.sent = False  # whether its storage went to the main process already


def _flag(storage: torch.UntypedStorage, nbytes: int) -> ctypes.c_int32:
    return ctypes.c_int32.from_address(storage.data_ptr() + nbytes)


class _Pool:
    """The slots of one worker process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.slots: list[_Slot] = []
        self.dropped: list[str] = []  # tokens of slots sent and dropped since the last send
        self.lock = threading.Lock()  # batches are pickled in the queue's feeder thread

    def take(self, nbytes: int) -> _Slot | None:
        """A free slot of ``nbytes``, marked taken; None where ``MAX_SLOTS`` are all lent."""
        for slot in self.slots:
            if slot.nbytes == nbytes and slot.flag.value == 0:
                slot.flag.value = 1
                return slot
        if len(self.slots) >= MAX_SLOTS:
            free = [slot for slot in self.slots if slot.flag.value == 0]
            if not free:
                return None
            self.slots.remove(free[0])  # a free slot of another size (the last, short batch)
            if free[0].sent:
                with self.lock:
                    self.dropped.append(free[0].token)
        slot = _Slot(nbytes)
        slot.flag.value = 1
        self.slots.append(slot)
        return slot


_POOL: _Pool | None = None
_LENDING: contextvars.ContextVar[Lending | None] = contextvars.ContextVar("torchloader_lending", default=None)


class Lending:
    """The slots taken for one batch read (see :func:`lending`)."""

    def __init__(self) -> None:
        self.taken: list[_Slot] = []

    def send(self, batch: Any) -> Any:
        """``batch`` (a tensor, or a tuple or list of them) with each tensor that is a
        whole slot of this read made a lease on it for the trip to the main process,
        and any other view of a slot copied out of it (the slot is freed at the end)."""
        if isinstance(batch, list):
            return [self.send(item) for item in batch]
        if isinstance(batch, tuple):
            items = [self.send(item) for item in batch]
            return type(batch)._make(items) if hasattr(batch, "_fields") else tuple(items)
        if not isinstance(batch, torch.Tensor) or isinstance(batch, _Lent):
            return batch
        for slot in self.taken:
            if batch.untyped_storage().data_ptr() == slot.storage.data_ptr():
                if not _fills(batch, slot):
                    return batch.clone()  # a part of a slot: the slot is freed after this read
                self.taken.remove(slot)
                lent = batch.as_subclass(_Lent)
                lent._slot = slot
                return lent
        return batch

    def release(self) -> None:
        """Free the slots taken and not sent."""
        for slot in self.taken:
            slot.flag.value = 0
        self.taken.clear()


def _fills(t: torch.Tensor, slot: _Slot) -> bool:
    """Whether ``t`` (a view of ``slot``) is its data: dense over its first ``nbytes``."""
    return (
        t.storage_offset() == 0
        and t.numel() * t.element_size() == slot.nbytes
        and t.permute(*sorted(range(t.ndim), key=lambda d: -t.stride(d))).is_contiguous()
    )


@contextlib.contextmanager
def lending(on: bool = True) -> Iterator[Lending]:
    """While a batch is read to be sent from a DataLoader worker: :func:`take` lends
    slots; those ``send`` did not send are freed at the end. Not ``on``: nothing is
    lent, and ``send`` hands the batch back as it is."""
    lent = Lending()
    if not on:
        yield lent
        return
    token = _LENDING.set(lent)
    try:
        yield lent
    finally:
        _LENDING.reset(token)
        lent.release()


def take(nbytes: int) -> torch.UntypedStorage:
    """Shared storage for ``nbytes`` of a batch: a slot inside :func:`lending` (in a
    worker process), fresh shared memory otherwise or where every slot is lent."""
    global _POOL
    lent = _LENDING.get()
    if lent is None or nbytes == 0:
        return new_shared(nbytes)
    if _POOL is None or _POOL.pid != os.getpid():  # a pool is never shared with a fork
        _POOL = _Pool()
    slot = _POOL.take(nbytes)
    if slot is None:
        return new_shared(nbytes)
    lent.taken.append(slot)
    return slot.storage


class _Lent(torch.Tensor):
    """A batch in a slot, on its way to the main process: it pickles as a :class:`_Lease`."""

    __torch_function__ = torch._C._disabled_torch_function_impl
    _slot: _Slot

    def __reduce_ex__(self, protocol: Any) -> Any:
        slot = self._slot
        storage = None if slot.sent and _CACHES else slot.storage
        slot.sent = True
        dropped: list[str] = []
        if _POOL is not None and _POOL.dropped:
            with _POOL.lock:
                dropped, _POOL.dropped = _POOL.dropped, []
        args = (slot.token, os.getpid(), storage, slot.nbytes, self.dtype, tuple(self.shape), self.stride(), dropped)
        return (_received, args)


class _Lease:
    """The main process's hold on a slot: NumPy's view of its bytes has it as base, and
    its end frees the slot for the worker's next batch."""

    def __init__(self, storage: torch.UntypedStorage, nbytes: int) -> None:
        self.storage = storage
        self.flag = _flag(storage, nbytes)  # its own: no module global is needed at exit
        self.__array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (storage.data_ptr(), False),
            "version": 3,
        }

    def __del__(self) -> None:
        self.flag.value = 0


# In the main process: the slots that reached it, token -> (the worker's pid, storage)
_MAPPED: dict[str, tuple[int, torch.UntypedStorage]] = {}
_MAPPED_LOCK = threading.Lock()  # (torch's pin-memory thread unpickles batches too)
_CACHES = os.name == "posix"  # where an exited worker can be told apart (os.kill(pid, 0))


def _received(
    token: str,
    pid: int,
    storage: torch.UntypedStorage | None,
    nbytes: int,
    dtype: torch.dtype,
    shape: tuple,
    stride: tuple,
    dropped: list[str],
) -> Any:
    """In the main process: a plain tensor over the slot, holding its lease."""
    with _MAPPED_LOCK:
        for gone in dropped:
            _MAPPED.pop(gone, None)
        if storage is None:
            try:
                storage = _MAPPED[token][1]
            except KeyError:
                raise RuntimeError(
                    f"a DataLoader worker (pid {pid}) sent a batch in a shared slot this process no longer "
                    f"maps; this is a torchloader bug, please report it"
                ) from None
        elif _CACHES:
            _MAPPED[token] = (pid, storage)
            _SWEPT[0] = 0.0  # a new slot: look for exited workers now
        if _MAPPED and time.monotonic() - _SWEPT[0] >= 0.5:
            _SWEPT[0] = time.monotonic()
            _forget_exited(keep=pid)
    data = torch.from_numpy(np.asarray(_Lease(storage, nbytes)))
    return data.view(dtype).as_strided(shape, stride)


_SWEPT = [0.0]  # when _received last looked for exited workers


def _forget_exited(keep: int | None) -> None:
    """Let go of the slots of workers that have exited, but ``keep``'s (under ``_MAPPED_LOCK``)."""
    for pid in {pid for pid, _ in _MAPPED.values()} - {keep}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            for token in [t for t, (p, _) in _MAPPED.items() if p == pid]:
                del _MAPPED[token]
        except PermissionError:  # alive, as another user: not our worker, but not gone
            pass
