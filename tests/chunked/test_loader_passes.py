"""How a ChunkedLoader behaves when frameworks and training scripts drive it:
epochs, passes left early, a second iterator, copies and pickles, a device that
is not there, a transform that fails, and batches of a few classes."""

from __future__ import annotations

import copy
import gc
import itertools
import pickle
import re
import threading
import warnings
import weakref

import numpy as np
import pytest
import torch
from helpers import IGNORE_FORK_WARNING
from torch.utils.data import DataLoader

from torchloader import (
    ChunkedLoader,
    ChunkedSampler,
    PathDataset,
    PoorShuffleWarning,
    PreloadedDataset,
    TransformError,
)


def preloaded(n=40, labels=None):
    return PreloadedDataset(torch.arange(n).unsqueeze(1), torch.arange(n) if labels is None else labels)


def labels_of(loader, limit=None):
    """The labels of each batch of a pass, of its first ``limit`` batches (then a break)."""
    return [y.tolist() for _, y in itertools.islice(loader, limit)]


def order(epoch, n=40, batch=4, chunk=8, seed=0):
    sampler = ChunkedSampler(range(n), chunk_size=chunk, seed=seed)
    sampler.set_epoch(epoch)
    flat = sampler.indices().tolist()
    return [flat[i : i + batch] for i in range(0, n, batch)]


@pytest.fixture
def loader():
    made = ChunkedLoader(preloaded(), 4, chunk_size=8, seed=0)
    yield made
    made.close()


# --- epochs -------------------------------------------------------------------------


def test_a_loop_that_stops_after_len_batches_gets_a_new_epoch_each_pass(loader):
    # what Lightning does: len(loader) batches, never the end of the iterator
    for epoch in range(3):
        it = iter(loader)
        got = [next(it)[1].tolist() for _ in range(len(loader))]
        assert got == order(epoch)
        assert loader.state_dict()["epoch"] == epoch + 1 and loader.state_dict()["consumed"] == 0


def test_a_loop_that_breaks_early_and_loops_again_starts_the_next_epoch(loader):
    assert labels_of(loader, limit=2) == order(0)[:2]
    assert labels_of(loader) == order(1)
    assert loader.epoch == 2


@pytest.mark.parametrize("how", ["loader", "sampler"])
def test_set_epoch_on_the_loader_or_its_sampler_picks_the_epoch(loader, how):
    target = loader if how == "loader" else loader.sampler  # Lightning calls loader.sampler.set_epoch
    for epoch in (0, 0, 5, 2):
        target.set_epoch(epoch)
        assert labels_of(loader, limit=3) == order(epoch)[:3]


def test_a_state_saved_mid_epoch_after_a_break_resumes_exactly(loader):
    labels_of(loader, limit=3)
    state = loader.state_dict()
    assert (state["epoch"], state["consumed"]) == (0, 12)
    resumed = ChunkedLoader(preloaded(), 4, chunk_size=8, seed=0)
    resumed.load_state_dict(state)
    assert labels_of(resumed) == order(0)[3:]
    assert labels_of(resumed) == order(1)
    resumed.close()


def test_iter_alone_begins_no_pass(loader):
    for _ in range(3):
        iter(loader)  # frameworks probe with iter()
    assert loader.epoch == 0
    assert labels_of(loader) == order(0)


# --- one pass at a time ---------------------------------------------------------------


def test_a_second_iterator_while_one_runs_is_refused_with_the_reason(loader):
    first = iter(loader)
    next(first)
    message = (
        "this ChunkedLoader is already being iterated (epoch 0, 4 of 40 samples handed out): it "
        "serves one pass at a time from its two chunk buffers. Finish that pass or close its "
        "iterator (it.close(), or let it go) first; for two streams at once, build a second loader"
    )
    with pytest.raises(RuntimeError) as info:
        iter(loader)
    assert str(info.value) == message
    with pytest.raises(RuntimeError, match="already being iterated"):
        list(zip(loader, loader))
    first.close()
    assert labels_of(loader) == order(1)  # the closed pass was epoch 0's


def test_a_finished_pass_left_unclosed_does_not_block_the_next(loader):
    it = iter(loader)
    for _ in range(len(loader)):
        next(it)
    assert labels_of(loader) == order(1)
    del it  # collected after the next pass began: it must not stop that pass's loading
    assert labels_of(loader) == order(2)


# --- copies and pickles ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_loader_copies_as_its_configuration_and_position(loader, how):
    labels_of(loader, limit=2)
    made = pickle.loads(pickle.dumps(loader)) if how == "pickle" else copy.deepcopy(loader)
    try:
        assert made.state_dict() == loader.state_dict()
        assert labels_of(made) == order(0)[2:]
        assert labels_of(made) == order(1)
    finally:
        made.close()


