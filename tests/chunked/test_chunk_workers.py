"""Tests for torchloader/chunked/_workers.py: worker processes filling shared-memory chunks."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest
import torch
from helpers import IGNORE_FORK_WARNING, deadline, wait_until

from torchloader import PathDataset, PreloadedDataset, SampleLoadError
from torchloader.chunked._workers import ProcessFiller, _portable

pytestmark = IGNORE_FORK_WARNING


class Slow:
    """Sample ``i`` is ``(full((3,), i + 1), i)`` after ``delay`` seconds; ``exit_at``
    ends the worker process that reads it with exit code 3."""

    def __init__(self, n, delay=0.0, exit_at=None):
        self.n, self.delay, self.exit_at = n, delay, exit_at

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if index == self.exit_at:
            os._exit(3)
        time.sleep(self.delay)
        return torch.full((3,), index + 1, dtype=torch.int32), index


def npy_dataset(folder, n, bad=None):
    """``n`` small .npy files; ``bad``: the index of a file that is not an image at all."""
    paths = []
    for i in range(n):
        path = folder / f"{i}.npy"
        np.save(path, np.full((2, 3), i, dtype=np.uint8))
        paths.append(str(path))
    if bad is not None:
        paths[bad] = str(folder / "bad.png")
        (folder / "bad.png").write_bytes(b"not a png")
    return PathDataset(paths, [i % 3 for i in range(n)])


@contextlib.contextmanager
def started(ds, workers=2):
    filler = ProcessFiller(ds, workers)
    filler.start()
    try:
        yield filler
    finally:
        filler.close()


def _buffer(filler, n):
    return filler.layout.allocate(n, pin=False, shared=True)


def test_workers_fill_a_shuffled_chunk_like_reading_it_in_order(tmp_path):
    ds = npy_dataset(tmp_path, 12)
    indices = np.random.default_rng(1).permutation(12)[:9]
    with started(ds) as filler, deadline(30):
        buffer = _buffer(filler, 10)
        filler.fill(buffer, indices, threading.Event())

        assert torch.equal(buffer.x[:9], torch.stack([ds[i][0] for i in indices]))
        assert buffer.y[:9].tolist() == [i % 3 for i in indices]


def test_workers_are_named_daemons_that_end_on_close(tmp_path):
    with started(npy_dataset(tmp_path, 4)) as filler:
        workers = list(filler._workers)
        assert [w.name for w in workers] == ["torchloader-chunk-worker-0", "torchloader-chunk-worker-1"]
        assert all(w.daemon and w.is_alive() for w in workers)
    assert not any(w.is_alive() for w in workers)
    assert filler._workers == []


def test_close_is_safe_before_start_and_twice(tmp_path):
    def nothing_held():
        return (filler._workers, filler._tasks, filler._sent, filler._results) == ([], [], {}, None)

    filler = ProcessFiller(npy_dataset(tmp_path, 2), 2)
    filler.close()
    assert nothing_held()
    filler.start()  # a close before start leaves it startable
    workers = list(filler._workers)
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    filler.close()
    assert [w.exitcode for w in workers] == [0, 0]  # ended by the stop message, not terminated
    assert nothing_held()
    filler.close()
    assert nothing_held()


def test_a_dataset_with_gather_is_filled_in_process_without_workers():
    ds = PreloadedDataset(torch.arange(10) * 2, torch.arange(10))
    filler = ProcessFiller(ds, 2)
    filler.start()
    buffer = filler.layout.allocate(3, pin=False)

    filler.fill(buffer, np.array([4, 0, 9]), threading.Event())

    assert filler._workers == [] and filler.batched
    assert buffer.x.tolist() == [8, 0, 18] and buffer.y.tolist() == [4, 0, 9]


def test_a_bad_file_raises_sample_load_error_with_index_and_path(tmp_path):
    ds = npy_dataset(tmp_path, 6, bad=4)
    bad = str(tmp_path / "bad.png")
    with started(ds) as filler, deadline(30):
        with pytest.raises(SampleLoadError) as info:
            filler.fill(_buffer(filler, 6), np.arange(6), threading.Event())
        assert str(info.value) == (
            f"could not load sample 4 from '{bad}': UnidentifiedImageError: cannot identify image file '{bad}'"
        )
        assert (info.value.index, info.value.path) == (4, bad)

        # the workers live on: the next chunk loads
        buffer = _buffer(filler, 3)
        filler.fill(buffer, np.array([0, 1, 2]), threading.Event())
        assert buffer.x[:, 0, 0].tolist() == [0, 1, 2]


class _Unpicklable(Exception):
    def __init__(self):
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def test_an_error_that_cannot_be_pickled_is_sent_as_its_text():
    error = _portable(_Unpicklable())
    assert type(error) is SampleLoadError
    assert str(error) == "_Unpicklable: holds a lock"
    picklable = SampleLoadError("x", index=1, path="p")
    assert _portable(picklable) is picklable
    assert pickle.loads(pickle.dumps(error)).args == error.args


def _wait_dead(process):
    process.join(timeout=10)
    assert not process.is_alive()


class _IgnoresSigterm(Slow):
    """Sample ``slow_at``: ignores SIGTERM, says so in ``marker``, and takes a minute."""

    def __init__(self, n, slow_at, marker):
        super().__init__(n)
        self.slow_at, self.marker = slow_at, marker

    def __getitem__(self, index):
        if index == self.slow_at:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open(self.marker, "w").close()
            time.sleep(60)
        return super().__getitem__(index)


def test_close_kills_a_worker_that_ignores_sigterm(monkeypatch, tmp_path):
    from torchloader.chunked import _workers

    monkeypatch.setattr(_workers, "STOP_SECONDS", 0.2)
    marker = tmp_path / "slow"
    filler = ProcessFiller(_IgnoresSigterm(8, slow_at=5, marker=str(marker)), 2)  # 4-7: worker 1
    filler.start()
    slow = filler._workers[1]

    def load():  # (it fails once close() has ended the workers under it)
        with contextlib.suppress(Exception):
            filler.fill(_buffer(filler, 8), np.arange(8), threading.Event())

    loading = threading.Thread(target=load, daemon=True)
    with deadline(30):
        loading.start()
        wait_until(marker.exists, seconds=20)  # worker 1 is in its long sample, SIGTERM ignored
        filler.close()  # its stop message and SIGTERM go unheeded: SIGKILL after 2 x 0.2 s
        loading.join()
    assert slow.exitcode == -signal.SIGKILL and filler._workers == []


def test_a_killed_worker_is_reported_not_waited_for():
    with started(Slow(40)) as filler, deadline(30):
        worker = filler._workers[1]
        os.kill(worker.pid, signal.SIGKILL)
        _wait_dead(worker)
        survivor = filler._workers[0]

        with pytest.raises(RuntimeError) as info:
            filler.fill(_buffer(filler, 20), np.arange(20), threading.Event())

        assert str(info.value) == (
            f"ChunkedLoader worker 1 (pid {worker.pid}) died with signal SIGKILL while loading "
            f"a chunk; if it was killed for memory, lower ram_budget or num_workers"
        )
        assert filler._workers == [] and not survivor.is_alive()


def test_a_worker_that_exits_is_reported_with_its_exit_code():
    with started(Slow(40, exit_at=15)) as filler, deadline(30):
        pids = [w.pid for w in filler._workers]
        with pytest.raises(RuntimeError) as info:
            filler.fill(_buffer(filler, 20), np.arange(20), threading.Event())
        assert str(info.value).startswith(f"ChunkedLoader worker 1 (pid {pids[1]}) died with exit code 3 ")


def test_after_a_worker_died_start_gives_new_workers_that_fill():
    with started(Slow(40)) as filler, deadline(30):
        os.kill(filler._workers[0].pid, signal.SIGKILL)
        _wait_dead(filler._workers[0])
        buffer = _buffer(filler, 4)
        with pytest.raises(RuntimeError, match="died with signal SIGKILL"):
            filler.fill(buffer, np.arange(4), threading.Event())

        filler.start()
        filler.fill(buffer, np.array([7, 5, 3, 1]), threading.Event())
        assert buffer.y.tolist() == [7, 5, 3, 1]


def test_once_stopped_the_workers_read_nothing_more():
    with started(Slow(40)) as filler, deadline(30):
        buffer = _buffer(filler, 8)
        buffer.x.zero_()
        stop = threading.Event()
        stop.set()

        filler.fill(buffer, np.arange(8), stop)

        assert not buffer.x.any()


def test_a_stop_cuts_the_chunk_short_and_the_next_fill_is_whole():
    with started(Slow(40, delay=0.05)) as filler, deadline(30):
        buffer = _buffer(filler, 40)
        buffer.x.zero_()
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()

        filler.fill(buffer, np.arange(40), stop)  # 20 samples a worker: 1 s unstopped

        filled = int((buffer.x[:, 0] != 0).sum())
        assert 0 < filled < 40
        filler.fill(buffer, np.arange(8), threading.Event())
        assert buffer.x[:8, 0].tolist() == list(range(1, 9))


def test_workers_forget_buffers_the_pool_dropped_and_get_them_again(tmp_path):
    ds = npy_dataset(tmp_path, 6)
    with started(ds) as filler, deadline(30):
        first, second = _buffer(filler, 3), _buffer(filler, 3)
        filler.fill(first, np.array([0, 1, 2]), threading.Event())
        filler.fill(second, np.array([3, 4, 5]), threading.Event())
        assert set(filler._sent) == {id(first), id(second)}

        filler.forget([second])
        assert set(filler._sent) == {id(second)}

        filler.fill(first, np.array([5, 4, 3]), threading.Event())  # sent again
        assert first.x[:, 0, 0].tolist() == [5, 4, 3]


def test_spawned_workers_get_the_dataset_buffers_and_stop_flag_by_pickle(tmp_path):
    """The default start method is not fork everywhere (macOS; Linux from Python 3.14)."""
    ds = npy_dataset(tmp_path, 8)
    filler = ProcessFiller(ds, 1, multiprocessing_context="spawn")
    try:
        with deadline(60):
            filler.start()
            buffer = _buffer(filler, 8)
            filler.fill(buffer, np.arange(8)[::-1].copy(), threading.Event())
            assert buffer.x[:, 0, 0].tolist() == [7, 6, 5, 4, 3, 2, 1, 0]
            stop = threading.Event()
            stop.set()
            buffer.x.zero_()
            filler.fill(buffer, np.arange(8), stop)  # the flag reaches the worker
    finally:
        filler.close()
    assert not buffer.x.any()
