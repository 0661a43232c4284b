"""A batch read in one go, handed to a plain ``DataLoader`` as its rows, and put back whole.

A ``DataLoader(ds, batch_size=...)`` asks ``ds.__getitems__(indices)`` for a list of
samples and stacks them with its ``collate_fn``. Our datasets read the batch in one go
and answer with its rows: :class:`BatchRow` views, which are tensors to everyone (a
``collate_fn`` of your own gets tensors, as ``ds[i]`` gives them). torch's
``default_collate`` looks a row's type up in ``default_collate_fn_map`` first, as
torch's documentation shows for extending it; there a complete batch in its own
order, laid out as ``torch.stack`` would lay it out (contiguous), is handed on as it
is, without the copy. Anything else (rows of two batches, a reordered or partial
list, a channels-last batch) is stacked as ``default_collate`` stacks tensors, so the
DataLoader's batches are exactly what they were.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data._utils.collate import collate_tensor_fn, default_collate_fn_map

__all__ = ["BatchRow", "for_collate", "in_shared_memory", "rows"]

_FOR_COLLATE = contextvars.ContextVar("torchloader_for_collate", default=False)


@contextlib.contextmanager
def for_collate() -> Iterator[None]:
    """While a batch is read to be handed to a ``collate_fn`` as rows."""
    token = _FOR_COLLATE.set(True)
    try:
        yield
    finally:
        _FOR_COLLATE.reset(token)


def in_shared_memory(contiguous: bool) -> bool:
    """Whether a batch read now belongs in shared memory: in a DataLoader worker, where it
    goes to the main process as it is; not where the collate will stack it into shared
    memory anyway (rows of a batch that is not contiguous, e.g. channels-last images)."""
    from torch.utils.data import get_worker_info

    return get_worker_info() is not None and (contiguous or not _FOR_COLLATE.get())


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
    """``default_collate`` of rows: the whole batch where it is the stack of them."""
    whole = batch[0]._batch  # type: ignore[attr-defined]
    if len(batch) == len(whole) and whole.is_contiguous() and _in_order(batch, whole):
        return whole
    plain = [row.as_subclass(torch.Tensor) if isinstance(row, BatchRow) else row for row in batch]
    return collate_tensor_fn(plain, collate_fn_map=collate_fn_map)


def _in_order(batch: list[torch.Tensor], whole: torch.Tensor) -> bool:
    """Whether ``batch`` is the rows of ``whole``, each in its place."""
    base, step = whole.data_ptr(), whole.stride(0) * whole.element_size()
    return all(row.data_ptr() == base + k * step for k, row in enumerate(batch))


default_collate_fn_map[BatchRow] = collate_rows
