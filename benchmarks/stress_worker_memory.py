"""Forked DataLoader workers over a million paths: PathDataset against a list of str.

The "copy-on-read" problem: a forked worker shares the parent's pages until it
writes to one, and reading a Python object writes to it (its reference count).
A dataset that keeps a million paths as a Python list of ``str`` therefore has
each worker copy the pages of every path it reads, so its unique memory grows
with the samples read until it holds its own copy of all of them.
``PathDataset`` keeps the paths in one NumPy bytes array, which has no per-item
objects to touch; its workers should not grow.

In one run, over the same files, with a plain
``DataLoader(ds, batch_size=256, num_workers=2, shuffle=True)`` (fork):

- ``PathDataset(paths, labels)`` (default reader: ``.npy`` files);
- the baseline: a naive dataset with the paths as a Python list of ``str``
  and the labels as a list of ``int``, reading each file with the same reader.

Every 100,000 samples the main process has received, it reads each worker's
USS (pages only that worker maps) and PSS (shared pages divided among the
processes that map them) from ``/proc/<pid>/smaps_rollup``; the table shows the
mean over the workers. The "0" row is taken when the first batch arrives.
A worker's first full (generation-2) garbage collection writes to the header
of every gc-tracked object it inherited from the parent (modules, functions,
dicts: tens of MiB) and so copies their pages once, whatever the dataset; the
table counts those collections, and ``--gc-freeze`` has each worker call
``gc.freeze()`` first (moving the inherited objects out of the collector's
reach, which writes to no object), which leaves only the copy-on-read effect.
Every batch is checked against its labels (each file holds its label), so the
files are really read.

Data: 1,000 tiny ``.npy`` files (8 x 8 uint8) in a temporary folder, seen
through ``n / 1000`` symlinks to that folder, so the ``n`` paths are all
different strings naming real files, read cheaply from the page cache.

Linux only. Run: ``python benchmarks/stress_worker_memory.py [--n 1000000] [--workers 2] [--gc-freeze]``
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import sys
import tempfile
import time

import numpy as np
import psutil
import torch
from common import machine, table
from torch.utils.data import DataLoader, Dataset

from torchloader import PathDataset
from torchloader.readers.suffix import SuffixReader

BATCH = 256
FILES = 1000
EVERY = 100_000
MiB = 2**20


class ListDataset(Dataset):
    """The naive dataset: paths in a Python list of ``str``, labels in a list of ``int``."""

    def __init__(self, paths: list[str], labels: list[int]) -> None:
        self.paths = paths
        self.labels = labels
        self.reader = SuffixReader()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.reader(self.paths[index]), self.labels[index]


def make_files(root: str, n: int) -> None:
    data = os.path.join(root, "data")
    os.makedirs(data)
    for i in range(FILES):
        np.save(os.path.join(data, f"{i:03d}.npy"), np.full((8, 8), label(i), np.uint8))
    for view in range(-(-n // FILES)):
        os.symlink("data", os.path.join(root, f"v{view:04d}"))


def label(i: int) -> int:
    """The label of path ``i``, also the value its file holds."""
    return i % FILES % 256


def make_paths(root: str, n: int) -> list[str]:
    # One new str object per path, as reading a file list or a CSV gives.
    return [f"{root}/v{i // FILES:04d}/{i % FILES:03d}.npy" for i in range(n)]


def memory(pid: int) -> tuple[int, int]:
    """(USS, PSS) of process ``pid`` in bytes."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Pss", "Private_Clean", "Private_Dirty"):
                fields[name] = int(rest.split()[0]) * 1024
    return fields["Private_Clean"] + fields["Private_Dirty"], fields["Pss"]


def worker_memory(pids: list[int]) -> tuple[float, float]:
    readings = [memory(pid) for pid in pids]
    return (
        sum(uss for uss, _ in readings) / len(readings),
        sum(pss for _, pss in readings) / len(readings),
    )


