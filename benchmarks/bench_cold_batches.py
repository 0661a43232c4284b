"""``PathDataset`` batches from a cold page cache, with and without the batch read-ahead.

A data set larger than RAM is read from the disk every epoch. This drops the folder's
pages from the page cache (``posix_fadvise(DONTNEED)`` on every file) before each cold
epoch, then reads shuffled batches of 256:

- ``ds[indices]`` in this process (one core, no workers);
- ``DataLoader(ds, batch_size=256, shuffle=True, num_workers=2)`` (fork workers, started
  for each epoch, so each epoch's setting reaches them).

Each is timed with the read-ahead (``readers/_read_ahead.py``: the batch's next files
opened and advised ``WILLNEED``) and without it (``readers._files.ADVISE = None``, which
turns it off), each first in turn, cold and warm; rows are medians of ``--repeats`` epochs.

Run: ``python benchmarks/bench_cold_batches.py --data /tmp/pdl20 [--n 8192] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from bench_packed import evict  # the files' pages dropped from the page cache
from common import machine, table
from torch.utils.data import DataLoader

from torchloader import PathDataset
from torchloader.readers import _files

BATCH = 256


def in_process(ds: PathDataset, order: np.ndarray) -> None:
    for start in range(0, len(order), BATCH):
        ds[order[start : start + BATCH]]


def with_workers(ds: PathDataset, order: np.ndarray) -> None:
    subset = torch.utils.data.Subset(ds, order.tolist())
    loader = DataLoader(subset, batch_size=BATCH, num_workers=2, multiprocessing_context="fork")
    for _ in loader:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="an image folder (root/<class>/<file>)")
    parser.add_argument("--n", type=int, default=8192, help="samples an epoch (a shuffled subset)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = PathDataset.from_folder(args.data)
    paths = [ds.path(i) for i in range(len(ds))]
    advise = _files.ADVISE
    times: dict[tuple[str, str, str], list[float]] = {}
    try:
        for repeat in range(args.repeats):
            order = np.random.default_rng(repeat).permutation(len(ds))[: args.n]
            for how, run in (("ds[indices], this process", in_process), ("DataLoader, 2 workers", with_workers)):
                for ahead in ("read-ahead", "none")[:: 1 if repeat % 2 == 0 else -1]:  # each first in turn
                    _files.ADVISE = advise if ahead == "read-ahead" else None
                    for state in ("cold", "warm"):
                        if state == "cold":
                            evict(paths)
                        start = time.perf_counter()
                        run(ds, order)
                        times.setdefault((how, state, ahead), []).append(time.perf_counter() - start)
    finally:
        _files.ADVISE = advise
    print(machine())
    print(f"{args.n} of the {len(ds)} files of {args.data}, batches of {BATCH}; median of {args.repeats} epochs\n")
    rows = []
    for (how, state, ahead), ts in times.items():
        if ahead == "none":
            continue
        on, off = args.n / statistics.median(ts), args.n / statistics.median(times[(how, state, "none")])
        rows.append((how, state, f"{off:,.0f}", f"{on:,.0f}", f"{on / off:.2f}x"))
    print(table(rows, ("reader", "page cache", "without read-ahead", "with read-ahead", "gain")))


if __name__ == "__main__":
    main()
