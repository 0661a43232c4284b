"""Forked DataLoader workers reading a PathDataset do not copy its paths.

The "copy-on-read" problem: a forked worker shares the parent's pages until it
writes to one, and reading a Python object writes its reference count, so a
worker reading paths from a Python list of ``str`` copies the page of each path
it reads. PathDataset keeps the paths in one NumPy bytes array instead. The
list dataset is the control: under the same conditions its workers do grow,
so the measurement can fail (benchmarks/stress_worker_memory.py does the same
at a million paths).
"""

import gc
import os
import sys

import numpy as np
import psutil
import pytest
import torch
from helpers import IGNORE_FORK_WARNING
from torch.utils.data import DataLoader, Dataset

from torchloader import PathDataset
from torchloader.readers.suffix import SuffixReader

N = 200_000  # paths; as str objects 15-20 MiB (with the tmp path's length)
FILES = 1000  # real files behind them, seen through N / FILES symlinked folders
READ = 20_000  # samples read after the first batch, ~10,000 per worker
BATCH = 256
WARM = 4  # batches before the first measure: two from each worker
MiB = 2**20

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and USS as on Linux"),
    IGNORE_FORK_WARNING,
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
]


def label(i):
    """The label of path ``i``, also the value its file holds."""
    return i % FILES % 256


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("paths")
    os.makedirs(root / "data")
    for i in range(FILES):
        np.save(root / "data" / f"{i:03d}.npy", np.full((8, 8), label(i), np.uint8))
    for view in range(N // FILES):
        os.symlink("data", root / f"v{view:03d}")
    return str(root)


def make_paths(root):
    # One new str object per path (all different strings), as a file list gives.
    return [f"{root}/v{i // FILES:03d}/{i % FILES:03d}.npy" for i in range(N)]


class ListDataset(Dataset):
    """The naive dataset: paths in a Python list of str, labels in a list of int."""

    def __init__(self, paths, labels):
        self.paths, self.labels, self.reader = paths, labels, SuffixReader()

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        return self.reader(self.paths[index]), self.labels[index]


def freeze_gc(worker_id):
    # A worker's first full collection writes to the header of every gc-tracked
    # object it inherited (tens of MiB under pytest) and so copies their pages
    # once, whatever the dataset holds; gc.freeze() moves them out of the
    # collector's reach without touching them, leaving what reading samples does.
    gc.freeze()


def worker_growth(ds):
    """Each worker's USS growth (bytes) over READ samples, from its second batch on: batches
    come from the workers in turn, so after WARM batches each has read two (under load, one
    worker's first batch could still be on its way, and its start-up counted as growth)."""
    loader = DataLoader(
        ds, batch_size=BATCH, num_workers=2, shuffle=True, multiprocessing_context="fork", worker_init_fn=freeze_gc
    )
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    batches = iter(loader)  # starts the workers
    workers = [p for p in me.children() if p.pid not in before]
    assert len(workers) == 2
    first, read = None, 0
    for k, (xb, yb) in enumerate(batches, 1):
        assert torch.equal(xb[:, 0, 0].long(), yb)  # the files were really read
        if k == WARM:
            first = [w.memory_full_info().uss for w in workers]
        elif first is not None:
            read += len(yb)
            if read >= READ:
                break
    last = [w.memory_full_info().uss for w in workers]
    del batches  # shuts the workers down
    return [b - a for a, b in zip(first, last)]


def test_path_dataset_workers_do_not_grow_with_the_samples_read(root):
    paths = make_paths(root)
    ds = PathDataset(paths, [label(i) for i in range(N)])
    del paths
    growth = worker_growth(ds)
    # ~0.4 MiB alone, ~0.9 MiB at the end of the whole suite (allocator, batches in flight)
    assert max(growth) < 3 * MiB, f"workers grew {[round(g / MiB, 1) for g in growth]} MiB"


def test_list_of_str_workers_copy_the_paths_they_read(root):
    """The control: the same reading copies 14-17 MiB per worker, most of the 15-20
    MiB of str objects (~40 to a page; a page is copied once any of them is read)."""
    growth = worker_growth(ListDataset(make_paths(root), [label(i) for i in range(N)]))
    assert min(growth) > 6 * MiB, f"workers grew only {[round(g / MiB, 1) for g in growth]} MiB"
