"""ChunkedLoader against a plain DataLoader and the in-RAM gather bound, on JPEG files.

In one run, over the same folder of 128x128 JPEGs (random crops of the two
photographs scikit-learn ships, stored sorted by class like an image folder):

- throughput (samples/s, one epoch after a warm-up epoch) of
  ``ChunkedLoader(PathDataset)`` with 0 and 2 process workers, a plain
  ``DataLoader(PathDataset)`` with the same batch size and workers, and the
  bound: ``PreloadedDataset.batches()`` over the decoded images in RAM;
- peak memory of the whole process tree (PSS, so shared pages count once)
  above the baseline, against the RAM budget;
- latency of the first batch of an epoch against a steady-state batch;
- shuffle quality of the chunked order at this budget, of a shuffle buffer of the
  same bytes (WebDataset-style) and of a full shuffle.

Run: ``python benchmarks/bench_chunked.py [--n 6000] [--budget 64MiB]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
from bench_decode import make_jpegs
from common import machine, table
from torch.utils.data import DataLoader

from torchloader import ChunkedLoader, PathDataset, PreloadedDataset
from torchloader._core.units import format_bytes, parse_bytes
from torchloader.order.chunking import epoch_order
from torchloader.order.quality import shuffle_buffer_order, shuffle_quality
from torchloader.tools.bench import Epochs
from torchloader.tools.memory import PeakMemory

BATCH = 256
CLASSES = 10
BLOCK = 16  # samples per contiguous read when a chunk is built from blocks


def make_folder(root: str, n: int) -> PathDataset:
    os.makedirs(root, exist_ok=True)
    paths = make_jpegs(root, n)
    for i, path in enumerate(paths):  # sorted by class, as a class-per-folder tree
        folder = os.path.join(root, f"class{i * CLASSES // n}")
        os.makedirs(folder, exist_ok=True)
        os.replace(path, os.path.join(folder, os.path.basename(path)))
    return PathDataset.from_folder(root)


def timed_epochs(make, n: int, step: float = 0.0) -> tuple[float, list[float], int]:
    """Build a loader with ``make()`` and run two epochs; for the second return
    (samples/s, seconds spent waiting in ``next()`` per batch, peak PSS of the
    process tree over the baseline taken before the loader was built).
    ``step`` simulates a training step per batch (seconds of sleep)."""
    with PeakMemory() as pss:
        loader = make()
        for _ in loader:  # warm-up epoch: starts workers, fills caches
            time.sleep(step)
        waits = []
        batches = iter(loader)
        start = time.perf_counter()
        while True:
            before = time.perf_counter()
            batch = next(batches, None)
            waits.append(time.perf_counter() - before)
            if batch is None:
                break
            time.sleep(step)
        seconds = time.perf_counter() - start
        del batch, batches
        getattr(loader, "close", lambda: None)()
    return n / seconds, waits[:-1], pss.above_baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--budget", default="64MiB")
    args = parser.parse_args()
    budget = parse_bytes(args.budget)
    with tempfile.TemporaryDirectory() as root:
        ds = make_folder(root, args.n)
        rows, boundary = [], []
        bound = PreloadedDataset.from_dataset(ds, progress=False)
        rate, _, _ = timed_epochs(lambda: Epochs(lambda e: bound.batches(BATCH, epoch=e)), args.n)
        rows.append(("in-RAM gather bound (PreloadedDataset.batches)", rate, None))
        for workers in (0, 2):
            rate, _, pss = timed_epochs(
                lambda: DataLoader(
                    ds, batch_size=BATCH, shuffle=True, num_workers=workers, persistent_workers=workers > 0
                ),
                args.n,
            )
            rows.append((f"DataLoader(PathDataset), {workers} workers", rate, pss))
            rate, _, pss = timed_epochs(
                lambda: ChunkedLoader(ds, BATCH, ram_budget=budget, num_workers=workers), args.n
            )
            rows.append((f"ChunkedLoader(PathDataset), {workers} workers", rate, pss))
        rate, _, pss = timed_epochs(
            lambda: ChunkedLoader(ds, BATCH, ram_budget=budget, num_workers=2, block_size=BLOCK), args.n
        )
        rows.append((f"ChunkedLoader(PathDataset, block_size={BLOCK}), 2 workers", rate, pss))
        # Epoch boundary: with a training step that loading keeps up with, the
        # first batch of an epoch should come as fast as any other.
        step = 1.5 * BATCH / rate
        _, waits, _ = timed_epochs(
            lambda: ChunkedLoader(ds, BATCH, ram_budget=budget, num_workers=2), args.n, step=step
        )
        boundary.append((2, step, waits[0], statistics.median(waits[1:]), max(waits[1:])))
        chunk_size = ChunkedLoader(ds, BATCH, ram_budget=budget).chunk_size
        labels = ds.labels
    plain_rates = {r[0].rsplit(", ", 1)[1]: r[1] for r in rows if r[0].startswith("DataLoader")}
    bound_rate = rows[0][1]
    print(machine())
    print(
        f"{args.n} JPEGs 128x128, {CLASSES} classes stored in order; batch {BATCH}; "
        f"ram_budget {format_bytes(budget)} -> chunk_size {chunk_size}\n"
    )
    print(
        table(
            [
                (
                    name,
                    f"{rate:,.0f}",
                    f"{rate / bound_rate:.2f}x",
                    f"{rate / plain_rates[name.rsplit(', ', 1)[1]]:.2f}x" if ", " in name else "",
                    "" if pss is None else format_bytes(pss),
                )
                for name, rate, pss in rows
            ],
            ("mode", "samples/s", "vs bound", "vs DataLoader, same workers", "peak PSS over baseline"),
        )
    )
    print(
        "\nEpoch boundary (epoch 2, ChunkedLoader with 2 workers, a simulated training "
        "step per batch): time spent waiting in next()"
    )
    print(
        table(
            [
                (w, f"{step * 1e3:.0f} ms", f"{first * 1e3:.2f} ms", f"{median * 1e3:.2f} ms", f"{worst * 1e3:.1f} ms")
                for w, step, first, median, worst in boundary
            ],
            ("workers", "training step", "first batch of the epoch", "median batch", "slowest batch"),
        )
    )
    order, _ = epoch_order(len(labels), chunk_size, seed=0)
    block_order, _ = epoch_order(len(labels), chunk_size, seed=0, block_size=BLOCK)
    orders = {
        f"chunked, chunk_size {chunk_size}": order,
        f"chunked, chunk_size {chunk_size}, block_size {BLOCK}": block_order,
        f"shuffle buffer of {chunk_size * 2} samples (same RAM)": shuffle_buffer_order(len(labels), chunk_size * 2),
        "full shuffle": np.random.default_rng(1).permutation(len(labels)),
    }
    print("\nShuffle quality (relative to a full shuffle; data stored sorted by class)")
    print(
        table(
            [
                (name, f"{q.label_entropy:.2f}", f"{q.spread:.3f}")
                for name, q in ((k, shuffle_quality(o, BATCH, labels)) for k, o in orders.items())
            ],
            ("order", "label entropy", "spread"),
        )
    )


if __name__ == "__main__":
    main()
