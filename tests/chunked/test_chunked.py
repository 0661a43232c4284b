"""Tests for torchloader/chunked/loader.py: ChunkedLoader, RAM chunks served as batches.

The invariant behind most of them: a ChunkedLoader yields exactly the batches of
``DataLoader(dataset, batch_size, sampler=ChunkedSampler(...), drop_last=...)``,
epoch after epoch, only read chunk-wise.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import signal
import threading
import time
import weakref

import numpy as np
import psutil
import pytest
import torch
from helpers import IGNORE_FORK_WARNING, deadline, wait_until
from PIL import Image
from torch.utils.data import DataLoader

from torchloader import (
    ChunkedLoader,
    ChunkedSampler,
    PathDataset,
    PreloadedDataset,
    SampleLoadError,
)
from torchloader._core.units import parse_bytes

pytestmark = IGNORE_FORK_WARNING

MiB = 2**20


# --- helpers ------------------------------------------------------------------------


def preloaded(n, labels=True):
    """Sample ``i``: x = a 2 x 3 int32 block of ``6i .. 6i+5``, y = ``10 i``."""
    x = torch.arange(n * 6, dtype=torch.int32).reshape(n, 2, 3)
    return PreloadedDataset(x, torch.arange(n) * 10 if labels else None)


SAMPLE_BYTES = 6 * 4 + 8  # x int32 (2, 3) and y int64


def image_files(folder, n, kinds=("png", "jpg", "npy"), labels=True):
    """``n`` real 6 x 8 RGB files, PNG, JPEG and .npy (C x H x W) in turn."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        pixels = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        path = folder / f"{i:03d}.{kind}"
        if kind == "npy":
            np.save(path, pixels.transpose(2, 0, 1).copy())
        else:
            Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return PathDataset(paths, [i % 4 for i in range(n)] if labels else None)


def npy_files(folder, n, shape=(2, 3), odd=None):
    """``n`` uint8 .npy files, file ``i`` full of ``i``; ``odd``: {index: other shape}."""
    paths = []
    for i in range(n):
        path = folder / f"{i}.npy"
        np.save(path, np.full((odd or {}).get(i, shape), i, dtype=np.uint8))
        paths.append(str(path))
    return PathDataset(paths, [i % 3 for i in range(n)])


class Slow:
    """Sample ``i`` is ``(full((3,), i), i)`` after ``delay`` seconds."""

    def __init__(self, n, delay):
        self.n, self.delay = n, delay

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        time.sleep(self.delay)
        return torch.full((3,), index, dtype=torch.int32), index


def _parts(batch):
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)


def _clone(batch):
    parts = tuple(t.clone() for t in _parts(batch))
    return parts if isinstance(batch, (tuple, list)) else parts[0]


def run(loader, epochs=1, clone=True):
    """The batches of ``epochs`` passes, one list per epoch."""
    return [[_clone(b) if clone else b for b in loader] for _ in range(epochs)]


def reference(ds, batch_size, epochs=1, *, drop_last=False, **sampler_args):
    """What a plain DataLoader over a ChunkedSampler yields, epoch after epoch."""
    sampler = ChunkedSampler(ds, **sampler_args)
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    return run(loader, epochs), len(loader)


def assert_same(got, want):
    assert len(got) == len(want), (len(got), len(want))
    for k, (g, w) in enumerate(zip(got, want)):
        g, w = _parts(g), _parts(w)
        assert len(g) == len(w), f"batch {k}"
        for a, b in zip(g, w):
            assert (a.dtype, a.shape) == (b.dtype, b.shape), f"batch {k}"
            assert torch.equal(a, b), f"batch {k}"


def assert_same_epochs(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_same(g, w)


def library_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("torchloader-")]


@pytest.fixture
def closing():
    """Loaders made through this are closed after the test, even when it fails."""
    made = []

    def make(*args, **kwargs):
        made.append(ChunkedLoader(*args, **kwargs))
        return made[-1]

    yield make
    for loader in made:
        loader.close()
    assert library_threads() == []


# --- the same batches as DataLoader(sampler=ChunkedSampler) -----------------------

