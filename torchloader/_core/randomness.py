"""Per-sample randomness: each sample's augmentation a pure function of ``(seed, epoch, index)``.

# NOTE [ per-sample randomness ]
A random ``transform`` (torchvision's ``RandomResizedCrop``, a flip, timm's
RandAugment, albumentations) draws from the global torch, NumPy or Python
generators. Where those come from decides whether augmentations are fresh:
forked worker processes that start from one state draw the same numbers (every
second augmentation a copy, measured before this module), and a DataLoader's
per-worker seeds make augmentations change with the number of workers.

Here the loader says which epoch it is reading (:func:`reading_epoch`: a
thread-local ``(seed, epoch)``, set by ``ChunkedLoader`` around each chunk in
its threads and processes, and by ``ds.dataloader()``'s index arrays in its
workers), and a dataset calls its transform through :func:`seeded`, which seeds
the three global generators from ``(seed, epoch, index)`` first. The same
sample of the same epoch is augmented the same way with 0, 2 or 8 workers,
processes or threads; another epoch or sample draws anew.

Costs (measured on this 2-core machine, ``benchmarks/bench_randomness.py``):
seeding the three generators takes ~13 us per sample in a worker process. In
the main process (``num_workers=0``, thread workers) the generators belong to
the training loop too, so afterwards they are put back on a stream of their
own: torch's state is restored (3 us) and NumPy's and Python's are re-seeded
from a number drawn from them before (restoring NumPy's state costs ~170 us).
Transforms run one at a time under a lock there, so two loading threads never
share a seeded state; a training loop that draws from the global generators
*while* a loading thread transforms may still see one of its draws change.

Outside a loader that set the epoch (``ds[i]`` by hand, a plain
``DataLoader(ds, shuffle=True)``), transforms draw from the generators as they
are: fresh in each of torch's workers, as with any torch dataset.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import get_worker_info

from torchloader.errors import TransformError

__all__ = [
    "apply_transform",
    "draw_seed",
    "in_worker",
    "mark_worker",
    "reading_batch",
    "reading_epoch",
    "sample_seed",
    "seed_globals",
    "seed_worker",
    "seeded",
]

T = TypeVar("T")
_MASK = 2**64 - 1
_context = threading.local()  # .key: (seed, epoch) of what this thread reads now
_lock = threading.RLock()  # the global generators serve one transform at a time
_worker = False  # set in torchloader's worker processes: the generators are ours alone


def sample_seed(seed: int, epoch: int, index: int, stream: int = 0) -> int:
    """A 64-bit seed drawn from ``(seed, epoch, index, stream)`` (SplitMix64 steps).

    Example:
        >>> sample_seed(0, 0, 1) == sample_seed(0, 0, 1) != sample_seed(0, 1, 1)
        True
    """
    x = 0
    for value in (seed, epoch, index, stream):
        x = _mix((x + (int(value) & _MASK) + 0x9E3779B97F4A7C15) & _MASK)
    return x


def _mix(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def seed_globals(value: int) -> None:
    """Seed torch's CPU generator, NumPy's and Python's global generators from ``value``.

    ``torch.default_generator.manual_seed`` and not ``torch.manual_seed``: the
    latter also seeds every accelerator's generators (400 us here, and a CUDA
    call in a worker process).
    """
    torch.default_generator.manual_seed(value & _MASK)
    np.random.seed((value >> 32) & 0xFFFFFFFF)
    random.seed(value)


def mark_worker() -> None:
    """Say that this process is a loading worker: its generators are not restored."""
    global _worker
    _worker = True


def in_worker() -> bool:
    """Whether this process is a torchloader or torch DataLoader worker."""
    return _worker or get_worker_info() is not None


@contextlib.contextmanager
def reading_epoch(seed: int | None, epoch: int | None) -> Iterator[None]:
    """Within this block, this thread reads samples of ``epoch`` of a loader seeded ``seed``
    (None: not known; transforms draw from the generators as they are)."""
    previous = getattr(_context, "key", None)
    _context.key = None if seed is None or epoch is None else (int(seed), int(epoch))
    try:
        yield
    finally:
        _context.key = previous


def seeded(function: Callable[..., T], value: Any, index: int, *, stream: int = 0) -> T:
    """``function(value)`` with the global generators seeded from ``(seed, epoch, index)``
    of the epoch being read (see :func:`reading_epoch`); unseeded outside one.

    ``stream`` tells two transforms of one sample apart (``transform`` 0,
    ``target_transform`` 1), so that they do not draw the same numbers.
    """
    key = getattr(_context, "key", None)
    if key is None:
        return function(value)
    seed = sample_seed(key[0], key[1], index, stream)
    if in_worker():  # the generators are this process's alone: nothing to put back
        with _lock:
            seed_globals(seed)
            return function(value)
    with _lock:
        torch_state = torch.default_generator.get_state()
        carry_on = int(np.random.randint(2**32, dtype=np.uint64)) << 32 | random.getrandbits(32)
        seed_globals(seed)
        try:
            return function(value)
        finally:
            torch.default_generator.set_state(torch_state)
            np.random.seed(carry_on >> 32)
            random.seed(carry_on)


def draw_seed(index: int, stream: int) -> int:
    """A seed for sample ``index``'s own generator (a decode spec's crop): from
    ``(seed, epoch, index, stream)`` where the loader said which epoch this thread
    reads; else drawn from torch's global generator, as a torchvision transform
    would draw (fresh in each of torch's workers, and in each epoch of theirs).

    Example:
        >>> with reading_epoch(0, 3):
        ...     draw_seed(7, 3) == sample_seed(0, 3, 7, 3)
        True
    """
    key = getattr(_context, "key", None)
    if key is not None:
        return sample_seed(key[0], key[1], index, stream)
    return int(torch.randint(0, 2**63 - 1, ()).item())


def apply_transform(transform: Callable[..., T], value: Any, index: int, path: Any, *, target: bool = False) -> T:
    """``transform(value)`` for sample ``index`` (read from ``path``), :func:`seeded`; what
    it raises becomes a :class:`~torchloader.errors.TransformError` naming the transform,
    the sample and its input (never taken for an unreadable file).

    ``target``: it is the ``target_transform`` (its own random stream and name).
    """
    try:
        return seeded(transform, value, index, stream=int(target))
    except Exception as exc:
        what = "target_transform" if target else "transform"
        raise TransformError.of(transform, index, path, value, exc, what=what) from exc


def seed_worker(base: int, worker: int) -> None:
    """Give a worker process generators of its own (forked workers start as copies)."""
    seed_globals(sample_seed(base, -1, worker, 2))


def reading_batch(indices: Any) -> contextlib.AbstractContextManager[None]:
    """:func:`reading_epoch` of a batch's indices that carry a seed and an epoch
    (``ds.dataloader()``'s); a no-op for plain indices (a loader around may have set it)."""
    epoch = getattr(indices, "epoch", None)
    if epoch is None:
        return contextlib.nullcontext()
    return reading_epoch(getattr(indices, "seed", None), epoch)
