"""``ChunkedLoader``: large RAM chunks loaded from disk, small batches served from them.

Two batch sizes: the data set is read in RAM chunks
(contiguous index ranges, ``ChunkedSampler``'s order), each loaded as a whole
into one preallocated buffer (pinned where CUDA is present) while the previous
chunk is served as batches. Batches are consecutive slices of that order, so
the loader yields exactly the batches ``DataLoader(dataset, batch_size,
sampler=ChunkedSampler(...))`` would, only read chunk-wise: a batch is a view of
the buffer (one that straddles two chunks is copied).

RAM: ``ram_budget`` covers the whole process tree's loading memory (how, in
``torchloader/chunked/_budget.py``). Batches kept alive past the next chunk keep
their buffer alive (NOTE [ reusing a chunk buffer ]); nothing else grows with the data.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from torchloader._core.checks import check_int
from torchloader._core.shared_memory import check_room
from torchloader._core.subsets import looked_through
from torchloader.chunked._budget import BUFFERS as _BUFFERS
from torchloader.chunked._budget import loader_chunk_size
from torchloader.chunked._buffers import BufferPool
from torchloader.chunked._fill import ChunkFiller
from torchloader.chunked._pass import LoaderPass
from torchloader.chunked._producer import LoadedChunk, Producer, chunk_plan
from torchloader.chunked._workers import ProcessFiller
from torchloader.chunked.stats import LoaderStats
from torchloader.device import check_device, check_pin_memory
from torchloader.error_log import ErrorLog, error_policy
from torchloader.order.quality import PoorShuffleWarning, ShuffleQuality, order_quality, poor_shuffle_message
from torchloader.order.sampler import ChunkedSampler
from torchloader.protocols import MapDataset

__all__ = ["ChunkedLoader"]


class ChunkedLoader:
    """Iterate batches of ``dataset``, loaded into RAM one chunk at a time.

    Args:
        dataset: a map-style dataset of ``x`` or ``(x, y)`` samples of one shape
            (``PathDataset``, ``PreloadedDataset``, ...). What else it offers decides
            how a chunk is filled (one gather, or a read per sample; see
            :mod:`torchloader.protocols`), and a dataset of your own can offer it too.
        batch_size: samples per batch.
        chunk_size: samples per RAM chunk; or give ``ram_budget`` instead.
        ram_budget: bytes (or ``"8GiB"``) for all loading memory, workers included.
        shuffle, seed, num_replicas, rank, block_size: as for :class:`ChunkedSampler`
            (``block_size`` builds a chunk from blocks in random places: far better
            mixed batches on data stored sorted by class, see ``shuffle_quality``).
        drop_last: drop the last batch of an epoch if it is short.
        num_workers: processes (or threads) that read samples into a chunk; 0: the
            loading thread reads them itself.
        worker_type: ``"process"`` (default: decoding in parallel, writing into
            shared memory) or ``"thread"`` (no start-up cost; parallel only where
            the reader releases the GIL for most of its time).
        multiprocessing_context: for process workers, as in ``DataLoader``.
        device: move batches there (``"cuda"``: copied ahead from pinned memory).
        transform: applied to each batch, on ``device`` when one is given.
        pin_memory: pin the chunk buffers (default: when CUDA is available).

    Every pass is a new epoch (one left early too, as Lightning leaves it after
    ``len(loader)`` batches) unless ``set_epoch`` or ``load_state_dict`` said which
    comes next; ranks are looked up when a pass starts. One pass at a time: a second
    iterator raises while another has batches left. A dataset's random ``transform``
    draws from ``(seed, epoch, index)``, so batches do not depend on the workers.
    With ``on_error="skip"`` an unreadable sample is left out of its batch (which is
    shorter; ``len(loader)`` does not move) and listed in ``loader.errors``. Pickles
    hold the configuration and position, not the workers. Details: docs/chunked.md.

    Example:
        >>> from torchloader import PreloadedDataset
        >>> ds = PreloadedDataset(torch.arange(10), torch.arange(10))
        >>> loader = ChunkedLoader(ds, 3, chunk_size=4, shuffle=False)
        >>> [yb.tolist() for _, yb in loader]
        [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    """

    def __init__(
        self,
        dataset: MapDataset,
        batch_size: int,
        *,
        chunk_size: int | None = None,
        ram_budget: int | str | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
        worker_type: str = "process",
        multiprocessing_context: Any = None,
        device: str | torch.device | None = None,
        transform: Callable[[Any], Any] | None = None,
        pin_memory: bool | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        block_size: int | None = None,
    ) -> None:
        self._config = {  # for copies and pickles: the arguments, less the dataset and batch_size
            k: v for k, v in locals().items() if k not in ("self", "dataset", "batch_size")
        } | {"multiprocessing_context": _portable_context(multiprocessing_context)}
        self.dataset = _not_empty(dataset)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.device = None if device is None else check_device(device)
        self.drop_last = bool(drop_last)
        self.num_workers = check_int("num_workers", num_workers)
        if worker_type not in ("process", "thread"):
            raise ValueError(f"worker_type must be 'process' or 'thread' (got {worker_type!r})")
        self.worker_type = worker_type
        skip, errors = error_policy(looked_through(dataset)[1])  # of the dataset read
        self.errors = errors if errors is not None else ErrorLog()
        self.filler = self._filler(skip, seed, multiprocessing_context)
        self.layout = self.filler.layout  # reads the first sample
        chunk_size = loader_chunk_size(
            chunk_size,
            ram_budget,
            sample_bytes=self.layout.nbytes,
            batch_size=self.batch_size,
            processes=1 + (self.num_workers if worker_type == "process" else 0),
            samples=len(dataset),
        )
        self.sampler = ChunkedSampler(
            dataset,
            chunk_size=chunk_size,
            shuffle=shuffle,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            block_size=block_size,
        )
        self.transform = transform
        self.pool = self._pool(chunk_size, check_pin_memory(pin_memory))
        self.stats = LoaderStats()
        self.latest_pass: LoaderPass | None = None  # see torchloader/chunked/_pass.py
        self._producer: Producer | None = None
        self._producer_epoch = -1  # the epoch whose first chunk the producer holds
        self._warned_shuffle = False

    def _pool(self, chunk_size: int, pin: bool) -> BufferPool:
        shared = self.filler.shared_buffers and not self.filler.batched
        if shared:  # see torchloader/_core/shared_memory.py: fail now, not mid-epoch
            check_room(
                _BUFFERS * chunk_size * self.layout.nbytes,
                f"ChunkedLoader's {_BUFFERS} chunk buffers for {self.num_workers} worker processes",
            )
        return BufferPool(self.layout, chunk_size, slots=_BUFFERS, pin=pin, shared=shared)

    def _filler(self, skip: bool, seed: int, multiprocessing_context: Any) -> ChunkFiller:
        if self.worker_type == "process" and self.num_workers > 0:
            return ProcessFiller(
                self.dataset, self.num_workers, skip=skip, seed=seed, multiprocessing_context=multiprocessing_context
            )
        return ChunkFiller(self.dataset, self.num_workers, skip=skip, seed=seed)

    @property
    def chunk_size(self) -> int:
        return self.sampler.chunk_size

    @property
    def epoch(self) -> int:
        """The epoch of the pass under way, or of the next pass (the sampler's)."""
        return self.latest_pass.epoch if self._running() else self.sampler.indices_epoch()

    def _running(self) -> bool:
        """Whether the latest pass is still the epoch's: not done, and no epoch set since."""
        this = self.latest_pass
        return this is not None and not this.done and this.generation == self.sampler.generation

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def last_position(self) -> int:
        """Where in this rank's order of an epoch its last batch ends."""
        n = len(self.sampler)
        return n - n % self.batch_size if self.drop_last else n

    def shuffle_quality(self, epoch: int | None = None) -> ShuffleQuality:
        """How random this rank's order of ``epoch`` (default: the next) is, per batch,
        relative to a full shuffle: label entropy (when the dataset has ``labels``
        or a 1-D ``y``) and spread in storage order; 1.0 is as good as a full shuffle."""
        order, _ = self.sampler.order_of(self.epoch if epoch is None else epoch)
        return order_quality(order, self.dataset, self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next pass (as ``loader.sampler.set_epoch``)."""
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        self._refuse_a_second_pass()
        return self._pass_batches()

    def _refuse_a_second_pass(self) -> None:
        if self.latest_pass is not None and self.latest_pass.active:
            raise RuntimeError(
                f"this ChunkedLoader is already being iterated (epoch {self.latest_pass.epoch}, "
                f"{self.latest_pass.position} of {len(self.sampler)} samples handed out): it serves "
                f"one pass at a time from its two chunk buffers. Finish that pass or close its "
                f"iterator (it.close(), or let it go) first; for two streams at once, build a second loader"
            )

    def _pass_batches(self) -> Iterator[Any]:
        """One pass; it begins at the first ``next()`` (see ``torchloader/chunked/_pass.py``)."""
        self._refuse_a_second_pass()  # another iterator may have begun since iter()
        epoch, start = self.sampler.begin_pass()
        self.latest_pass = LoaderPass(self, epoch, start)
        self._warn_if_poorly_mixed(epoch)
        yield from self.latest_pass.batches(self)

    def producer_for(self, epoch: int, start: int) -> Producer:
        """The running producer if it is about to load this epoch's first chunk."""
        if self._producer is not None and (self._producer_epoch, start) == (epoch, 0):
            return self._producer
        self.close_producer()
        if isinstance(self.filler, ProcessFiller):
            self.filler.start()  # from this thread, before the loading thread exists
        # the plan must not refer to self: a running producer would keep the loader alive
        self._producer = Producer(chunk_plan(self.sampler, epoch, start), self.pool, self.filler, self.stats)
        self._producer_epoch = epoch
        return self._producer

    def chunks_of(self, producer: Producer) -> Iterator[LoadedChunk]:
        chunk = producer.next_chunk()
        self.stats.first_chunk_wait_seconds = chunk.waited
        self._producer_epoch = -1
        while True:
            if chunk.last:
                self._producer_epoch = chunk.epoch + 1  # it loads the next epoch meanwhile
            yield chunk
            if chunk.last:
                return
            chunk = producer.next_chunk()

    def close_producer(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
            self._producer_epoch = -1

    def close(self) -> None:
        """Stop loading ahead and end the workers (also done on garbage collection)."""
        self.close_producer()
        self.filler.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where this epoch stands; ``consumed`` defaults to the samples handed out so far
        (after the last batch of an epoch: the next epoch, from its start)."""
        running = self._running()
        if consumed is None:
            consumed = self.latest_pass.position if running else self.sampler.indices_start()  # type: ignore[union-attr]
        state = self.sampler.state_dict(consumed=consumed)
        state["epoch"] = self.epoch
        state["batch_size"] = self.batch_size
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next pass yields exactly the batches the interrupted pass had left."""
        if state.get("batch_size") != self.batch_size:
            raise ValueError(
                f"cannot resume: the saved state has batch_size={state.get('batch_size')!r} "
                f"but this loader has batch_size={self.batch_size}"
            )
        self.sampler.load_state_dict(state)
        self.close_producer()
        self.latest_pass = None

    def _warn_if_poorly_mixed(self, epoch: int) -> None:
        """Warn once when this pass's batches are far worse mixed than a full shuffle's."""
        if self._warned_shuffle or not self.sampler.shuffle or self.chunk_size >= len(self.sampler):
            return  # a chunk of all of it (this rank's share) is a full shuffle
        self._warned_shuffle = True
        quality = self.shuffle_quality(epoch)
        message = poor_shuffle_message(quality, self)
        if message is not None:
            warnings.warn(message, PoorShuffleWarning, stacklevel=3)

    def __reduce__(self) -> Any:
        """Its configuration and where the epoch stands, like a DataLoader's; not its
        workers, buffers or a pass under way (a copy starts its own on iteration)."""
        return _rebuild, (self.dataset, self.batch_size, self._config, self.state_dict())

    def __repr__(self) -> str:
        return (
            f"ChunkedLoader({type(self.dataset).__name__}, batch_size={self.batch_size}, "
            f"chunk_size={self.chunk_size}, num_workers={self.num_workers}, "
            f"device={self.device}, epoch={self.epoch})"
        )


def _not_empty(dataset: MapDataset) -> MapDataset:
    if len(dataset) == 0:  # not a file that failed: say so before reading sample 0
        raise ValueError(f"dataset {dataset!r:.200} is empty (0 samples); a ChunkedLoader needs at least one sample")
    return dataset


def _rebuild(dataset: MapDataset, batch_size: int, config: dict[str, Any], state: dict[str, Any]) -> ChunkedLoader:
    loader = ChunkedLoader(dataset, batch_size, **config)
    loader.load_state_dict(state)
    return loader


def _portable_context(context: Any) -> Any:
    """A multiprocessing context as its start method's name (a context does not pickle)."""
    method = getattr(context, "get_start_method", None)
    return method() if callable(method) and not isinstance(context, str) else context
