"""Labels as one ``int64`` NumPy array, from integers or class names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["encode_labels"]


def encode_labels(
    labels: Sequence[Any] | np.ndarray | torch.Tensor, *, expected_len: int
) -> tuple[np.ndarray, list[str] | None]:
    """Return ``(int64 labels, classes)``; ``classes`` is None for integer labels.

    Class names become indices into their sorted set, as folder names do in
    ``ImageFolder``. Booleans and floats are refused rather than rounded, and a
    list mixing numbers and names (``[10, 2, "cat"]``) rather than turning the
    numbers into names.

    Example:
        >>> encode_labels(["dog", "cat", "dog"], expected_len=3)
        (array([1, 0, 1]), ['cat', 'dog'])
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.numpy(force=True)
    array = np.asarray(labels)
    if array.ndim != 1 or len(array) != expected_len:
        raise ValueError(f"labels must be one label per path: expected shape ({expected_len},), got {array.shape}")
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False), None
    if array.dtype.kind == "U" and not isinstance(labels, np.ndarray):
        _check_all_str(labels)  # np.asarray([10, 2, "cat"]) would make the ints names
    if array.dtype.kind in "US" or (array.dtype == object and _all_str(array)):
        classes, encoded = np.unique(array.astype(str), return_inverse=True)
        return encoded.astype(np.int64), [str(c) for c in classes]
    if expected_len == 0:
        return np.zeros(0, dtype=np.int64), None
    raise TypeError(
        f"labels must be integers or class names (got dtype {array.dtype}); "
        f"convert them with labels.astype(int) if they are whole numbers"
    )


def _all_str(array: np.ndarray) -> bool:
    return all(isinstance(v, str) for v in array)


def _check_all_str(labels: Sequence[Any]) -> None:
    for index, value in enumerate(labels):
        if not isinstance(value, str):
            raise TypeError(
                f"labels[{index}] is {value!r} ({type(value).__name__}), but other labels are "
                f"class names (str); give every label as an integer, or every label as a name"
            )
