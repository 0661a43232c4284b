"""One intra-op thread for torch ops in a loading thread, leaving the cores to training.

# NOTE [ torch ops in a background thread ]
torch runs large tensor ops (``index_select``, ``copy_``, ``clone``) on an
OpenMP team of ``torch.get_num_threads()`` threads. Each thread that calls such
an op gets a team of its own, so once the training loop's thread has run one
parallel op, a loading thread's copies compete with it for the same cores:
measured here (2 cores), a ChunkedLoader filling 125 MiB chunks from a
PackedDataset took 60-100 ms per chunk instead of 15 ms, 4.5x slower, for as
long as the process lived. Chunk copies are bound by memory bandwidth, which
one thread already uses, so the loading threads run their torch ops on one
thread. OpenMP keeps that setting per thread: ``omp_set_num_threads(1)`` in the
loading thread leaves the training loop's ``torch.get_num_threads()`` as it
was. (``torch.set_num_threads`` would change the default of every later thread.)
Builds without OpenMP are left alone.
"""

from __future__ import annotations

import ctypes
import functools
import logging

import torch

__all__ = ["use_one_intraop_thread"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _omp_set_num_threads():
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:  # libgomp (or libiomp) is loaded with torch, into the global namespace
        return ctypes.CDLL(None).omp_set_num_threads
    except (AttributeError, OSError):
        log.debug("omp_set_num_threads not found; loading threads keep torch's default")
        return None


def use_one_intraop_thread() -> bool:
    """Make torch ops called from this thread run on one thread; True if it could.

    Call it at the start of a loading thread (see the NOTE in this module).

    Example:
        >>> import threading
        >>> t = threading.Thread(target=use_one_intraop_thread); t.start(); t.join()
    """
    setter = _omp_set_num_threads()
    if setter is None:
        return False
    torch.get_num_threads()  # torch's per-thread setup first, or it would undo ours
    setter(1)
    return True
