"""The one line users write, ``DataLoader(ds, batch_size=256, shuffle=True, num_workers=N)``,
against the same DataLoader reading one sample at a time and against the physical bounds.

torch's DataLoader hands ``ds.__getitems__`` each batch's indices; torchloader's datasets
answer with one batched read (JPEGs decoded into one buffer, one gather of rows). The
"one by one" rows are the same dataset with ``__getitems__`` switched off, as torch reads
any other dataset, measured in the same run. Bounds:

- JPEG folders: the libjpeg-turbo decode rate of one core (``ImageReader``, files in the
  page cache) times the workers;
- tensors in RAM: one ``torch.index_select`` per batch into a reused buffer;
- 28x28: ``TensorDataset`` with the default collate, the baseline the issue names.

Run: ``python benchmarks/bench_plain_dataloader.py [--n 4000] [--data DIR]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from common import epoch_rate, machine, table
from make_data import make_set
from torch.utils.data import DataLoader, TensorDataset

from torchloader import ChunkedLoader, ImageReader, PackedDataset, PathDataset, PreloadedDataset, pack

BATCH = 256


def one_by_one(ds):
    """``ds`` read as torch reads a dataset without ``__getitems__``."""
    kind = type(ds)
    plain = type(f"OneByOne{kind.__name__}", (kind,), {"__getitems__": None})
    copy = plain.__new__(plain)
    copy.__dict__.update(ds.__dict__)
    return copy


def plain(ds, workers):
    options = {"num_workers": workers, "persistent_workers": workers > 0}
    if workers:
        options["multiprocessing_context"] = "fork"
    return lambda: DataLoader(ds, batch_size=BATCH, shuffle=True, **options)


def decode_rate(paths: list[str]) -> float:
    reader = ImageReader()
    for path in paths[:200]:
        reader(path)
    start = time.perf_counter()
    for path in paths:
        reader(path)
    return len(paths) / (time.perf_counter() - start)


def index_select_rate(x: torch.Tensor, buffers: int = 1) -> float:
    """Batches gathered by ``index_select`` into ``buffers`` reused outputs in turn. One
    buffer is the bound; a loader hands out a new batch while the last one is still held
    (the loop variable), so it writes into at least two: ``buffers=2`` is that bound."""
    outs = [torch.ones((BATCH, *x.shape[1:]), dtype=x.dtype) for _ in range(buffers)]
    best = float("inf")
    for _ in range(5):
        order = torch.randperm(len(x))
        start = time.perf_counter()
        for k, a in enumerate(range(0, len(x) - BATCH + 1, BATCH)):
            torch.index_select(x, 0, order[a : a + BATCH], out=outs[k % buffers])
        best = min(best, time.perf_counter() - start)
    return (len(x) // BATCH * BATCH) / best


def rate(make, n):
    loaders = {}

    def epoch():
        if "loader" not in loaders:
            loaders["loader"] = make()
        return loaders["loader"]

    return epoch_rate(epoch, n)


def jpeg_rows(root: str, n: int) -> list[tuple]:
    ds = PathDataset.from_folder(root)
    per_core = decode_rate([ds.path(i) for i in range(len(ds))])
    rows = [("decode bound, 1 core (ImageReader)", f"{per_core:,.0f}", "1.00x")]
    for workers in (0, 2):
        bound = per_core * max(1, workers)
        ours = rate(plain(ds, workers), n)
        theirs = rate(plain(one_by_one(ds), workers), n)
        rows.append((f"DataLoader(PathDataset), {workers} workers", f"{ours:,.0f}", f"{ours / bound:.2f}x"))
        rows.append(("  the same, one by one", f"{theirs:,.0f}", f"{theirs / bound:.2f}x"))
    chunked = rate(lambda: ChunkedLoader(ds, BATCH, ram_budget="256MiB", num_workers=2), n)
    rows.append(("ChunkedLoader(PathDataset), 2 workers", f"{chunked:,.0f}", f"{chunked / (per_core * 2):.2f}x"))
    return rows


def packed_rows(root: str, dst: str, n: int) -> list[tuple]:
    pack(root, dst, num_workers=2, progress=False)
    ds = PackedDataset(dst)
    x = torch.from_numpy(
        np.concatenate([np.load(os.path.join(dst, s.file), mmap_mode="r") for s in ds.manifest.shards])
    )
    bound = index_select_rate(x)
    rows = [("index_select bound (packed pixels in RAM)", f"{bound:,.0f}", "1.00x")]
    for workers in (0, 2):
        ours = rate(plain(ds, workers), n)
        theirs = rate(plain(one_by_one(ds), workers), n)
        rows.append((f"DataLoader(PackedDataset), {workers} workers", f"{ours:,.0f}", f"{ours / bound:.2f}x"))
        rows.append(("  the same, one by one", f"{theirs:,.0f}", f"{theirs / bound:.2f}x"))
    return rows


def preloaded_rows(n: int) -> list[tuple]:
    rows = []
    for shape in ((3, 128, 128), (1, 28, 28)):
        x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8)
        y = torch.randint(0, 10, (n,))
        bound = index_select_rate(x)
        ds = PreloadedDataset(x, y)
        ours = rate(plain(ds, 0), n)
        theirs = rate(plain(one_by_one(ds), 0), n)
        tensors = rate(plain(TensorDataset(x, y), 0), n)
        size = "x".join(map(str, shape))
        two = index_select_rate(x, buffers=2)
        rows.append((f"index_select bound, {size}", f"{bound:,.0f}", "1.00x"))
        rows.append((f"  the same into 2 buffers in turn, {size}", f"{two:,.0f}", f"{two / bound:.2f}x"))
        rows.append(
            (
                f"DataLoader(PreloadedDataset), {size}",
                f"{ours:,.0f}",
                f"{ours / bound:.2f}x ({ours / tensors:.1f}x TensorDataset)",
            )
        )
        rows.append(("  the same, one by one", f"{theirs:,.0f}", f"{theirs / bound:.2f}x"))
        rows.append((f"  DataLoader(TensorDataset), {size}", f"{tensors:,.0f}", f"{tensors / bound:.2f}x"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="images (and samples in RAM)")
    parser.add_argument("--data", help="keep the JPEGs here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_set(args.data or os.path.join(tmp, "jpegs"), args.n, size=128, grey=False, classes=10)
        print(machine())
        print(f"{args.n} JPEGs 128x128 (in the page cache), batch {BATCH}, shuffled; samples/s, median of 3 epochs\n")
        rows = jpeg_rows(root, args.n) + packed_rows(root, os.path.join(tmp, "packed"), args.n) + preloaded_rows(args.n)
        print(table(rows, ("loader", "samples/s", "vs bound")))


if __name__ == "__main__":
    main()
