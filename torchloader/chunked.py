"""``ChunkedLoader``: large RAM chunks loaded from disk, small batches served from them.

The seed tutorial's last idea, made concrete: the data set is read in RAM chunks
(contiguous index ranges, ``ChunkedSampler``'s order), each loaded as a whole
into one preallocated buffer (pinned where CUDA is present) while the previous
chunk is served as batches. Batches are consecutive slices of that order, so
the loader yields exactly the batches ``DataLoader(dataset, batch_size,
sampler=ChunkedSampler(...))`` would, only read chunk-wise: a batch is a view of
the buffer (one that straddles two chunks is copied).

RAM: ``ram_budget`` covers the whole process tree's loading memory. Two chunk
buffers share it, less a reserve for what loading costs besides them (each
worker process's own pages, a batch that straddles two chunks, allocator
slack: 20-40 MiB measured with 2 workers): an eighth of the budget, at most
12 MiB per process. Batches kept alive past the next chunk keep their buffer
alive (see ``torchloader/chunk_buffer.py``); nothing else grows with the data.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any

import torch

from .chunk_batches import BatchCutter
from .chunk_buffer import BufferPool
from .chunk_fill import ChunkFiller
from .chunk_producer import LoadedChunk, Producer, chunk_plan
from .chunk_workers import ProcessFiller
from .chunking import format_bytes
from .device import DeviceLoader
from .error_log import ErrorLog, SkippedSample, error_policy
from .loader_stats import LoaderStats
from .sampler import ChunkedSampler, check_chunk_args
from .sampler import _check_non_negative_int as _check_int
from .shared_memory import check_room
from .shuffle_quality import ShuffleQuality, shuffle_quality
from .subsets import ReadThrough

__all__ = ["ChunkedLoader"]

_BUFFERS = 2  # double buffering: one chunk served while the next loads
_RESERVE_PER_PROCESS = 12 * 2**20  # of ram_budget, for what loading costs besides the buffers


class ChunkedLoader:
    """Iterate batches of ``dataset``, loaded into RAM one chunk at a time.

    Args:
        dataset: a map-style dataset of ``x`` or ``(x, y)`` samples of one shape
            (``PathDataset``, ``PreloadedDataset``, ...). A dataset with a
            ``gather(indices)`` method fills a chunk with one batched read.
        batch_size: samples per batch.
        chunk_size: samples per RAM chunk; or give ``ram_budget`` instead.
        ram_budget: bytes (or ``"8GiB"``) for loading: two chunk buffers and a
            reserve for the workers (an eighth, at most 12 MiB per process).
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

    A dataset with ``on_error="skip"`` (``PathDataset(..., on_error="skip")``) has
    samples that cannot be read left out of their batch, which is then shorter
    (batch boundaries and ``len(loader)`` do not move, so ranks stay in step);
    they are counted in ``loader.stats.samples_skipped`` and listed in
    ``loader.errors`` (the dataset's ``errors`` when it has one; a ``Subset``'s
    are those of the data set it wraps).

    Example:
        >>> from torchloader import PreloadedDataset
        >>> ds = PreloadedDataset(torch.arange(10), torch.arange(10))
        >>> loader = ChunkedLoader(ds, 3, chunk_size=4, shuffle=False)
        >>> [yb.tolist() for _, yb in loader]
        [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    """

    def __init__(
        self,
        dataset: Any,
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
        self.dataset = dataset
        self.batch_size = _check_int("batch_size", batch_size, minimum=1)
        self.drop_last = bool(drop_last)
        self.num_workers = _check_int("num_workers", num_workers)
        if worker_type not in ("process", "thread"):
            raise ValueError(f"worker_type must be 'process' or 'thread' (got {worker_type!r})")
        self.worker_type = worker_type
        skip, errors = error_policy(dataset)
        self.errors = errors if errors is not None else ErrorLog()
        self.filler = self._filler(skip, multiprocessing_context)
        self.layout = self.filler.layout(0)
        chunk_size = self._chunk_size(chunk_size, ram_budget)
        self.sampler = ChunkedSampler(
            dataset, chunk_size=chunk_size, shuffle=shuffle, seed=seed,
            num_replicas=num_replicas, rank=rank, block_size=block_size,
        )  # fmt: skip
        self.device = None if device is None else torch.device(device)
        self.transform = transform
        pin = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        if pin and not torch.cuda.is_available():
            raise ValueError(
                "pin_memory=True needs CUDA, and torch.cuda.is_available() is False here; "
                "leave pin_memory=None to pin only where CUDA is present"
            )
        shared = self.filler.shared_buffers and not self.filler.batched
        if shared:  # see torchloader/shared_memory.py: fail now, not mid-epoch
            check_room(_BUFFERS * chunk_size * self.layout.nbytes,
                       f"ChunkedLoader's {_BUFFERS} chunk buffers for {self.num_workers} worker processes")  # fmt: skip
        self.pool = BufferPool(self.layout, chunk_size, slots=_BUFFERS, pin=pin, shared=shared)
        self.stats = LoaderStats()
        self.epoch = 0
        self._start = 0  # samples of this epoch consumed before a resume
        self._position = 0  # samples of the current epoch yielded so far
        self._producer: Producer | None = None
        self._producer_epoch = -1  # the epoch whose first chunk the producer holds

    def _filler(self, skip: bool, multiprocessing_context: Any) -> ChunkFiller:
        if self.worker_type == "process" and self.num_workers > 0:
            return ProcessFiller(
                self.dataset, self.num_workers, skip=skip, multiprocessing_context=multiprocessing_context
            )
        return ChunkFiller(self.dataset, self.num_workers, skip=skip)

    def _chunk_size(self, chunk_size: int | None, ram_budget: int | str | None) -> int:
        chunk_size, budget = check_chunk_args(chunk_size, ram_budget)
        if chunk_size is None:
            assert budget is not None
            chunk_size = self._buffer_share(budget) // (_BUFFERS * self.layout.nbytes)
            if chunk_size < self.batch_size:
                smallest = self._smallest_budget(_BUFFERS * self.batch_size * self.layout.nbytes)
                raise ValueError(
                    f"ram_budget={budget} bytes ({format_bytes(budget)}) cannot hold "
                    f"{_BUFFERS} chunks of one batch and the workers' reserve: a sample takes "
                    f"{self.layout.nbytes} bytes, a batch of {self.batch_size} takes "
                    f"{self.batch_size * self.layout.nbytes} bytes; the smallest budget "
                    f"that works is ram_budget={smallest} ({format_bytes(smallest)})"
                )
            # whole batches per chunk: no batch straddles two chunks (and is copied)
            chunk_size -= chunk_size % self.batch_size
        return min(chunk_size, len(self.dataset))

    def _buffer_share(self, budget: int) -> int:
        """The bytes of ``budget`` left for the chunk buffers after the reserve."""
        processes = 1 + (self.num_workers if self.worker_type == "process" else 0)
        return budget - min(budget // 8, processes * _RESERVE_PER_PROCESS)

    def _smallest_budget(self, buffers: int) -> int:
        budget = buffers
        while self._buffer_share(budget) < buffers:
            budget += buffers - self._buffer_share(budget)
        return budget

    @property
    def chunk_size(self) -> int:
        return self.sampler.chunk_size

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def shuffle_quality(self, epoch: int | None = None) -> ShuffleQuality:
        """How random this rank's order of ``epoch`` (default: the next) is, per batch,
        relative to a full shuffle: label entropy (when the dataset has ``labels``
        or a 1-D ``y``) and spread in storage order; 1.0 is as good as a full shuffle."""
        order, _ = self.sampler.order_of(self.epoch if epoch is None else epoch)
        through = ReadThrough(self.dataset)  # a subset: its dataset's labels and storage order
        order, dataset = through.own(order), through.dataset
        labels = getattr(dataset, "labels", None)
        if labels is None and getattr(getattr(dataset, "y", None), "ndim", 0) == 1:
            labels = dataset.y.numpy()
        return shuffle_quality(order, self.batch_size, labels)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` next (the epoch also advances after each pass)."""
        self.sampler.set_epoch(epoch)
        if epoch != self.epoch:
            self._start = self._position = 0
        self.epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        # per batch made and not yet handed out: its positions, the samples left out of it
        handed: deque[tuple[int, list[SkippedSample]]] = deque()
        host = self._host_batches(handed)
        batches: Iterator[Any] = host
        if self.device is not None:
            batches = iter(DeviceLoader(host, self.device, transform=self.transform))
        elif self.transform is not None:
            batches = map(self.transform, host)
        return self._handed_out(host, batches, handed)

    def _handed_out(
        self, host: Generator, batches: Iterator[Any], handed: deque[tuple[int, list[SkippedSample]]]
    ) -> Iterator[Any]:
        """Count what the caller got (a ``DeviceLoader`` makes batches one ahead)."""
        epoch = self.epoch
        self._position = self._start
        try:
            for batch in batches:
                positions, skipped = handed.popleft()
                self._position += positions
                if skipped:
                    self.stats.add_skipped(len(skipped))
                    self.errors.record(skipped, where="loader.errors", stacklevel=3)
                yield batch
        finally:
            host.close()  # a break: stop loading now, not when the generators are collected
        self.epoch, self._start, self._position = epoch + 1, 0, 0
        self.sampler.set_epoch(self.epoch)

    def _host_batches(self, handed: deque[tuple[int, list[SkippedSample]]]) -> Iterator[Any]:
        epoch, start = self.epoch, self._start
        cutter = BatchCutter(self.batch_size, handed)
        try:
            if start < len(self.sampler):
                producer = self._producer_for(epoch, start)
                for chunk in self._chunks_of(producer):
                    yield from cutter.batches_of(chunk.buffer, chunk.size, chunk.skipped)
                    producer.release(chunk)
            if cutter.pending and not self.drop_last:
                yield cutter.finish()
        except BaseException:
            self._close_producer()
            raise

    def _producer_for(self, epoch: int, start: int) -> Producer:
        """The running producer if it is about to load this epoch's first chunk."""
        if self._producer is not None and (self._producer_epoch, start) == (epoch, 0):
            return self._producer
        self._close_producer()
        if isinstance(self.filler, ProcessFiller):
            self.filler.start()  # from this thread, before the loading thread exists
        # the plan must not refer to self: a running producer would keep the loader alive
        self._producer = Producer(chunk_plan(self.sampler, epoch, start), self.pool, self.filler, self.stats)
        self._producer_epoch = epoch
        return self._producer

    def _chunks_of(self, producer: Producer) -> Iterator[LoadedChunk]:
        chunk = producer.next_chunk()
        self.stats.first_chunk_wait_seconds = chunk.waited
        self._producer_epoch = chunk.epoch + 1 if chunk.last else -1
        yield chunk
        while not chunk.last:
            chunk = producer.next_chunk()
            yield chunk
        self._producer_epoch = chunk.epoch + 1  # it loads the next epoch meanwhile

    def _close_producer(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
            self._producer_epoch = -1

    def close(self) -> None:
        """Stop loading ahead and end the workers (also done on garbage collection)."""
        self._close_producer()
        self.filler.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where this epoch stands; ``consumed`` defaults to the samples yielded so far."""
        state = self.sampler.state_dict(consumed=self._position if consumed is None else consumed)
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
        self._close_producer()
        self.epoch, self._start = state["epoch"], state["consumed"]
        self._position = self._start

    def __repr__(self) -> str:
        return (
            f"ChunkedLoader({type(self.dataset).__name__}, batch_size={self.batch_size}, "
            f"chunk_size={self.chunk_size}, num_workers={self.num_workers}, "
            f"device={self.device}, epoch={self.epoch})"
        )

