"""ChunkedLoader over a ``torch.utils.data.Subset`` of a PathDataset against the dataset itself.

``random_split`` and ``examples/train.py --mode chunked`` give the loader a
``Subset``; it is read through to the wrapped dataset, so both rows should match.
Alternating runs on the same JPEGs, 2 worker processes.

Run: ``python benchmarks/bench_subset.py --data /work/benchdata/jpeg128 [--limit 4000] [--rounds 3]``
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import machine, table
from torch.utils.data import Subset

from torchloader import ChunkedLoader, PathDataset
from torchloader.tools.bench import time_epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/work/benchdata/jpeg128")
    parser.add_argument("--limit", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    full = PathDataset.from_folder(args.data)
    keep = np.linspace(0, len(full) - 1, min(args.limit, len(full))).round().astype(np.int64)
    ds = PathDataset(full.paths[keep], full.labels[keep])
    cases = {"ChunkedLoader(PathDataset)": ds, "ChunkedLoader(Subset(PathDataset))": Subset(ds, range(len(ds)))}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, dataset in cases.items():
            rate, _ = time_epochs(
                lambda: ChunkedLoader(dataset, 256, ram_budget="256MiB", num_workers=2), len(ds), epochs=3
            )
            rates[name].append(rate)
    print(f"{len(ds)} JPEGs from {args.data}, batch 256, 2 workers, median of 3 epochs per round")
    print(machine())
    print(
        table(
            [(name, " / ".join(f"{r:,.0f}" for r in values)) for name, values in rates.items()],
            ("loader", "samples/s per round"),
        )
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
