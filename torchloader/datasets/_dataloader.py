"""``ds.dataloader()``: a torch ``DataLoader`` that hands a dataset whole batches.

The batch sampler yields :class:`WholeBatch` index arrays, the dataset builds each
batch as ``dataset[indices]`` does (``__getitems__``), and the DataLoader's per-sample
fetch and collate are skipped. :class:`BatchLoader` also brings back from the
workers the samples ``on_error="skip"`` left out.
"""

from __future__ import annotations

import gc
import multiprocessing.connection
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, default_collate, get_worker_info
from torch.utils.data._utils import fetch as _fetch

from torchloader._core.randomness import mark_worker
from torchloader._core.samples import MixedShapes
from torchloader._core.shared_batches import lending
from torchloader._core.worker_process import reset_signal_handlers
from torchloader.datasets._rows import WholeItem, for_collate, rows
from torchloader.datasets.batching import IndexBatchSampler, shuffled_batches
from torchloader.error_log import error_policy
from torchloader.protocols import MapDataset, offers, transforms_samples

__all__ = [
    "BatchLoader",
    "FreezeGC",
    "WholeBatchWithErrors",
    "WholeBatch",
    "WholeBatchLoader",
    "batch_dataloader",
    "getitems",
    "only_item",
]


def batch_dataloader(
    dataset: MapDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    drop_last: bool,
    reports_skipped: bool = False,
    **kwargs: Any,
) -> DataLoader:
    """A ``DataLoader`` that hands ``dataset`` one index array per batch.

    ``DataLoader(dataset, batch_sampler=..., collate_fn=...)`` whose batch sampler
    yields :class:`WholeBatch` index arrays: the dataset's ``__getitems__`` builds
    each batch as ``dataset[indices]`` does, and the DataLoader's per-sample fetch
    and collate are skipped. Other keyword arguments (``num_workers``,
    ``pin_memory``, ...) pass through. ``reports_skipped``: batches are asked for as
    :class:`WholeBatchWithErrors`, and the samples ``on_error="skip"`` left out come back from
    the workers into ``dataset.errors``.

    A batch sampler, not ``batch_size=None`` with a sampler: Accelerate re-creates
    a DataLoader from its batch sampler (and lost this order, serving single samples,
    with the latter), and ``loader.sampler`` is the ``ChunkedSampler`` inside, a
    ``DistributedSampler`` that Lightning leaves in place (see NOTE [ samplers under
    Lightning and Accelerate ]).
    """
    for key in ("sampler", "batch_sampler", "collate_fn"):
        if key in kwargs:
            raise TypeError(
                f"dataloader() sets {key} itself; for your own {key} build "
                f"DataLoader(ds, batch_size=None, sampler=IndexBatchSampler(...))"
            )
    order = shuffled_batches(dataset, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last).sampler
    batches = _WholeBatches(order, batch_size, drop_last=drop_last)
    if kwargs.get("num_workers", 0) > 0:
        kwargs["worker_init_fn"] = FreezeGC(kwargs.get("worker_init_fn"))
    loader = BatchLoader if reports_skipped else WholeBatchLoader
    return loader(dataset, batch_sampler=batches, collate_fn=only_item, **kwargs)


class WholeBatch(list):
    """A batch's indices that ask ``dataset.__getitems__`` for the batch in one piece
    (see :func:`getitems`), with the ``seed`` and ``epoch`` of :class:`EpochIndices`.

    A list, not an array: Accelerate's batch sharding adds batches up as lists. Its
    attributes travel with it when pickled (to a DataLoader worker).
    """

    def __init__(self, indices: Any, seed: int | None, epoch: int | None) -> None:
        super().__init__(indices)
        self.seed, self.epoch = seed, epoch


class WholeBatchWithErrors(WholeBatch):
    """Batch indices that ask ``dataset[indices]`` for ``(batch, skipped)``: how the
    workers of ``ds.dataloader()`` send back the samples ``on_error="skip"`` left out."""


class _Whole:
    """What :func:`getitems` returns for a :class:`WholeBatch`: the batch, marked as one."""

    __slots__ = ("batch",)

    def __init__(self, batch: Any) -> None:
        self.batch = batch