GRID = [  # n, batch_size, chunk_size: chunks smaller, larger, equal, not multiples
    (1, 1, 1),
    (1, 4, 3),
    (7, 3, 2),
    (7, 2, 7),
    (7, 8, 3),
    (7, 3, 50),
    (24, 8, 8),
    (24, 8, 5),
    (24, 5, 8),
    (24, 3, 24),
    (24, 7, 10),
    (25, 4, 6),
    (25, 6, 4),
]


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("n", "batch_size", "chunk_size"), GRID)
def test_batches_equal_a_dataloader_over_chunked_sampler(closing, n, batch_size, chunk_size, drop_last):
    ds = preloaded(n)
    loader = closing(ds, batch_size, chunk_size=chunk_size, seed=5, drop_last=drop_last)

    want, length = reference(ds, batch_size, 3, drop_last=drop_last, chunk_size=chunk_size, seed=5)

    assert_same_epochs(run(loader, 3), want)
    assert len(loader) == length == len(want[0])
    assert loader.epoch == 3


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("chunk_size", [3, 5])
@pytest.mark.parametrize("n", [10, 25])
def test_each_rank_gets_the_batches_of_its_sampler(closing, n, chunk_size, drop_last):
    ds = preloaded(n)
    for rank in range(3):
        loader = closing(ds, 4, chunk_size=chunk_size, seed=1, drop_last=drop_last, num_replicas=3, rank=rank)
        want, length = reference(
            ds, 4, 2, drop_last=drop_last, chunk_size=chunk_size, seed=1, num_replicas=3, rank=rank
        )
        assert_same_epochs(run(loader, 2), want)
        assert len(loader) == length


def test_without_shuffle_batches_follow_the_index_order(closing):
    ds = preloaded(10)
    loader = closing(ds, 3, chunk_size=4, shuffle=False)
    want, _ = reference(ds, 3, 2, chunk_size=4, shuffle=False)

    got = run(loader, 2)

    assert_same_epochs(got, want)
    assert [y.tolist() for _, y in got[1]] == [[0, 10, 20], [30, 40, 50], [60, 70, 80], [90]]


def test_a_dataset_without_labels_gives_tensor_batches(closing):
    ds = preloaded(11, labels=False)
    want, _ = reference(ds, 4, 2, chunk_size=3, seed=2)
    got = run(closing(ds, 4, chunk_size=3, seed=2), 2)
    assert_same_epochs(got, want)
    assert isinstance(got[0][0], torch.Tensor)


PATH_WORKERS = [("thread", 0), ("thread", 1), ("thread", 2), ("process", 1), ("process", 2)]


@pytest.mark.parametrize(("worker_type", "num_workers"), PATH_WORKERS)
def test_image_and_npy_files_give_the_dataloader_batches(tmp_path, closing, worker_type, num_workers):
    ds = image_files(tmp_path, 13)
    loader = closing(ds, 4, chunk_size=5, seed=3, worker_type=worker_type, num_workers=num_workers)
    want, _ = reference(ds, 4, 2, chunk_size=5, seed=3)

    with deadline(60):
        got = run(loader, 2)

    assert_same_epochs(got, want)
    assert got[0][0][0].shape == (4, 3, 6, 8) and got[0][0][0].dtype == torch.uint8


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_files_on_one_rank_of_two_with_drop_last(tmp_path, closing, worker_type):
    ds = image_files(tmp_path, 11, labels=False)
    loader = closing(
        ds, 2, chunk_size=3, seed=4, drop_last=True, num_replicas=2, rank=1, worker_type=worker_type, num_workers=2
    )
    want, _ = reference(ds, 2, 2, drop_last=True, chunk_size=3, seed=4, num_replicas=2, rank=1)
    with deadline(60):
        assert_same_epochs(run(loader, 2), want)


def test_set_epoch_gives_that_epochs_batches(closing):
    ds = preloaded(20)
    loader = closing(ds, 4, chunk_size=6, seed=9)
    sampler = ChunkedSampler(ds, chunk_size=6, seed=9)
    sampler.set_epoch(5)
    want = run(DataLoader(ds, batch_size=4, sampler=sampler), 2)

    loader.set_epoch(5)

    assert_same_epochs(run(loader, 2), want)  # 5, then 6
    assert loader.epoch == 7


