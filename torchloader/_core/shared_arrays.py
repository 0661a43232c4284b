"""NumPy arrays that travel to spawned workers through shared memory, not through a pipe.

A spawned worker gets its dataset pickled down a pipe, and ``Process.start()``
returns only once the child has read it: a 30 MiB array of a million paths made
the 8 workers of a ``DataLoader`` start one after the other, 0.9 s each here
(``benchmarks/bench_spawn_startup.py``). torch's pickler for worker processes sends
a tensor as a handle to shared memory instead, so an array pickled as a tensor
costs a few hundred bytes per worker, and one copy into shared memory, once.
An ordinary ``pickle`` saves the bytes, as before.

Example:
    >>> import pickle
    >>> names = np.array([b"a.png", b"bb.png"])
    >>> state = share({"paths": names, "n": 2}, kept={})
    >>> pickle.loads(pickle.dumps(unshare(state)["paths"])).tolist() == names.tolist()
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["SharedArray", "share", "unshare"]

_BIG = 1 << 16  # bytes: smaller arrays fit the pipe's buffer and go as they are


class SharedArray:
    """A NumPy array carried as a uint8 tensor (its bytes), with its dtype and shape."""

    __slots__ = ("dtype", "shape", "tensor")

    def __init__(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        self.dtype, self.shape = array.dtype.str, array.shape
        self.tensor = torch.from_numpy(array.reshape(-1).view(np.uint8))

    def __getstate__(self) -> tuple[str, tuple[int, ...], torch.Tensor]:
        return self.dtype, self.shape, self.tensor

    def __setstate__(self, state: tuple[str, tuple[int, ...], torch.Tensor]) -> None:
        self.dtype, self.shape, self.tensor = state

    def array(self) -> np.ndarray:
        return self.tensor.numpy().view(np.dtype(self.dtype)).reshape(self.shape)


def share(state: dict[str, Any], kept: dict[str, tuple[np.ndarray, SharedArray]]) -> dict[str, Any]:
    """``state`` with its large NumPy arrays wrapped to pickle as tensors.

    ``kept`` (the owner's, not pickled) holds each wrapper for as long as its array is
    the owner's: the shared memory torch's pickler makes must outlive the pickling,
    until the spawned worker has it, and is made once for all workers.
    """
    out = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray) and value.nbytes >= _BIG:
            if key not in kept or kept[key][0] is not value:
                kept[key] = (value, SharedArray(value))
            value = kept[key][1]
        out[key] = value
    return out


def unshare(state: dict[str, Any]) -> dict[str, Any]:
    """The arrays :func:`share` wrapped, unwrapped."""
    return {k: v.array() if isinstance(v, SharedArray) else v for k, v in state.items()}