def getitems(dataset: MapDataset, indices: Any) -> list[Any]:
    """``dataset.__getitems__(indices)``: what every ``DataLoader`` with a ``batch_size``
    calls with a batch's indices, then hands the list to its ``collate_fn``.

    For :class:`WholeBatch` indices (``ds.dataloader()``) the list is the whole batch
    ``dataset[indices]``. For any other batch of a dataset whose samples are read as
    stored (no ``transform``, ``on_error="raise"``) it is one batched read,
    ``dataset[indices]`` (JPEGs decoded into one buffer, one gather of rows): handed
    over as one :class:`WholeItem` where torch's fetch hands it to ``default_collate``
    next (see :func:`_default_collate_next`), else as views of its rows, the items
    ``dataset[i]`` gives (``_rows.py``). Samples of mixed shapes, which a ``collate_fn``
    may pad, are read one by one from then on, and so are the files of a worker whose
    rows a ``collate_fn`` must copy anyway (channels-last images): measured 0.9x there.
    """
    in_worker = get_worker_info() is not None
    if isinstance(indices, WholeBatch):
        with lending(in_worker) as lent:  # see NOTE [ reused shared batches ]
            return [_Whole(lent.send(dataset[indices]))]
    if len(indices) > 1 and _reads_as_stored(dataset) and dataset not in _ONE_BY_ONE:
        whole = _default_collate_next(sys._getframe(1))
        try:
            if whole and not in_worker:  # nothing to lend, nothing for the read to know: bare
                return [WholeItem(dataset[indices])]
            with for_collate(whole), lending(whole and in_worker) as lent:
                batch = dataset[indices]
                if whole:
                    return [WholeItem(lent.send(batch))]
        except MixedShapes:
            _ONE_BY_ONE.add(dataset)  # in this process: the next batches go one by one
        else:
            if _copied_from_files(dataset, batch):
                _ONE_BY_ONE.add(dataset)
            return _items(batch)
    return [dataset[i] for i in indices]


# datasets read one by one in this process: samples of mixed shapes, or see _copied_from_files
_ONE_BY_ONE: weakref.WeakSet[Any] = weakref.WeakSet()

_FETCH = getattr(getattr(_fetch, "_MapDatasetFetcher", None), "fetch", None)


def _default_collate_next(getitems_frame: Any) -> bool:
    """Whether the list :func:`getitems` returns goes straight to ``default_collate``:
    called by one of torchloader's own ``__getitems__`` (``getitems_frame``), called by
    torch's ``DataLoader`` fetch, whose ``collate_fn`` is ``default_collate`` (torch's
    default). Anything else (a ``__getitems__`` of your own, a ``Subset``, a
    ``collate_fn`` of your own, another torch) gets the rows."""
    fetch = getitems_frame.f_back
    if fetch is None or _FETCH is None or fetch.f_code is not getattr(_FETCH, "__code__", None):
        return False
    if not getitems_frame.f_globals.get("__name__", "").startswith("torchloader."):
        return False
    return getattr(fetch.f_locals.get("self"), "collate_fn", None) is default_collate


def _copied_from_files(dataset: MapDataset, batch: Any) -> bool:
    """Whether, in a worker, files went into a batch whose rows a ``collate_fn`` copies
    again (one read by one was faster there: benchmarks/bench_plain_dataloader.py)."""
    x = batch[0] if isinstance(batch, tuple) else batch
    return get_worker_info() is not None and offers(dataset, "read_samples_into") and not x.is_contiguous()


def _reads_as_stored(dataset: MapDataset) -> bool:
    """Whether ``dataset[indices]`` holds exactly the items ``dataset[i]`` gives."""
    skips, _ = error_policy(dataset)
    return not transforms_samples(dataset) and not skips


def _items(batch: Any) -> list[Any]:
    """The items of a batch ``x`` or ``(x, y)``, as views of it that ``default_collate``
    puts back together without a copy (see ``_rows.py``)."""
    if isinstance(batch, tuple):
        x, y = batch
        return list(zip(rows(x), rows(y)))
    return rows(batch)


def only_item(items: list[Any]) -> Any:
    """The ``collate_fn`` of ``ds.dataloader()``: the whole batch :func:`getitems` made,
    or, for indices a framework rebuilt as a plain list, the items collated as usual."""
    if len(items) == 1 and isinstance(items[0], _Whole):
        return items[0].batch
    return default_collate(items)


class _WholeBatches(IndexBatchSampler):
    def __iter__(self) -> Iterator[WholeBatch]:  # type: ignore[override]
        for batch in super().__iter__():
            yield WholeBatch(batch.tolist(), getattr(batch, "seed", None), getattr(batch, "epoch", None))