def test_transform_and_a_cpu_device_apply_to_each_batch(closing):
    ds = preloaded(10)

    def half(batch):
        x, y = batch
        return x.float() / 2, y

    want, _ = reference(ds, 4, 1, chunk_size=3)
    want = [[half(b) for b in want[0]]]
    assert_same_epochs(run(closing(ds, 4, chunk_size=3, transform=half)), want)
    assert_same_epochs(run(closing(ds, 4, chunk_size=3, transform=half, device="cpu")), want)


# --- batches are views of the chunk buffers: NOTE [ reusing a chunk buffer ] ------------


@pytest.mark.parametrize(("worker_type", "num_workers"), [("thread", 0), ("thread", 2), ("process", 2)])
def test_batches_kept_alive_uncloned_stay_intact(tmp_path, closing, worker_type, num_workers):
    ds = npy_files(tmp_path, 22)
    loader = closing(ds, 4, chunk_size=6, seed=7, worker_type=worker_type, num_workers=num_workers)
    want, _ = reference(ds, 4, 2, chunk_size=6, seed=7)

    with deadline(60):
        kept = run(loader, 2, clone=False)  # every batch of two epochs, never copied

    assert_same_epochs(kept, want)
    chunk_bytes = 6 * loader.layout.nbytes
    assert loader.stats.peak_buffer_bytes > 2 * chunk_bytes  # fresh buffers, not overwritten ones


def test_kept_gather_batches_stay_intact(closing):
    ds = preloaded(30)
    want, _ = reference(ds, 4, 3, chunk_size=8, seed=1)
    assert_same_epochs(run(closing(ds, 4, chunk_size=8, seed=1), 3, clone=False), want)


def test_a_training_loop_uses_two_chunk_buffers_only(closing):
    """The loop variable keeps the last batch of an epoch alive through the evaluation
    after it; the next epoch's loading must wait for it, not take a third buffer."""
    loader = closing(preloaded(24), 4, chunk_size=5, seed=3)
    for _ in range(3):
        for batch in loader:  # noqa: B007 - the last batch stays alive, as a training loop's does
            pass
        wait_until(lambda: loader._producer._consumer_busy())  # the next epoch is loading
        time.sleep(0.1)  # "evaluation", longer than the pool's patience
    del batch

    assert loader.stats.peak_buffer_bytes == 2 * 5 * SAMPLE_BYTES


# --- errors -----------------------------------------------------------------------


def test_samples_of_another_shape_are_refused_naming_both(tmp_path, closing):
    ds = npy_files(tmp_path, 10, odd={3: (3, 2)})
    loader = closing(ds, 4, chunk_size=8, shuffle=False)
    with pytest.raises(ValueError) as info, deadline(30):
        run(loader)
    assert str(info.value) == (
        "sample 3 has x (3, 2) torch.uint8 but sample 0 has x (2, 3) "
        "torch.uint8; samples must share one shape and dtype to be stacked "
        "into one tensor. Resize or crop them to one size in the dataset's transform"
        " (images: decode=RandomResizedCrop(size) or CenterCrop(size) crops them as they decode)"
    )


@pytest.mark.parametrize(("worker_type", "num_workers"), [("thread", 2), ("process", 2)])
def test_samples_of_another_shape_are_refused_by_workers_too(tmp_path, closing, worker_type, num_workers):
    ds = npy_files(tmp_path, 10, odd={6: (4,)})
    loader = closing(ds, 4, chunk_size=10, worker_type=worker_type, num_workers=num_workers)
    expected = r"^sample 6 has x \(4,\) torch.uint8 but sample 0 "
    with pytest.raises(ValueError, match=expected):
        with deadline(30):
            run(loader)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_empty_dataset_is_refused_as_empty_not_as_a_bad_sample(tmp_path, num_workers):
    preloaded = PreloadedDataset(torch.empty(0, 3))
    no_paths = PathDataset([])

    with pytest.raises(ValueError) as info:
        ChunkedLoader(preloaded, batch_size=4, num_workers=num_workers)
    assert str(info.value) == (
        "dataset PreloadedDataset(x=(0, 3) torch.float32, y=None) is empty (0 samples); "
        "a ChunkedLoader needs at least one sample"
    )
    with pytest.raises(ValueError, match=r"^dataset PathDataset\(n=0, .* is empty \(0 samples\)"):
        ChunkedLoader(no_paths, batch_size=4, chunk_size=8, num_workers=num_workers, worker_type="thread")
    # the sampler alone refuses it too, as a ValueError saying it is empty
    with pytest.raises(ValueError, match=r"^data_source is empty; a sampler needs at least one sample$"):
        ChunkedSampler(preloaded, chunk_size=4)


