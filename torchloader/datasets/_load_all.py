"""Load every sample of a map-style dataset, in parallel, into contiguous tensors.

Workers of a ``torch.utils.data.DataLoader`` read samples in index order and
stack them in groups of ``batch_size``; the main process copies each group into
one preallocated tensor, so peak memory is the data set plus a few groups in
flight. Samples must share one shape and dtype; the first that differs is named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from torchloader._core.layout import SampleLayout
from torchloader._core.progress import progress_bar
from torchloader._core.samples import describe as _describe
from torchloader._core.samples import mismatch_message
from torchloader._core.samples import split_sample as _split
from torchloader._core.system import usable_cores
from torchloader.protocols import MapDataset

__all__ = ["default_num_workers", "load_all"]

Allocate = Callable[[int, torch.Tensor, "torch.Tensor | None"], tuple[torch.Tensor, "torch.Tensor | None"]]


class _Group(NamedTuple):
    start: int
    x: torch.Tensor
    y: torch.Tensor | None


class _Mismatch(NamedTuple):
    index: int
    what: str
    other: int
    other_what: str


class _Indexed(Dataset):
    """``(index, sample)`` so the group knows where it starts."""

    def __init__(self, dataset: MapDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.dataset[index]


def default_num_workers() -> int:
    """The cores this process may use, at most 8; 0 (load in-process) on one core."""
    cores = min(usable_cores(), 8)
    return 0 if cores <= 1 else cores


def _collate(items: list[tuple[int, Any]]) -> _Group | _Mismatch:
    pairs = [_split(sample) for _, sample in items]
    first = _describe(*pairs[0])
    for (index, _), pair in zip(items, pairs):
        if _describe(*pair) != first:
            return _Mismatch(index, _describe(*pair), items[0][0], first)
    # Stacked in the samples' memory order (channels-last for decoded images):
    # plain copies, and the main process's copy into the whole tensor is one too.
    group = SampleLayout.of(*pairs[0]).allocate(len(pairs), pin=False)
    for slot, (x, _) in enumerate(pairs):
        group.x[slot].copy_(x)
    y = None if group.y is None else torch.stack([y for _, y in pairs], out=group.y)
    return _Group(items[0][0], group.x, y)


def load_all(
    dataset: MapDataset,
    allocate: Allocate,
    *,
    num_workers: int | None = None,
    progress: bool = True,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read ``dataset[0..n-1]`` into the tensors ``allocate(n, x0, y0)`` returns.

    ``allocate`` gets the length and the first stacked group (for shapes and
    dtypes) and returns the output ``(x, y)`` tensors of ``n`` samples each.

    Raises:
        ValueError: two samples differ in shape or dtype (both indices named).
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset is empty; there is nothing to preload")
    workers = default_num_workers() if num_workers is None else num_workers
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    out: tuple[torch.Tensor, torch.Tensor | None] | None = None
    first = ""
    with progress_bar(total=n, unit="sample", desc="preloading", disable=not progress) as bar:
        for group in loader:
            if isinstance(group, _Mismatch):
                if first and group.other_what != first:  # the group's first is the odd one
                    _raise_mismatch(group.other, group.other_what, 0, first)
                _raise_mismatch(*group)
            x0 = group.x[0]
            y0 = None if group.y is None else group.y[0]
            if out is None:
                out = allocate(n, x0, y0)
                first = _describe(x0, y0)
            elif _describe(x0, y0) != first:
                _raise_mismatch(group.start, _describe(x0, y0), 0, first)
            stop = group.start + len(group.x)
            out[0][group.start : stop] = group.x
            if group.y is not None and out[1] is not None:
                out[1][group.start : stop] = group.y
            bar.update(len(group.x))
    assert out is not None
    return out


def _raise_mismatch(index: int, what: str, other: int, other_what: str) -> None:
    raise ValueError(mismatch_message(index, what, other, other_what))
