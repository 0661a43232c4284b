"""Time to the first batch with spawned workers over a million paths.

With ``multiprocessing_context="spawn"`` (the default on macOS and Windows) every
worker is a fresh interpreter that imports torch and unpickles the dataset. A
``PathDataset`` keeps its paths in one NumPy bytes array, so what a worker receives
is one buffer, not a million ``str`` objects. Measured from ``iter(loader)`` to the
first batch, for a plain ``DataLoader`` and a ``ChunkedLoader`` with 8 spawned
workers, beside the same ``DataLoader`` over a one-sample ``TensorDataset``: the cost
of starting 8 interpreters with torch on this machine, which no dataset can avoid.

Run: ``python benchmarks/bench_spawn_startup.py [--paths 1000000] [--workers 8]``
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import tempfile
import time
from multiprocessing.reduction import ForkingPickler

import numpy as np
import torch
from common import machine, table
from torch.utils.data import DataLoader, TensorDataset

from torchloader import ChunkedLoader, PathDataset


def first_batch(make) -> float:
    start = time.perf_counter()
    loader = make()
    next(iter(loader))
    seconds = time.perf_counter() - start
    if hasattr(loader, "close"):
        loader.close()
    return seconds


def chunked(ds: PathDataset, workers: int) -> ChunkedLoader:
    return ChunkedLoader(ds, 256, chunk_size=4096, multiprocessing_context="spawn", num_workers=workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(256):  # every path names one of 256 small files: a million paths, few inodes
            files.append(os.path.join(tmp, f"{i:03d}.npy"))
            np.save(files[-1], np.full((3, 8, 8), i, np.uint8))
        ds = PathDataset([files[i % 256] for i in range(args.paths)], np.arange(args.paths) % 10)
        spawn = {"num_workers": args.workers, "multiprocessing_context": "spawn"}
        sent = io.BytesIO()
        ForkingPickler(sent).dump(ds)  # what a spawned worker is sent
        rows = [
            ("pickled PathDataset", f"{len(pickle.dumps(ds)) / 2**20:.1f} MiB", ""),
            ("  as sent to a spawned worker", f"{sent.tell() / 2**10:.1f} KiB", ""),
            (
                "DataLoader(TensorDataset(1 sample))",
                "",
                f"{first_batch(lambda: DataLoader(TensorDataset(torch.zeros(1)), 1, **spawn)):.1f} s",
            ),
            (
                "DataLoader(PathDataset), batch 256",
                "",
                f"{first_batch(lambda: DataLoader(ds, 256, shuffle=True, **spawn)):.1f} s",
            ),
            ("ChunkedLoader(PathDataset), batch 256", "", f"{first_batch(lambda: chunked(ds, args.workers)):.1f} s"),
        ]
        print(machine())
        print(f"{args.paths:,} paths, {args.workers} spawned workers; seconds from iter() to the first batch\n")
        print(table(rows, ("loader", "size", "first batch")))


if __name__ == "__main__":
    main()