class _WithErrors:
    """A batch sampler's batches as :class:`WholeBatchWithErrors` requests (``BatchLoader``'s own)."""

    def __init__(self, batches: Any) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[WholeBatchWithErrors]:
        for batch in self.batches:
            yield WholeBatchWithErrors(batch, batch.seed, batch.epoch)

    def __len__(self) -> int:
        return len(self.batches)


class WholeBatchLoader(DataLoader):
    """A ``DataLoader`` whose batches are read whole by the dataset (``ds.dataloader()``);
    its ``sampler`` is the order inside the batch sampler (what frameworks look at)."""

    @property  # type: ignore[override]
    def sampler(self) -> Any:
        return self.batch_sampler.sampler  # type: ignore[union-attr]

    @sampler.setter
    def sampler(self, value: Any) -> None:
        pass  # DataLoader.__init__ sets its default SequentialSampler: not this loader's order


class BatchLoader(WholeBatchLoader):
    """A :class:`WholeBatchLoader` whose batches come with the samples ``on_error="skip"``
    left out of them; it hands out the batch and records the rest in :attr:`errors`,
    the dataset's own log, in the main process.
    """

    @property
    def errors(self) -> Any:
        """The dataset's :class:`ErrorLog` (``ds.errors``)."""
        return self.dataset.errors  # type: ignore[attr-defined]

    @property
    def _index_sampler(self) -> Any:
        # This loader's own iterators ask for (batch, skipped); ``batch_sampler`` itself
        # yields plain batches, so that a DataLoader a framework re-creates from it
        # (Accelerate's) gets plain batches (the skipped samples are then recorded in
        # the process that reads them: this one with num_workers=0).
        return _WithErrors(self.batch_sampler)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return _Unwrapped(super().__iter__(), self.errors)


class _Unwrapped:
    """Torch's DataLoader iterator, handing out the batches of its ``(batch, skipped)``
    items and recording the skipped samples in ``errors``."""

    def __init__(self, iterator: Any, errors: Any) -> None:
        self._iterator = iterator
        self._errors = errors

    def __iter__(self) -> _Unwrapped:
        return self

    def __next__(self) -> Any:
        try:
            batch, skipped = next(self._iterator)
        except (ConnectionError, EOFError) as exc:
            # A batch whose shared memory a worker hands over by descriptor, and the worker
            # killed before the main process fetched it: torch's own check (on a timeout) would
            # have said the worker died; say so, and stop the others.
            raised_in_worker = "in DataLoader worker process" in str(exc)  # (torch re-raises those so)
            dead = [] if raised_in_worker else _dead_workers(getattr(self._iterator, "_workers", []), DEATH_WAIT)
            if not dead:
                raise
            getattr(self._iterator, "_shutdown_workers", lambda: None)()
            pids = f"pid {dead[0]}" if len(dead) == 1 else f"pid(s) {', '.join(map(str, dead))}"
            raise RuntimeError(
                f"DataLoader worker ({pids}) exited unexpectedly while handing over a batch "
                f"({type(exc).__name__}: {exc}); see its exit code or the system log (out of memory?)"
            ) from exc
        if skipped:
            self._errors.record(skipped, stacklevel=3)
        return batch

    def __len__(self) -> int:
        return len(self._iterator)

    def __getattr__(self, name: str) -> Any:  # the workers, ... of torch's iterator
        return getattr(self._iterator, name)


DEATH_WAIT = 5.0  # seconds a lost batch waits for its worker to be seen dead


def _dead_workers(workers: list[Any], wait: float) -> list[int]:
    """The pids of ``workers`` that ended, waiting up to ``wait`` s for one to: a killed
    worker's sockets close (what the main process saw) a moment before it counts as dead."""
    if not workers:
        return []
    sentinels = {w.sentinel: w.pid for w in workers}
    return sorted(sentinels[s] for s in multiprocessing.connection.wait(list(sentinels), timeout=wait))


class FreezeGC:
    """A ``worker_init_fn`` that first moves the objects a worker inherited out of
    the garbage collector's reach (``gc.freeze()``), then runs ``then``.

    Why and what it saves: NOTE [ forked workers and the garbage collector ] in
    ``torchloader/chunked/_workers.py``.
    """

    def __init__(self, then: Callable[[int], Any] | None = None) -> None:
        self.then = then

    def __call__(self, worker_id: int) -> None:
        gc.freeze()
        mark_worker()
        reset_signal_handlers()  # see NOTE [ worker processes and signals ]
        if self.then is not None:
            self.then(worker_id)