def test_a_ram_budget_below_two_batches_is_refused_with_the_numbers():
    with pytest.raises(ValueError) as info:
        ChunkedLoader(preloaded(100), 8, ram_budget=500)
    assert str(info.value) == (
        "ram_budget=500 bytes (500 B) cannot hold 2 chunks of one batch and the workers' "
        "reserve: a sample takes 32 bytes, a batch of 8 takes 256 bytes; the smallest budget "
        "that works is ram_budget=585 (585 B)"
    )
    ChunkedLoader(preloaded(100), 8, ram_budget=585).close()  # which works


def test_the_reserve_is_an_eighth_of_the_budget_at_most_12_mib_per_process():
    ds = PreloadedDataset(torch.empty(2000, 2**20, dtype=torch.uint8))  # 1 MiB samples, never touched
    MiB = 2**20

    def chunk(budget, **kwargs):
        loader = ChunkedLoader(ds, 2, ram_budget=budget * MiB, **kwargs)
        loader.close()
        return loader.chunk_size

    assert chunk(64) == (64 - 8) // 2  # an eighth
    assert chunk(1024) == (1024 - 12) // 2  # 12 MiB for the main process
    assert chunk(1024, num_workers=2) == (1024 - 36) // 2  # and for each worker process
    assert chunk(1024, num_workers=2, worker_type="thread") == (1024 - 12) // 2


@pytest.mark.parametrize(("budget", "chunk_size"), [(585, 8), ("1KiB", 8), (1000, 8), ("2KiB", 24), ("1GiB", 100)])
def test_the_ram_budget_holds_two_chunks(closing, budget, chunk_size):
    loader = closing(preloaded(100), 8, ram_budget=budget)
    assert loader.chunk_size == chunk_size  # whole batches (15 fit: 8), at most the data set
    assert_same_epochs(run(loader), reference(preloaded(100), 8, chunk_size=chunk_size)[0])
    assert loader.stats.peak_buffer_bytes <= parse_bytes(budget)


def test_an_unreadable_ram_budget_names_it():
    with pytest.raises(ValueError) as info:
        ChunkedLoader(preloaded(10), 2, ram_budget="lots")
    assert str(info.value) == ("ram_budget='lots': cannot read 'lots' as a size; write e.g. '8GiB', '512MB' or 1048576")


