"""Fill RAM chunks with worker processes that write straight into shared memory.

Processes decode in parallel whatever the dataset does in Python; threads only
as far as the per-sample work releases the GIL. For a ``PathDataset`` of JPEGs
that is now most of it (libjpeg-turbo decodes into the slot without the GIL and
~5 us of Python per sample remain), and 2 threads came within 10% of 2
processes here; other datasets may hold the GIL longer. The chunk buffers live
in shared memory (page-locked in place where CUDA is present), so a worker's
sample goes straight into its slot: no pickling, no per-batch transfer.

Each worker gets the dataset once, at start, and each buffer once, on first
use; a task is then only ``(buffer id, slots, indices)``. A worker that dies
(killed, out of memory) is noticed within a tenth of a second and reported
with its exit code, never waited for forever; the other workers are ended at
once. When the loader stops early (a ``break``), a flag in shared memory makes
the workers drop the rest of the chunk.

# NOTE [ forked workers and the garbage collector ]
A forked worker shares the parent's pages until either process writes one. A
full garbage collection in the worker writes to every tracked object the
parent left it, so each worker copied ~36 MiB within a few epochs (PSS,
``benchmarks/stress_worker_memory.py``, BENCHMARKS.md), even though a dataset's
paths are not Python objects; ``gc.freeze()`` at worker start keeps them out of
its collections and a worker stays at ~5.5 MiB of its own. ``DataLoader`` workers
get the same (``FreezeGC``). Pages the parent writes after the fork
are still copied (10-25 MiB measured); the ``spawn`` context avoids that at
the cost of a fresh interpreter, and torch, per worker.
"""

from __future__ import annotations

import gc
import queue
import signal
import threading
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

from torchloader._core.layout import ChunkBuffer, SampleLayout
from torchloader._core.randomness import mark_worker, seed_worker
from torchloader._core.worker_process import PARENT_CHECK_SECONDS, ParentWatch, reset_signal_handlers
from torchloader.chunked._fill import ChunkFiller, Skipped, fill_batched, fill_slots, storage_runs
from torchloader.errors import SampleLoadError
from torchloader.protocols import MapDataset

__all__ = ["ProcessFiller"]


def _worker_loop(
    dataset: MapDataset,
    first: tuple[int, SampleLayout],
    tasks: Any,
    results: Any,
    halt: Any,
    skip: bool,
    rank: int,
    base_seed: int,
) -> None:
    reset_signal_handlers()  # see NOTE [ worker processes and signals ]
    watch = ParentWatch()
    torch.set_num_threads(1)  # one core per worker; the sample copies are small
    gc.freeze()  # see NOTE [ forked workers and the garbage collector ]
    mark_worker()
    seed_worker(base_seed, rank)  # forked workers would all draw the parent's numbers
    halt = _HaltOrOrphaned(halt, watch)
    buffers: dict[int, ChunkBuffer] = {}
    while watch.parent_alive():
        try:
            task = tasks.get(timeout=PARENT_CHECK_SECONDS)
        except queue.Empty:
            continue
        if task is None:
            return
        kind, key = task[0], task[1]
        if kind == "buffer":
            buffers[key] = task[2]
        elif kind == "forget":
            buffers.pop(key, None)
        else:
            _, _, slots, indices, reading = task
            skipped: Skipped | None = [] if skip else None
            try:
                fill_slots(dataset, first, buffers[key], slots, indices, halt, skipped, reading)
                results.put(("done", skipped or []))
            except Exception as exc:  # sent to the main process, raised there
                results.put(("error", _portable(exc)))


STOP_SECONDS = 5.0  # for a worker to end on its stop message, then on SIGTERM (then SIGKILL)


class _HaltOrOrphaned:
    """The halt flag as a worker reads it: also set once the parent is gone."""

    def __init__(self, flag: Any, watch: ParentWatch) -> None:
        self._flag = flag
        self._watch = watch

    def is_set(self) -> bool:
        return self._flag.is_set() or not self._watch.parent_alive()


class _Flag:
    """A flag in shared memory without a lock: a worker killed while reading it
    cannot leave a lock held (as it could with ``multiprocessing.Event``)."""

    def __init__(self, context: Any) -> None:
        self._value = context.RawValue("b", 0)

    def is_set(self) -> bool:
        return bool(self._value.value)

    def set(self) -> None:
        self._value.value = 1

    def clear(self) -> None:
        self._value.value = 0