class WorkerInit:
    """Counts full garbage collections in the workers; optionally freezes the inherited objects."""

    def __init__(self, freeze: bool) -> None:
        self.freeze = freeze
        self.full_collections = multiprocessing.get_context("fork").Value("i", 0)

    def __call__(self, worker_id: int) -> None:
        if self.freeze:
            gc.freeze()
        gc.callbacks.append(self._count)

    def _count(self, phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            with self.full_collections.get_lock():
                self.full_collections.value += 1


def run(ds: Dataset, workers: int, freeze: bool) -> tuple[list[tuple[int, float, float, int]], float]:
    """Rows (mark, USS, PSS, full collections so far) every EVERY samples of one
    shuffled epoch, and the epoch's seconds."""
    n = len(ds)
    init = WorkerInit(freeze)
    # fork explicitly: the Linux default up to Python 3.13, not from 3.14 on.
    loader = DataLoader(
        ds, batch_size=BATCH, num_workers=workers, shuffle=True, multiprocessing_context="fork", worker_init_fn=init
    )
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    start = time.perf_counter()
    batches = iter(loader)  # starts the workers
    pids = [p.pid for p in me.children() if p.pid not in before]
    assert len(pids) == workers, f"expected {workers} new worker processes, found {len(pids)}"
    marks = list(range(0, n + 1, EVERY)) + ([n] if n % EVERY else [])
    rows, read = [], 0
    for xb, yb in batches:
        if not torch.equal(xb[:, 0, 0].long(), yb):
            raise AssertionError("a batch does not hold its files' contents")
        read += len(yb)
        while marks and read >= marks[0]:
            rows.append((marks.pop(0), *worker_memory(pids), init.full_collections.value))
    seconds = time.perf_counter() - start
    del batches, loader
    return rows, seconds


def mib(x: float) -> str:
    return f"{round(x / MiB, 1) + 0.0:.1f}"  # + 0.0: no "-0.0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="paths (samples) in the dataset")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gc-freeze", action="store_true", help="each worker calls gc.freeze() before reading")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("needs Linux (/proc/<pid>/smaps_rollup and fork)")
    n = args.n
    with tempfile.TemporaryDirectory() as root:
        make_files(root, n)
        paths = make_paths(root, n)
        ds = PathDataset(paths, [label(i) for i in range(n)])
        del paths
        gc.collect()
        path_rows, path_seconds = run(ds, args.workers, args.gc_freeze)
        array_bytes = ds.paths.nbytes
        del ds
        gc.collect()

        paths = make_paths(root, n)
        list_bytes = sys.getsizeof(paths) + sum(sys.getsizeof(p) for p in paths)
        baseline = ListDataset(paths, [label(i) for i in range(n)])
        del paths
        gc.collect()
        list_rows, list_seconds = run(baseline, args.workers, args.gc_freeze)

    rows, previous = [], None
    for (mark, p_uss, p_pss, p_gc), (_, l_uss, l_pss, l_gc) in zip(path_rows, list_rows):
        grow = ("", "") if previous is None else (mib(p_uss - previous[0]), mib(l_uss - previous[1]))
        rows.append((f"{mark:,}", mib(p_uss), mib(p_pss), grow[0], p_gc, mib(l_uss), mib(l_pss), grow[1], l_gc))
        previous = (p_uss, l_uss)
    steps = (path_rows[-1][0] - path_rows[0][0]) / EVERY
    rows.append(
        (
            "growth, first row to last",
            mib(path_rows[-1][1] - path_rows[0][1]),
            mib(path_rows[-1][2] - path_rows[0][2]),
            "",
            "",
            mib(list_rows[-1][1] - list_rows[0][1]),
            mib(list_rows[-1][2] - list_rows[0][2]),
            "",
            "",
        )
    )
    rows.append(
        (
            f"growth per {EVERY:,} samples (mean)",
            mib((path_rows[-1][1] - path_rows[0][1]) / steps),
            mib((path_rows[-1][2] - path_rows[0][2]) / steps),
            "",
            "",
            mib((list_rows[-1][1] - list_rows[0][1]) / steps),
            mib((list_rows[-1][2] - list_rows[0][2]) / steps),
            "",
            "",
        )
    )
    print(machine())
    print(
        f"{n:,} paths, {FILES:,} .npy files of 8x8 uint8, batch {BATCH}, shuffled, "
        f"{args.workers} forked workers{', gc.freeze() in each worker' if args.gc_freeze else ''}; "
        f"MiB per worker (mean over the workers); growth: USS since the row above; "
        f"full gc: generation-2 collections in all workers so far"
    )
    print(f"paths as PathDataset's bytes array: {mib(array_bytes)} MiB; as a list of str: {mib(list_bytes)} MiB")
    print(f"one epoch: PathDataset {path_seconds:.1f} s, list of str {list_seconds:.1f} s\n")
    print(
        table(
            rows,
            (
                "samples read",
                "PathDataset USS",
                "PathDataset PSS",
                "PathDataset growth",
                "full gc",
                "list of str USS",
                "list of str PSS",
                "list of str growth",
                "full gc",
            ),
        )
    )


if __name__ == "__main__":
    main()
