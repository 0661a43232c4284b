"""PreloadedDataset against the in-RAM gather bound and a default DataLoader.

For each sample shape, on one tensor in RAM, in one run:

- bound: a bare ``torch.index_select`` loop over a fresh ``torch.randperm`` each epoch
  (no Python per sample);
- ``x[idx]``: the same loop with advanced indexing;
- ``ds.batches()``: the library's own iterator (no DataLoader);
- ``ds.dataloader()`` with 0 and 2 workers: a torch DataLoader, one gather per batch,
  as the README documents it;
- default collate: ``DataLoader(ds, batch_size=256, shuffle=True)``, i.e.
  256 ``__getitem__`` calls and a ``torch.stack`` per batch.

Run: ``python benchmarks/bench_preloaded.py [--n-large 20000] [--n-small 60000]``
"""

from __future__ import annotations

import argparse

import torch
from common import epoch_rate, machine, table
from torch.utils.data import DataLoader

from torchloader import PreloadedDataset

BATCH = 256


def bench_shape(name: str, n: int, shape: tuple[int, ...]) -> list[tuple]:
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8)
    y = torch.randint(0, 10, (n,))
    ds = PreloadedDataset(x, y)

    # Both loops draw a fresh permutation per epoch, as any training loop must.
    def bound():
        for idx in torch.randperm(n).split(BATCH):
            yield torch.index_select(x, 0, idx), torch.index_select(y, 0, idx)

    def fancy():
        for idx in torch.randperm(n).split(BATCH):
            yield x[idx], y[idx]

    epoch = iter(range(10**9))
    rates = {
        "bare index_select loop (bound)": epoch_rate(bound, n),
        "x[idx] loop": epoch_rate(fancy, n),
        "ds.batches() (no DataLoader)": epoch_rate(lambda: ds.batches(BATCH, epoch=next(epoch)), n),
    }
    for workers in (0, 2):
        loader = ds.dataloader(BATCH, num_workers=workers, persistent_workers=workers > 0)
        rates[f"ds.dataloader(), {workers} workers"] = epoch_rate(lambda: loader, n)
    for workers in (0, 2):
        plain = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
        rates[f"DataLoader default collate, {workers} workers"] = epoch_rate(lambda: plain, n, repeats=1)
    bound_rate = rates["bare index_select loop (bound)"]
    collate = rates["DataLoader default collate, 0 workers"]
    return [
        (name, mode, f"{rate:,.0f}", f"{rate / bound_rate:.2f}x", f"{rate / collate:.1f}x")
        for mode, rate in rates.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-large", type=int, default=20_000, help="128x128x3 samples")
    parser.add_argument("--n-small", type=int, default=60_000, help="28x28 samples")
    args = parser.parse_args()
    rows = bench_shape("3x128x128 uint8", args.n_large, (3, 128, 128))
    rows += bench_shape("1x28x28 uint8", args.n_small, (1, 28, 28))
    print(machine())
    print(f"batch size {BATCH}, shuffled; median of 3 epochs after a warm-up (default-collate rows: 1 epoch)\n")
    print(table(rows, ("samples", "mode", "samples/s", "vs bound", "vs default collate (0 workers)")))


if __name__ == "__main__":
    main()
