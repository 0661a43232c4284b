"""What a reader returns becomes a tensor: :func:`to_tensor`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["to_tensor"]


def to_tensor(value: Any, *, what: str = "reader output") -> torch.Tensor:
    """Turn a tensor or NumPy array into a CPU tensor without copying when possible.

    Non-native byte order is converted (torch has no big-endian tensors); object
    arrays are refused because they can only hold pickled Python objects.

    Example:
        >>> to_tensor(np.arange(3, dtype=">i4")).tolist()
        [0, 1, 2]
    """
    if isinstance(value, torch.Tensor):
        return value
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{what} must be a torch.Tensor or numpy.ndarray (got {type(value).__name__})")
    if value.dtype.hasobject:
        raise TypeError(f"{what} is an object array; only numeric arrays can be loaded")
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    # torch warns on read-only memory and refuses negative strides: copy those.
    if not value.flags.writeable or any(stride < 0 for stride in value.strides):
        value = np.array(value, order="K")
    return torch.from_numpy(value)