@pytest.mark.parametrize(("chunk_size", "ram_budget"), [(None, None), (4, "1MiB")])
def test_exactly_one_of_chunk_size_and_ram_budget(chunk_size, ram_budget):
    with pytest.raises(ValueError) as info:
        ChunkedLoader(preloaded(10), 2, chunk_size=chunk_size, ram_budget=ram_budget)
    assert str(info.value) == (
        f"give exactly one of chunk_size (samples) or ram_budget (bytes) "
        f"(got chunk_size={chunk_size!r}, ram_budget={ram_budget!r})"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1 (got batch_size=0)"),
        ({"batch_size": "4"}, TypeError, "batch_size must be an int (got '4', a str)"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1 (got chunk_size=0)"),
        ({"num_workers": -1}, ValueError, "num_workers must be >= 0 (got num_workers=-1)"),
        ({"worker_type": "fork"}, ValueError, "worker_type must be 'process' or 'thread' (got 'fork')"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, error, message):
    args = {"batch_size": 2, "chunk_size": 4, **kwargs}
    with pytest.raises(error) as info:
        ChunkedLoader(preloaded(10), args.pop("batch_size"), **args)
    assert str(info.value) == message


@pytest.mark.skipif(torch.cuda.is_available(), reason="pinning works with CUDA")
def test_pin_memory_without_cuda_is_refused_at_construction():
    with pytest.raises(ValueError) as info:
        ChunkedLoader(preloaded(10), 2, chunk_size=4, pin_memory=True)
    assert str(info.value) == (
        "pin_memory=True needs CUDA, and torch.cuda.is_available() is False here; "
        "leave pin_memory=None to pin only where CUDA is present"
    )


@pytest.mark.parametrize(("worker_type", "num_workers"), [("thread", 0), ("thread", 2), ("process", 2)])
def test_an_unreadable_file_raises_sample_load_error_naming_it(tmp_path, closing, worker_type, num_workers):
    paths = [ds_path for ds_path in map(npy_files(tmp_path, 9).path, range(9))]
    bad = paths[4] = str(tmp_path / "bad.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    ds = PathDataset(paths, [0] * 9)
    loader = closing(ds, 2, chunk_size=3, seed=1, worker_type=worker_type, num_workers=num_workers)

    with pytest.raises(SampleLoadError) as info, deadline(30):
        run(loader)

    assert str(info.value) == (
        f"could not load sample 4 from '{bad}': UnidentifiedImageError: cannot identify image file '{bad}'"
    )
    assert (info.value.index, info.value.path) == (4, bad)


# --- workers that die, loops that end early -----------------------------------------


def test_a_killed_worker_process_is_reported_within_seconds(closing):
    loader = closing(Slow(400, delay=0.02), 4, chunk_size=20, num_workers=2, shuffle=False)
    with deadline(30):
        batches = iter(loader)
        next(batches)
        time.sleep(0.1)  # the next chunk is loading now
        victim = loader.filler._workers[0]
        assert victim.pid in [p.pid for p in psutil.Process().children()]
        os.kill(victim.pid, signal.SIGKILL)

        with pytest.raises(RuntimeError) as info:
            for _ in batches:
                pass

    assert str(info.value) == (
        f"ChunkedLoader worker 0 (pid {victim.pid}) died with signal SIGKILL while loading a "
        f"chunk; if it was killed for memory, lower ram_budget or num_workers"
    )
    assert loader.filler._workers == []  # the other worker was ended too
    assert library_threads() == []


@pytest.mark.parametrize("how", ["break", "exception"])
@pytest.mark.parametrize(("worker_type", "num_workers"), [("thread", 2), ("process", 2)])
def test_leaving_the_loop_early_then_close_leaves_nothing_behind(closing, how, worker_type, num_workers):
    shm_before = set(os.listdir("/dev/shm"))
    ds = Slow(60, delay=0.002)
    loader = closing(ds, 4, chunk_size=10, seed=1, worker_type=worker_type, num_workers=num_workers)
    with deadline(30):
        if how == "break":
            for k, _ in enumerate(loader):
                if k == 3:
                    break
        else:
            with pytest.raises(KeyError):
                for batch in loader:  # noqa: B007 - the last batch stays alive, as a training loop's does
                    raise KeyError("in the training step")
        assert not [t for t in threading.enumerate() if t.name == "torchloader-chunks"]

        again = run(loader)  # a new pass is the next epoch, whole (as with a DataLoader)
        workers = list(getattr(loader.filler, "_workers", []))
        loader.close()

    assert_same_epochs(again, reference(ds, 4, 2, chunk_size=10, seed=1)[0][1:])
    assert len(workers) == (2 if worker_type == "process" else 0)
    assert not any(w.is_alive() for w in workers)
    assert library_threads() == []
    ours = [str(pid) for pid in [os.getpid(), *(w.pid for w in workers)]]  # torch_PID_..., not the other tests'
    assert {name for name in set(os.listdir("/dev/shm")) - shm_before if any(pid in name for pid in ours)} == set()


def test_a_loader_dropped_without_close_stops_loading():
    loader = ChunkedLoader(preloaded(20), 4, chunk_size=5)
    for batch in loader:  # noqa: B007 - the producer goes on into the next epoch; batch stays alive
        pass
    del batch
    thread = loader._producer._thread
    gone = weakref.ref(loader)

    del loader
    gc.collect()

    assert gone() is None
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_close_twice_and_iterate_after_close(closing):
    ds = preloaded(9)
    loader = closing(ds, 2, chunk_size=4, worker_type="thread", num_workers=2)
    loader.close()
    loader.close()
    assert_same_epochs(run(loader), reference(ds, 2, chunk_size=4)[0])


# --- state_dict / load_state_dict ------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, 6])
@pytest.mark.parametrize(("n", "chunk_size"), [(24, 8), (22, 5)])  # boundaries on and inside batches
def test_resume_after_k_batches_gives_the_rest_of_the_run(closing, n, chunk_size, k):
    ds = preloaded(n)

    def make():
        return closing(ds, 4, chunk_size=chunk_size, seed=2)

    full = run(make(), 3)
    interrupted = make()
    batches = iter(interrupted)
    for _ in range(k):
        next(batches)
    state = json.loads(json.dumps(interrupted.state_dict()))  # plain data
    del batches

    resumed = make()
    resumed.load_state_dict(state)

    if 4 * k < n:
        assert (state["epoch"], state["consumed"]) == (0, 4 * k)
        assert_same_epochs(run(resumed, 2), [full[0][k:], full[1]])
    else:  # the epoch's last batch was handed out: the rest is the next epoch
        assert (state["epoch"], state["consumed"]) == (1, 0)
        assert_same_epochs(run(resumed, 2), full[1:])


def test_resume_in_a_later_epoch(closing):
    ds = preloaded(20)
    full = run(closing(ds, 3, chunk_size=6, seed=4), 3)
    loader = closing(ds, 3, chunk_size=6, seed=4)
    run(loader)
    batches = iter(loader)
    next(batches), next(batches)
    state = loader.state_dict()
    del batches

    resumed = closing(ds, 3, chunk_size=6, seed=4)
    resumed.load_state_dict(state)

    assert (state["epoch"], state["consumed"]) == (1, 6)
    assert_same_epochs(run(resumed, 2), [full[1][2:], full[2]])


def test_resume_with_worker_processes(tmp_path, closing):
    ds = npy_files(tmp_path, 17)

    def make():
        return closing(ds, 4, chunk_size=5, seed=6, num_workers=2)

    with deadline(60):
        full = run(make(), 1)
        interrupted = make()
        batches = iter(interrupted)
        for _ in range(3):
            next(batches)
        state = interrupted.state_dict()
        del batches
        interrupted.close()
        resumed = make()
        resumed.load_state_dict(state)
        assert_same_epochs(run(resumed), [full[0][3:]])


def test_state_dict_after_an_epoch_and_after_loading_one(closing):
    loader = closing(preloaded(10), 4, chunk_size=3)
    assert (loader.state_dict()["epoch"], loader.state_dict()["consumed"]) == (0, 0)
    run(loader)
    state = loader.state_dict()
    assert (state["epoch"], state["consumed"], state["batch_size"]) == (1, 0, 4)

    other = closing(preloaded(10), 4, chunk_size=3)
    other.load_state_dict({**state, "consumed": 8})
    assert other.state_dict() == {**state, "consumed": 8}  # before iterating, too


def test_set_epoch_after_an_interrupted_pass_starts_that_epoch_afresh(closing):
    loader = closing(preloaded(10), 2, chunk_size=3)
    for k, _ in enumerate(loader):
        if k == 1:
            break
    assert loader.state_dict()["consumed"] == 4

    loader.set_epoch(3)

    assert (loader.state_dict()["epoch"], loader.state_dict()["consumed"]) == (3, 0)


def test_a_state_of_another_batch_size_or_seed_is_refused(closing):
    state = closing(preloaded(10), 4, chunk_size=3).state_dict()
    with pytest.raises(ValueError) as info:
        closing(preloaded(10), 2, chunk_size=3).load_state_dict(state)
    assert str(info.value) == ("cannot resume: the saved state has batch_size=4 but this loader has batch_size=2")
    with pytest.raises(ValueError) as info:
        closing(preloaded(10), 4, chunk_size=3, seed=1).load_state_dict(state)
    assert str(info.value) == (
        "cannot resume: the saved state has seed=0 but this sampler has seed=1; build the "
        "sampler with the same arguments as the run that saved it"
    )


# --- stats and loading ahead ------------------------------------------------------------


def test_stats_count_exactly_what_was_loaded(closing):
    loader = closing(preloaded(24), 4, chunk_size=5, seed=1)  # chunks of 5, 5, 5, 5, 4
    for batch in loader:  # noqa: B007 - the last batch stays alive until the del
        pass
    del batch
    # the producer goes on with epoch 1 until both buffers are full, then waits
    wait_until(lambda: loader._producer._queue.qsize() == 2)
    next_epoch = [len(c) for c in loader.sampler.chunks()]

    stats = loader.stats
    assert stats.chunks_loaded == 5 + 2
    assert stats.samples_loaded == 24 + next_epoch[0] + next_epoch[1]
    assert stats.bytes_loaded == stats.samples_loaded * SAMPLE_BYTES
    assert stats.peak_buffer_bytes == 2 * 5 * SAMPLE_BYTES
    assert stats.load_seconds >= 0 and stats.first_chunk_wait_seconds >= 0
    assert stats.wait_seconds >= stats.first_chunk_wait_seconds


@pytest.mark.parametrize(("worker_type", "num_workers"), [("thread", 2), ("process", 2)])
def test_stats_with_workers_count_every_sample_once(tmp_path, closing, worker_type, num_workers):
    ds = npy_files(tmp_path, 12)
    loader = closing(ds, 3, chunk_size=12, worker_type=worker_type, num_workers=num_workers)
    with deadline(30):
        run(loader)
        wait_until(lambda: loader._producer._queue.qsize() == 2)
    assert loader.stats.chunks_loaded == 3  # one chunk per epoch: this one, the next two
    assert loader.stats.samples_loaded == 36
    assert loader.stats.bytes_loaded == 36 * (6 + 8)
    assert loader.stats.peak_buffer_bytes == 2 * 12 * (6 + 8)


def test_the_next_epoch_starts_loading_before_it_is_asked_for(closing):
    ds = preloaded(24)
    loader = closing(ds, 4, chunk_size=8, seed=2)
    run(loader)
    producer = loader._producer

    wait_until(lambda: loader.stats.chunks_loaded > 3)  # epoch 0 has 3 chunks; nobody asked

    seen = set()
    epoch1 = [_clone(b) for b in loader if not seen.add(id(loader._producer))]
    assert seen == {id(producer)}  # the same producer serves epoch 1
    assert_same(epoch1, reference(ds, 4, 2, chunk_size=8, seed=2)[0][1])


def test_a_jump_to_another_epoch_replaces_the_producer(closing):
    ds = preloaded(24)
    loader = closing(ds, 4, chunk_size=8, seed=2)
    run(loader)
    producer = loader._producer
    loader.set_epoch(4)
    got = run(loader)
    assert loader._producer is not producer
    sampler = ChunkedSampler(ds, chunk_size=8, seed=2)
    sampler.set_epoch(4)
    assert_same_epochs(got, run(DataLoader(ds, batch_size=4, sampler=sampler)))


def test_repr_shows_the_configuration(closing):
    loader = closing(preloaded(10), 4, chunk_size=5)
    assert repr(loader) == (
        "ChunkedLoader(PreloadedDataset, batch_size=4, chunk_size=5, num_workers=0, device=None, epoch=0)"
    )


# --- RAM stays under the budget ----------------------------------------------------------

# What the process tree holds above its baseline besides the two chunk buffers
# (PSS summed over the tree: each shared page counted once). Measured with this
# loader over a tiny data set (16 files, ram_budget="16MiB": 19-37 MiB; with 0
# workers 2-16 MiB) and over this one (21-30 MiB), it is made of:
#   - 2 forked workers, ~5.5 MiB of their own each (they freeze the garbage
#     collector; see NOTE [ forked workers and the garbage collector ]);
#   - pages of the main process that it writes after the fork, and so copies:
#     10-25 MiB, and its whole object heap (~40 MiB here) if a full garbage
#     collection runs in it meanwhile (forced mid-epoch: 66-68 MiB in all);
#   - the consumer's copies of a batch that straddles two chunks (<= 2 x 4 MiB);
#   - allocator slack.
# None of it grows with the data set: the bound stays at half of its size.
OVERHEAD = 96 * MiB


def _tree_memory():
    """(rss, pss, uss) summed over this process and its children."""
    me = psutil.Process()
    total = np.zeros(3, dtype=np.int64)
    for process in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            info = process.memory_full_info()
            total += (info.rss, info.pss, info.uss)
    return total


class _Peak(threading.Thread):
    """Samples the tree's memory every 20 ms and keeps the peak of each figure."""

    def __init__(self):
        super().__init__(daemon=True)
        self.done, self.peak, self.samples = threading.Event(), np.zeros(3, dtype=np.int64), 0

    def run(self):
        while not self.done.is_set():
            self.peak = np.maximum(self.peak, _tree_memory())
            self.samples += 1
            time.sleep(0.02)


@pytest.mark.slow
def test_ram_stays_under_the_budget_for_data_eight_times_larger(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    count, budget = 256, 32 * MiB  # 256 files of 1 MiB
    paths = []
    for i in range(count):
        paths.append(str(folder / f"{i}.npy"))
        np.save(paths[-1], np.full((1024, 1024), i % 251, dtype=np.uint8))
    ds = PathDataset(paths, [i % 2 for i in range(count)])
    loader = ChunkedLoader(ds, 4, ram_budget=budget, num_workers=2, seed=0)
    try:
        gc.collect()
        baseline = _tree_memory()
        peak = _Peak()
        peak.start()
        seen = 0
        with deadline(120):
            for x, _ in loader:
                seen += len(x) * int(x.max() >= 0)  # read the batch (max: no big temporary)
                time.sleep(0.03)  # the training step
        peak.done.set()
        peak.join()
    finally:
        loader.close()
        shutil.rmtree(folder)

    rss, pss, uss = (peak.peak - baseline) / MiB
    print(
        f"\ndata {count} MiB, ram_budget {budget / MiB:.0f} MiB, chunk {loader.chunk_size} samples, "
        f"chunk buffers at peak {loader.stats.peak_buffer_bytes / MiB:.1f} MiB; baseline PSS "
        f"{baseline[1] / MiB:.0f} MiB; peak above baseline: PSS {pss:.1f} MiB, RSS {rss:.1f} MiB "
        f"(shared pages counted in every process), USS {uss:.1f} MiB; {peak.samples} samples"
    )
    assert seen == count
    assert loader.stats.peak_buffer_bytes <= budget
    assert peak.samples >= 10
    assert (peak.peak[1] - baseline[1]) < budget + OVERHEAD


def test_block_size_reaches_the_sampler_and_batches_still_match_the_reference():
    ds = PreloadedDataset(torch.arange(200) * 3, torch.arange(200))
    loader = ChunkedLoader(ds, 16, chunk_size=40, block_size=8, seed=2)
    reference = DataLoader(ds, batch_size=16, sampler=ChunkedSampler(ds, chunk_size=40, block_size=8, seed=2))
    assert loader.sampler.block_size == 8
    assert [yb.tolist() for _, yb in loader] == [yb.tolist() for _, yb in reference]


def test_shuffle_quality_reports_label_entropy_and_spread_of_an_epoch():
    labels = torch.arange(400) // 40  # 10 classes stored in order
    ds = PreloadedDataset(torch.zeros(400, 2), labels)
    plain = ChunkedLoader(ds, 20, chunk_size=40).shuffle_quality()
    mixed = ChunkedLoader(ds, 20, chunk_size=40, block_size=4).shuffle_quality()
    assert plain.label_entropy < 0.2 and mixed.label_entropy > 0.7
    assert plain.spread < mixed.spread
    no_labels = ChunkedLoader(PreloadedDataset(torch.zeros(400, 2)), 20, chunk_size=40)
    assert no_labels.shuffle_quality(epoch=3).label_entropy is None
