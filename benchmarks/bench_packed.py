"""Pack once, then read without decoding: pack speed and PackedDataset against the bounds.

In one run, over the same 128x128 JPEGs (crops of scikit-learn's two photos):

- pack throughput with 1 and with 2 workers against the single-core decode rate
  (ImageReader over every file, warm page cache, taken before and after the
  packs) x the workers;
- samples/s of one shuffled epoch (batch 256) from the packed shards, warm page
  cache: ``PackedDataset.gather`` per batch, ``ChunkedLoader`` over it, a plain
  ``DataLoader`` over it, against the in-RAM gather bound
  (``PreloadedDataset.batches`` over the same pixels) and against a plain
  ``DataLoader(PathDataset)`` over the JPEGs with 2 workers;
- cold page cache (the shard files evicted with ``posix_fadvise(DONTNEED)``, which
  needs no root) against the sequential read rate of the same files, also cold.

Run: ``python benchmarks/bench_packed.py [--n 6000]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from bench_chunked import BATCH, make_folder
from common import machine, table
from torch.utils.data import DataLoader

from torchloader import ChunkedLoader, ImageReader, PackedDataset, PreloadedDataset, pack
from torchloader._core.units import format_bytes


def evict(paths: list[str]) -> None:
    """Drop these files' pages from the page cache (no root needed)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_rate(paths: list[str]) -> float:
    """Bytes/s of reading the files front to back."""
    total, start = 0, time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while block := f.read(1 << 22):
                total += len(block)
    return total / (time.perf_counter() - start)


def single_core_decode_rate(folder) -> float:
    """Images/s of ``ImageReader`` over every file of ``folder`` in this process (after a
    warm-up over the first 500: the page cache holds the files, as it does for pack)."""
    reader = ImageReader()
    for i in range(min(500, len(folder))):
        reader(folder.path(i))
    start = time.perf_counter()
    for i in range(len(folder)):
        reader(folder.path(i))
    return len(folder) / (time.perf_counter() - start)


def epoch_seconds(batches) -> float:
    start = time.perf_counter()
    for _ in batches:
        pass
    return time.perf_counter() - start


def gather_epoch(ds: PackedDataset, epoch: int):
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(epoch))
    return (ds.gather(idx.numpy()) for idx in order.split(BATCH))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        src, dst = os.path.join(root, "jpegs"), os.path.join(root, "packed")
        folder = make_folder(src, args.n)
        decode_rate = single_core_decode_rate(folder)
        one = pack(src, dst + "-1", num_workers=1, progress=False)
        summary = pack(src, dst, num_workers=2, progress=False)
        decode_rate = (decode_rate + single_core_decode_rate(folder)) / 2
        ds = PackedDataset(dst)
        shards = [os.path.join(dst, s.file) for s in ds.manifest.shards]
        bound_ds = PreloadedDataset(*ds.gather(range(len(ds))))
        n = len(ds)
        rows = []

        def add(name, seconds, base=None):
            rows.append((name, n / seconds, base))

        for cache in ("warm", "cold"):

            def run(batches_fn):
                batches_fn()  # warm-up (and for "warm", loads the page cache)
                if cache == "cold":
                    evict(shards)
                return epoch_seconds(batches_fn())

            add(f"PackedDataset.gather per batch ({cache})", run(lambda: gather_epoch(ds, 1)))
            chunked = ChunkedLoader(ds, BATCH, ram_budget="64MiB", block_size=16)
            add(f"ChunkedLoader(PackedDataset, 64MiB, block_size=16) ({cache})", run(lambda: chunked))
            chunked.close()
            plain = DataLoader(ds, batch_size=BATCH, shuffle=True)
            add(f"DataLoader(PackedDataset), 0 workers ({cache})", run(lambda: plain))
        bound = epoch_seconds(bound_ds.batches(BATCH))
        bound = min(bound, epoch_seconds(bound_ds.batches(BATCH, epoch=1)))
        jpeg = DataLoader(folder, batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=True)
        epoch_seconds(jpeg)
        jpeg_rate = n / epoch_seconds(jpeg)
        evict(shards)
        cold_read = read_rate(shards)
        warm_read = read_rate(shards)
        sample_bytes = ds.sample_nbytes
    print(machine())
    print(f"{n} JPEGs 128x128 -> {len(shards)} shard(s), {format_bytes(summary.bytes)}; batch {BATCH}\n")
    print(
        f"single-core decode (ImageReader, file read included) {decode_rate:,.0f}/s; pack, 1 worker: "
        f"{one.samples_per_s:,.0f} images/s -> {one.samples_per_s / decode_rate:.2f}x; 2 workers: "
        f"{summary.samples_per_s:,.0f} images/s -> {summary.samples_per_s / (2 * decode_rate):.2f}x "
        f"of {2 * decode_rate:,.0f}/s\n"
    )
    bound_rate = n / bound
    body = [("in-RAM gather bound (PreloadedDataset.batches)", f"{bound_rate:,.0f}", "1.00x", "", "")]
    body.append(
        (
            "DataLoader(PathDataset) over the JPEGs, 2 workers",
            f"{jpeg_rate:,.0f}",
            f"{jpeg_rate / bound_rate:.2f}x",
            "",
            "",
        )
    )
    for name, rate, _ in rows:
        cold = "(cold)" in name
        read = cold_read if cold else warm_read
        body.append(
            (
                name,
                f"{rate:,.0f}",
                f"{rate / bound_rate:.2f}x",
                f"{rate / jpeg_rate:.1f}x",
                f"{rate * sample_bytes / read:.2f}x of {format_bytes(read)}/s" if cold else "",
            )
        )
    print(table(body, ("mode", "samples/s", "vs bound", "vs JPEG DataLoader", "vs sequential read (cold)")))


if __name__ == "__main__":
    main()
