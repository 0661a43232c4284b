"""How many bytes one sample takes in RAM."""

from __future__ import annotations

from collections.abc import Mapping, Sized
from typing import Any

import numpy as np
import torch

__all__ = ["nbytes", "sample_nbytes"]


def nbytes(value: Any) -> int:
    """Bytes held by the tensors and arrays in ``value`` (nested tuples, lists, dicts).

    Python numbers count as 8 bytes (an ``int64``/``float64`` once collated).

    Example:
        >>> nbytes((torch.zeros(3, 4, dtype=torch.uint8), 7))
        20
    """
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.numel()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return 8
    if isinstance(value, Mapping):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    raise TypeError(
        f"cannot tell the byte size of a {type(value).__name__}; samples should be "
        f"tensors or arrays (or tuples/dicts of them)"
    )


def sample_nbytes(dataset: Sized) -> int:
    """Bytes of one sample: ``dataset.sample_nbytes`` if defined, else ``nbytes(dataset[0])``."""
    known = getattr(dataset, "sample_nbytes", None)
    if known is not None:
        return int(known)
    return nbytes(dataset[0])  # type: ignore[index]
