"""A batch read in one go, handed to a plain ``DataLoader`` whole or as its rows.

A ``DataLoader(ds, batch_size=...)`` asks ``ds.__getitems__(indices)`` for a list of
samples and stacks them with its ``collate_fn``. Our datasets read the batch in one go.
Where torch's own fetch is about to hand the list to ``default_collate`` (see
``_dataloader.getitems``), the list is one :class:`WholeItem`, which ``default_collate``
looks up in ``default_collate_fn_map`` (as torch's documentation shows for extending
it) and hands on as the batch: no row is made, nothing is stacked. For any other
``collate_fn`` the list is the batch's rows: :class:`BatchRow` views, which are tensors
to everyone (a ``collate_fn`` of your own gets tensors, as ``ds[i]`` gives them);
``default_collate`` still hands on a complete batch of them in its own order as it is,
and stacks anything else (rows of two batches, a reordered or partial list) as it
stacks tensors.

The batch handed on is ``ds[indices]``, in its memory order: images decoded
channels-last stay channels-last (``N x C x H x W`` over ``N x H x W x C`` memory), as
``ds.dataloader()`` and ``ChunkedLoader`` hand them out.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data._utils.collate import collate_tensor_fn, default_collate_fn_map

__all__ = ["BatchRow", "WholeItem", "for_collate", "in_shared_memory", "rows"]

# None: not read for a collate; "rows": read to be handed over as rows; "whole": as one item
_FOR_COLLATE: contextvars.ContextVar[str | None] = contextvars.ContextVar("torchloader_for_collate", default=None)


@contextlib.contextmanager
def for_collate(whole: bool) -> Iterator[None]:
    """While a batch is read to be handed to a ``collate_fn``: as one :class:`WholeItem`
    (``whole``), else as its rows."""
    token = _FOR_COLLATE.set("whole" if whole else "rows")
    try:
        yield
    finally:
        _FOR_COLLATE.reset(token)


def in_shared_memory(contiguous: bool) -> bool:
    """Whether a batch read now belongs in shared memory: in a DataLoader worker, where it
    goes to the main process as it is; not where a ``collate_fn`` of your own will stack
    its rows into shared memory anyway (rows of a batch that is not contiguous)."""
    from torch.utils.data import get_worker_info

    return get_worker_info() is not None and (contiguous or _FOR_COLLATE.get() != "rows")


class WholeItem:
    """The one item of the list handed to ``default_collate``: the batch, which it hands on
    as ``default_collate`` gives a batch (``[x, y]`` for ``(x, y)`` samples)."""

    __slots__ = ("batch",)

    def __init__(self, batch: Any) -> None:
        self.batch = batch


def collate_whole(batch: list[WholeItem], *, collate_fn_map: Any = None) -> Any:
    """``default_collate`` of ``[WholeItem]``: its batch."""
    (item,) = batch
    return list(item.batch) if isinstance(item.batch, tuple) else item.batch


class BatchRow(torch.Tensor):
    """Row 0 of a batch: a tensor (operations on it give plain tensors) that also knows
    the batch it is a view of. The other rows are plain views: ``collate`` looks at the
    type of the first item only, and a subclass view costs microseconds per row."""

    __torch_function__ = torch._C._disabled_torch_function_impl
    _batch: torch.Tensor

    def __reduce_ex__(self, protocol: Any) -> Any:  # pickled as the plain row, not the batch
        return self.as_subclass(torch.Tensor).__reduce_ex__(protocol)


def rows(batch: torch.Tensor) -> list[torch.Tensor]:
    """The rows of ``batch`` as views (no copy), the first a :class:`BatchRow`."""
    out = list(batch.unbind(0))
    if out:
        first = out[0].as_subclass(BatchRow)
        first._batch = batch
        out[0] = first
    return out


def collate_rows(batch: list[torch.Tensor], *, collate_fn_map: Any = None) -> torch.Tensor:
    """``default_collate`` of rows: the whole batch where they are all of it, in order."""
    whole = batch[0]._batch  # type: ignore[attr-defined]
    if len(batch) == len(whole) and _in_order(batch, whole):
        return whole
    plain = [row.as_subclass(torch.Tensor) if isinstance(row, BatchRow) else row for row in batch]
    return collate_tensor_fn(plain, collate_fn_map=collate_fn_map)


def _in_order(batch: list[torch.Tensor], whole: torch.Tensor) -> bool:
    """Whether ``batch`` is the rows of ``whole``, each in its place and as it was made
    (a row cropped, cast or viewed otherwise by a ``collate_fn`` is not)."""
    base, step = whole.data_ptr(), whole.stride(0) * whole.element_size()
    shape, strides, dtype = whole.shape[1:], whole.stride()[1:], whole.dtype
    return all(
        row.data_ptr() == base + k * step and row.dtype == dtype and row.shape == shape and row.stride() == strides
        for k, row in enumerate(batch)
    )


default_collate_fn_map[BatchRow] = collate_rows
default_collate_fn_map[WholeItem] = collate_whole
