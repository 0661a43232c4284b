"""Run a Keras-style ``Sequence`` unchanged inside a ``torch.utils.data.DataLoader``.

A Keras ``Sequence`` has ``__len__`` (batches per epoch), ``__getitem__(i)``
(batch ``i``) and optionally ``on_epoch_end()``, which usually reshuffles its
own index array with NumPy's global random generator. Under a DataLoader with
workers every worker holds its own copy of the sequence, so ``on_epoch_end`` must
run in every copy and give the same result in each.

# NOTE [ on_epoch_end in every process ]
The sampler yields ``(epoch, i)``. A copy of the sequence that sees a newer epoch
first calls ``on_epoch_end()`` once per missed epoch, each time with Python's
``random``, NumPy's global generator and torch's global generator seeded from
``(seed, epoch)`` and restored afterwards. Every process therefore computes the
same shuffle, whether the workers are persistent or re-created each epoch, and
the caller's global random state is left as it was. This is the one place the
library touches global random state, and only to make a user's code deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_convert

__all__ = ["SequenceDataset", "SequenceSampler", "from_sequence"]


class KerasSequence(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Any: ...


class SequenceDataset(Dataset):
    """A map-style dataset whose items are the batches of a Keras-style sequence.

    Items are requested as ``(epoch, i)`` by :class:`SequenceSampler`; NumPy
    arrays in the batch become tensors. ``ds[i]`` with a plain int serves batch
    ``i`` of the current epoch.
    """

    def __init__(self, sequence: KerasSequence, *, seed: int = 0) -> None:
        for name in ("__len__", "__getitem__"):
            if not hasattr(sequence, name):
                raise TypeError(
                    f"sequence must have {name} like a keras.utils.Sequence (got a {type(sequence).__name__})"
                )
        self.sequence = sequence
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.sequence)

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        self.advance_to(epoch)
        return default_convert(self.sequence[index])

    def advance_to(self, epoch: int) -> None:
        """Call ``on_epoch_end()`` once for every epoch between ours and ``epoch``."""
        if epoch < self.epoch:
            raise ValueError(
                f"epoch {epoch} was requested after epoch {self.epoch}; a sequence "
                f"cannot go back (build a new SequenceDataset to start over)"
            )
        hook = getattr(self.sequence, "on_epoch_end", None)
        while self.epoch < epoch:
            self.epoch += 1  # the hook that ends epoch e prepares epoch e + 1
            if hook is not None:
                with _seeded_global_rngs(self.seed, self.epoch):
                    hook()

    def __repr__(self) -> str:
        return f"SequenceDataset({type(self.sequence).__name__}, batches={len(self)})"


class SequenceSampler(Sampler[tuple[int, int]]):
    """Yield ``(epoch, i)`` for every batch; the epoch advances after each full pass."""

    def __init__(self, dataset: SequenceDataset) -> None:
        self.dataset = dataset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for i in range(len(self.dataset)):
            yield epoch, i
        self.epoch = epoch + 1


def from_sequence(sequence: KerasSequence, *, seed: int = 0, **kwargs: Any) -> DataLoader:
    """A ``DataLoader`` over a Keras-style ``Sequence``, with ``on_epoch_end`` between epochs.

    Args:
        sequence: an object with ``__len__`` (batches) and ``__getitem__(i)``
            (a batch, typically ``(x, y)`` NumPy arrays), optionally ``on_epoch_end``.
        seed: seeds the global random generators while ``on_epoch_end`` runs, so
            its shuffle is the same in the main process and in every worker.
        **kwargs: passed to ``DataLoader`` (``num_workers``, ``pin_memory``, ...).

    Example:
        >>> class Batches:  # a Keras-style Sequence of whole batches
        ...     def __len__(self): return 2
        ...     def __getitem__(self, i): return np.full((3, 2), i), np.arange(3)
        >>> [xb[0, 0].item() for xb, yb in from_sequence(Batches())]
        [0, 1]
    """
    for key in ("batch_size", "sampler", "batch_sampler", "shuffle"):
        if key in kwargs:
            raise TypeError(
                f"from_sequence() sets {key} itself: a Sequence makes its own batches "
                f"and its own order (shuffle in on_epoch_end)"
            )
    dataset = SequenceDataset(sequence, seed=seed)
    return DataLoader(dataset, batch_size=None, sampler=SequenceSampler(dataset), **kwargs)


class _seeded_global_rngs:
    """Seed ``random``, NumPy's and torch's global generators; restore them on exit."""

    def __init__(self, seed: int, epoch: int) -> None:
        self.seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])

    def __enter__(self) -> None:
        self._saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        random_state, numpy_state, torch_state = self._saved
        random.setstate(random_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
