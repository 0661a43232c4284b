"""Random augmentation: fresh for every sample, and a pure function of (seed, epoch, index).

One image file listed 64 times goes through a transform that draws from all
three global generators (torch, NumPy, Python); every loader, with any number
and kind of workers, must give 64 distinct augmentations (forked workers that
start from one state gave half of them twice), and the same ones for the same
seed and epoch whatever the workers.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from helpers import IGNORE_FORK_WARNING

from torchloader import ChunkedLoader, PathDataset
from torchloader._core.randomness import reading_epoch, sample_seed, seeded

N = 64
BATCH = 8


def augment(x: torch.Tensor) -> torch.Tensor:
    """A random crop offset (torch), a flip (NumPy) and a brightness step (random)."""
    top, left = (int(v) for v in torch.randint(0, 9, (2,)))
    crop = x[:, top : top + 8, left : left + 8]
    if np.random.rand() < 0.5:
        crop = crop.flip(-1)
    return (crop.int() + random.randrange(40)).clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def same_image(tmp_path_factory):
    """A dataset of one 16 x 16 image, N times; labels are the sample indices."""
    path = tmp_path_factory.mktemp("one") / "x.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 200, (3, 16, 16), dtype=np.uint8))
    return PathDataset([str(path)] * N, list(range(N)), transform=augment)


def _by_index(batches) -> dict[int, bytes]:
    out = {}
    for x, y in batches:
        for xi, yi in zip(x, y.tolist()):
            out[yi] = xi.contiguous().numpy().tobytes()
    return out


def _epochs(make, epochs=2):
    loader = make()
    try:
        return [_by_index(loader) for _ in range(epochs)]
    finally:
        getattr(loader, "close", lambda: None)()


LOADERS = {
    "ChunkedLoader, 0 workers": lambda ds: ChunkedLoader(ds, BATCH, chunk_size=16, seed=5),
    "ChunkedLoader, 2 threads": lambda ds: ChunkedLoader(
        ds, BATCH, chunk_size=16, seed=5, num_workers=2, worker_type="thread"
    ),
    # three worker counts and both start methods; spawned workers are the dear ones (an
    # interpreter importing torch each), so the larger count is forked
    "ChunkedLoader, 3 forked processes": lambda ds: ChunkedLoader(
        ds, BATCH, chunk_size=16, seed=5, num_workers=3, multiprocessing_context="fork"
    ),
    "ChunkedLoader, 2 spawned processes": lambda ds: ChunkedLoader(
        ds, BATCH, chunk_size=16, seed=5, num_workers=2, multiprocessing_context="spawn"
    ),
    "ds.dataloader(), 0 workers": lambda ds: ds.dataloader(BATCH, seed=5),
    "ds.dataloader(), 2 forked workers": lambda ds: ds.dataloader(
        BATCH, seed=5, num_workers=2, multiprocessing_context="fork"
    ),
}


@pytest.fixture(scope="module")
def augmented(same_image):
    return {name: _epochs(lambda: make(same_image)) for name, make in LOADERS.items()}


@IGNORE_FORK_WARNING
@pytest.mark.parametrize("name", list(LOADERS))
def test_every_sample_is_augmented_afresh(augmented, name):
    for epoch in augmented[name]:
        assert sorted(epoch) == list(range(N))
        assert len(set(epoch.values())) >= N - 2  # 9 x 9 offsets x 2 flips x 40 steps: a rare equal pair


@IGNORE_FORK_WARNING
@pytest.mark.parametrize("name", list(LOADERS))
def test_augmentations_do_not_depend_on_the_workers(augmented, name):
    reference = augmented["ChunkedLoader, 0 workers"]
    if name.startswith("ds.dataloader"):  # another order, the same (seed, epoch, index) -> pixels
        reference = augmented["ds.dataloader(), 0 workers"]
    assert augmented[name] == reference


def test_another_epoch_or_seed_augments_differently(augmented, same_image):
    first, second = augmented["ChunkedLoader, 0 workers"]
    assert sum(first[i] == second[i] for i in range(N)) <= 2
    other_seed = _epochs(lambda: ChunkedLoader(same_image, BATCH, chunk_size=16, seed=6), epochs=1)[0]
    assert sum(first[i] == other_seed[i] for i in range(N)) <= 2


def test_a_chunked_loader_and_ds_dataloader_augment_a_sample_alike(augmented):
    # both seed sample i of epoch e from (seed, e, i): only the order differs
    assert augmented["ChunkedLoader, 0 workers"] == augmented["ds.dataloader(), 0 workers"]


def test_the_training_loops_torch_generator_is_left_as_it_was(same_image):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    loader = ChunkedLoader(same_image, BATCH, chunk_size=16, seed=5)
    for _ in loader:  # 0 workers: the transforms run on the loading thread, in this process
        pass
    loader.close()
    assert torch.equal(torch.rand(3), expected)


def test_the_numpy_and_python_generators_go_on_from_the_users_state(same_image):
    def after(seed):
        np.random.seed(seed)
        random.seed(seed)
        for _ in same_image.dataloader(BATCH, seed=5):
            pass
        return np.random.rand(), random.random()

    assert after(1) == after(1)
    assert after(1) != after(2)  # a function of the user's state, not of the last sample's


def test_seeded_is_unseeded_outside_a_loader_and_seeded_inside():
    draw = lambda _: torch.rand(1).item()  # noqa: E731
    assert seeded(draw, None, 3) != seeded(draw, None, 3)  # ds[i] by hand: the generators as they are
    with reading_epoch(7, 2):
        a, b = seeded(draw, None, 3), seeded(draw, None, 3)
        c = seeded(draw, None, 4)
        d = seeded(draw, None, 3, stream=1)
    assert a == b and len({a, c, d}) == 3


def test_sample_seeds_differ_for_each_part_of_the_key():
    seeds = {sample_seed(s, e, i, k) for s in range(3) for e in range(3) for i in range(50) for k in range(2)}
    assert len(seeds) == 3 * 3 * 50 * 2
    assert all(0 <= s < 2**64 for s in seeds)


@IGNORE_FORK_WARNING
def test_a_plain_dataloader_still_draws_fresh_randomness_in_each_worker(same_image):
    from torch.utils.data import DataLoader

    loader = DataLoader(same_image, batch_size=BATCH, shuffle=True, num_workers=2, multiprocessing_context="fork")
    assert len(set(_by_index(loader).values())) >= N - 2