def _portable(exc: Exception) -> Exception:
    """The error itself if it survives pickling, else a SampleLoadError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return SampleLoadError(f"{type(exc).__name__}: {exc}")


class ProcessFiller(ChunkFiller):
    """Reads samples of ``dataset`` into shared-memory chunk buffers with processes."""

    shared_buffers = True

    def __init__(
        self,
        dataset: MapDataset,
        num_workers: int,
        *,
        skip: bool = False,
        seed: int = 0,
        multiprocessing_context: Any = None,
    ) -> None:
        super().__init__(dataset, num_workers, skip=skip, seed=seed)  # its thread pool is never started here
        self._context = multiprocessing_context
        self._workers: list[Any] = []
        self._tasks: list[Any] = []
        self._results: Any = None
        self._halt: Any = None  # set: the workers drop the rest of the chunk
        self._sent: dict[int, ChunkBuffer] = {}  # buffers the workers hold, by id
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the workers (from the main thread, before any loading thread runs)."""
        if self._workers or self.batched:
            return
        context = self._context
        if context is None or isinstance(context, str):
            context = mp.get_context(context)
        self._results = context.Queue()
        self._halt = _Flag(context)
        base_seed = int(torch.empty((), dtype=torch.int64).random_().item())  # as DataLoader draws its own
        for rank in range(self.num_workers):
            tasks = context.Queue()
            worker = context.Process(
                target=_worker_loop,
                args=(self.dataset, self.first, tasks, self._results, self._halt, self.skip, rank, base_seed),
                name=f"torchloader-chunk-worker-{rank}",
                daemon=True,
            )
            worker.start()
            self._workers.append(worker)
            self._tasks.append(tasks)

    def _fill(
        self, buffer: ChunkBuffer, indices: np.ndarray, stop: threading.Event, reading: tuple[int, int] | None
    ) -> Skipped:
        """Write ``dataset[indices[j]]`` into slot ``j`` of ``buffer``, in the workers;
        return the samples left out (only when skipping)."""
        if self.batched:
            fill_batched(self.dataset, buffer, indices)
            return []
        with self._lock:
            key = self._share(buffer)
            runs = storage_runs(indices, self.num_workers)
            if stop.is_set():  # before the tasks: a worker must not start on one (seen: 4 samples read)
                self._halt.set()
            for tasks, run in zip(self._tasks, runs):
                tasks.put(("fill", key, run, indices[run], reading))
            return self._collect(len(runs), stop)

    def _share(self, buffer: ChunkBuffer) -> int:
        key = id(buffer)
        if self._sent.get(key) is not buffer:
            for tasks in self._tasks:
                tasks.put(("buffer", key, buffer))
            self._sent[key] = buffer
        return key

    def forget(self, keep: list[ChunkBuffer]) -> None:
        """Let the workers drop buffers the pool no longer holds (frees their memory)."""
        with self._lock:
            keep_ids = {id(b) for b in keep}
            for key in [k for k in self._sent if k not in keep_ids]:
                for tasks in self._tasks:
                    tasks.put(("forget", key))
                del self._sent[key]

    def _collect(self, count: int, stop: threading.Event) -> Skipped:
        """Wait for ``count`` runs; once ``stop`` is set the workers cut them short."""
        error: BaseException | None = None
        skipped: Skipped = []
        while count:
            if stop.is_set():
                self._halt.set()
            try:
                status, payload = self._results.get(timeout=0.1)
            except queue.Empty:
                self._check_alive()
                continue
            count -= 1
            if status == "done":
                skipped += payload
            elif error is None:
                error = payload
        self._halt.clear()  # every run has ended: none of them can see it cleared early
        if error is not None:
            raise error
        return skipped

    def _check_alive(self) -> None:
        for rank, worker in enumerate(self._workers):
            if not worker.is_alive():
                code = worker.exitcode
                how = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
                self._stop_workers(grace=0)  # the others' work on this chunk is lost anyway
                raise RuntimeError(
                    f"ChunkedLoader worker {rank} (pid {worker.pid}) died with {how} while "
                    f"loading a chunk; if it was killed for memory, lower ram_budget or "
                    f"num_workers"
                )

    def close(self) -> None:
        """Stop the workers (they are daemons: they also end with the main process)."""
        self._stop_workers(grace=STOP_SECONDS)

    def _stop_workers(self, grace: float) -> None:
        for tasks in self._tasks:
            try:
                tasks.put(None)
            except (OSError, ValueError):
                pass
        for worker in self._workers:
            worker.join(timeout=grace)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=STOP_SECONDS)
            if worker.is_alive():  # (SIGTERM blocked or ignored by the user's code)
                worker.kill()
                worker.join()
        for tasks in self._tasks:  # nobody reads them any more: exit must not wait on them
            tasks.cancel_join_thread()
            tasks.close()
        if self._results is not None:
            self._results.close()
        self._workers, self._tasks, self._sent, self._results = [], [], {}, None
