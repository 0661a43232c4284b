"""Reading a ``torch.utils.data.Subset`` through to the dataset it wraps.

``random_split`` and many training scripts hand a loader a ``Subset``, whose
``subset[i]`` is ``dataset[indices[i]]``. Read sample by sample through it, a
``PathDataset`` cannot decode into a chunk's slots and a ``PackedDataset``
cannot fill a chunk with one gather (a subset of a PathDataset ran at 0.75x
the dataset itself, measured). So a loader maps a chunk's indices into the
wrapped dataset once and reads that.

Only plain subsets are looked through: a subclass that overrides
``__getitem__`` (a split with its own transform) is read as it is, through its
own ``__getitem__``. Indices that are not integers in range stop the look
through as well, and are read (and refused) by the subset itself, as before.
:func:`looked_through` is that rule, the one place it is kept: the dataset it
finds is the one read and the one whose ``on_error`` and ``errors`` apply. A
subset that is read as it is has no ``on_error`` of its own, so whatever its
``__getitem__`` raises (a bug in it, or a file of the dataset it wraps that
cannot be read) raises, and nothing is listed in the wrapped dataset's errors.
The map is taken when the loader is made (as worker processes take a copy of
the dataset): for new ``indices``, make a new loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Subset

from torchloader._core.indices import as_index_array

if TYPE_CHECKING:  # a type only: the protocols stand above the internals
    from torchloader.protocols import MapDataset

__all__ = ["ReadThrough", "looked_through"]


class ReadThrough:
    """The dataset to read for ``dataset`` (under its plain ``Subset`` wrappers) and
    the map from ``dataset``'s indices to that one's.

    Example:
        >>> from torch.utils.data import Subset
        >>> through = ReadThrough(Subset(Subset(list(range(10)), [9, 8, 7]), [2, 0]))
        >>> through.dataset, through.inner_indices(np.array([0, 1])).tolist()
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [7, 9])
    """

    def __init__(self, dataset: MapDataset) -> None:
        self.size = len(dataset)
        self.chain, self.dataset = looked_through(dataset)
        self.mapping: np.ndarray | None = None  # outer index -> index of dataset
        for subset in reversed(self.chain):  # innermost first
            own = as_index_array(subset.indices, len(subset.dataset))
            self.mapping = own if self.mapping is None else self.mapping[own]

    @property
    def note(self) -> str:
        """What sample numbers in an error refer to, when a subset is looked through."""
        if not self.chain:
            return ""
        return f" (sample numbers are those of the {type(self.dataset).__name__} the Subset wraps)"

    def inner_indices(self, indices: np.ndarray) -> np.ndarray:
        """``indices`` of the outer dataset as indices of :attr:`dataset`."""
        if self.mapping is None:
            return indices
        if len(indices) and (indices.min() < -self.size or indices.max() >= self.size):
            raise IndexError(f"index out of range for a subset of {self.size} samples")
        return self.mapping[indices]


def looked_through(dataset: MapDataset) -> tuple[list[Subset], Any]:
    """The plain ``Subset`` wrappers of ``dataset`` that a loader looks through
    (outermost first), and the dataset under them: the one it reads, and whose
    ``on_error`` and ``errors`` apply (``dataset`` itself when it is no plain subset)."""
    chain: list[Subset] = []
    while _plain_subset(dataset):
        chain.append(dataset)
        dataset = dataset.dataset
    return chain, dataset


def _plain_subset(dataset: MapDataset) -> bool:
    """A ``Subset`` whose items are exactly ``dataset[indices[i]]``, with integer indices."""
    if not isinstance(dataset, Subset):
        return False
    kind = type(dataset)
    for name in ("__getitem__", "__getitems__", "__len__"):
        if getattr(kind, name, None) is not getattr(Subset, name, None):
            return False
    try:
        as_index_array(dataset.indices, len(dataset.dataset))
    except (IndexError, TypeError, ValueError):
        return False
    return True