@IGNORE_FORK_WARNING
def test_a_copy_of_a_loader_with_worker_processes_starts_its_own(tmp_path):
    for i in range(12):
        np.save(tmp_path / f"{i}.npy", np.full(2, i, np.int64))
    ds = PathDataset([str(tmp_path / f"{i}.npy") for i in range(12)], list(range(12)))
    context = torch.multiprocessing.get_context("fork")
    original = ChunkedLoader(ds, 3, chunk_size=6, num_workers=2, multiprocessing_context=context)
    made = copy.deepcopy(original)
    try:
        assert [y.tolist() for _, y in made] == [y.tolist() for _, y in original]
        assert made.filler._workers and made.filler._workers[0].pid != original.filler._workers[0].pid
    finally:
        made.close()
        original.close()


# --- a device that is not there ------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_device_cuda_without_cuda_is_refused_at_construction():
    with pytest.raises(ValueError) as info:
        ChunkedLoader(preloaded(), 4, chunk_size=8, device="cuda")
    built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    assert str(info.value) == (
        f"device='cuda' needs a CUDA GPU, but torch.cuda.is_available() is False here (torch "
        f"{torch.__version__}, {built}); use device='cpu' (or None) on this machine, or install a "
        f"CUDA build of torch where a GPU is present"
    )


# --- a transform that fails ---------------------------------------------------------------


def expects_a_pil_image(img):
    raise TypeError(f"img should be PIL Image. Got {type(img)}")  # torchvision's words


@IGNORE_FORK_WARNING
@pytest.mark.parametrize(("worker_type", "num_workers"), [("thread", 0), ("thread", 2), ("process", 2)])
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_failing_transform_is_reported_as_the_transforms_never_as_a_bad_file(
    tmp_path, worker_type, num_workers, on_error
):
    for i in range(8):
        np.save(tmp_path / f"{i}.npy", np.zeros((3, 4, 4), np.uint8))
    paths = [str(tmp_path / f"{i}.npy") for i in range(8)]
    ds = PathDataset(paths, [0] * 8, on_error=on_error)
    loader = ChunkedLoader(ds, 4, chunk_size=4, shuffle=False, num_workers=num_workers, worker_type=worker_type)
    ds.transform = expects_a_pil_image  # after the layout was taken, so the error comes from a chunk
    loader.filler.dataset.transform = expects_a_pil_image
    try:
        with pytest.raises(TransformError) as info:
            list(loader)
    finally:
        loader.close()
    assert re.fullmatch(
        r"the transform expects_a_pil_image failed on sample \d \(read from '.*\d\.npy'\), given a "
        r"torch\.uint8 tensor of shape \(3, 4, 4\): TypeError: img should be PIL Image\. Got "
        r"<class 'torch\.Tensor'>",
        str(info.value),
    ), str(info.value)
    assert len(ds.errors) == 0  # not counted as an unreadable file


# --- batches of a few classes ----------------------------------------------------------------


def sorted_by_class(n=2000, classes=10):
    return preloaded(n, labels=torch.arange(n) // (n // classes))


def test_batches_of_a_few_classes_are_warned_about_once_with_the_figure_and_the_fix():
    loader = ChunkedLoader(sorted_by_class(), 32, chunk_size=128)
    with pytest.warns(PoorShuffleWarning) as warned:
        labels_of(loader)
        labels_of(loader)
    assert len(warned) == 1
    entropy = loader.shuffle_quality(0).label_entropy
    message = str(warned[0].message)
    assert f"label entropy is {entropy:.2f} of a full shuffle's" in message
    assert "block_size=" in message and "ram_budget" in message
    loader.close()


@pytest.mark.parametrize("options", [{"block_size": 4}, {"chunk_size": 2000}, {"shuffle": False}])
def test_well_mixed_or_unshuffled_batches_are_not_warned_about(options):
    args = {"chunk_size": 256, **options}
    loader = ChunkedLoader(sorted_by_class(), 32, **args)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PoorShuffleWarning)
        labels_of(loader)
    loader.close()


def test_a_plain_dataloader_with_a_chunked_sampler_follows_the_same_epochs():
    ds = preloaded()
    sampler = ChunkedSampler(ds, chunk_size=8, seed=0)
    loader = DataLoader(ds, batch_size=4, sampler=sampler)
    assert labels_of(loader, limit=2) == order(0)[:2]
    assert labels_of(loader) == order(1)  # a new pass after a break: the next epoch


def test_a_loader_nobody_holds_is_freed_at_once_with_its_loading_thread():
    loader = ChunkedLoader(preloaded(), 4, chunk_size=8)
    labels_of(loader)  # leaves a finished pass and a producer loading the next epoch
    labels_of(loader, limit=1)
    freed = weakref.ref(loader)
    gc.disable()  # no cycle collector: reference counting alone must free it
    try:
        del loader
        assert freed() is None
    finally:
        gc.enable()
    assert not [t for t in threading.enumerate() if t.name == "torchloader-chunks"]


def test_a_sampler_asked_for_its_length_from_the_top_of_a_thread_answers():
    sampler = ChunkedSampler(range(10), chunk_size=4)
    lengths = []
    worker = threading.Thread(target=lambda: lengths.append(len(sampler)))
    worker.start()
    worker.join()
    assert lengths == [10]
