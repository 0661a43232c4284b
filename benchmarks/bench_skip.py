"""What ``on_error="skip"`` costs, on a folder of JPEGs, side by side in one run.

The same samples (an evenly spaced subset of the folder, so every class is in
it) are read by ``ChunkedLoader(PathDataset)`` and by ``PathDataset.dataloader()``,
each with 2 worker processes, three ways:

- ``on_error="raise"``, the default;
- ``on_error="skip"`` with no bad file: the cost of being ready to skip;
- ``on_error="skip"`` with a fraction of the paths pointing to broken copies
  (the first half of the JPEG): the cost of skipping, i.e. of compacting the
  batches that lost a sample, of the failed decodes and of the records.

For scale, a plain per-sample ``DataLoader`` (2 workers) and the in-RAM gather
bound (``index_select`` over the decoded samples) run on the same samples.
Figures on a shared VM move by 10-25% from one measurement to the next, so the
loaders are measured in ``--rounds`` interleaved rounds and each row is the
median of its rounds. Samples/s counts positions of the order (left out or not).

Run: ``python benchmarks/bench_skip.py --data /work/benchdata/jpeg128 [--limit 6000] [--bad 0.01]``
(``benchmarks/make_data.py`` writes that folder).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import warnings

import numpy as np
import torch
from common import machine, table
from torch.utils.data import DataLoader

from torchloader import ChunkedLoader, PathDataset, PreloadedDataset, SkippedSampleWarning
from torchloader.tools.bench import gather_bound, time_epochs

BATCH = 256
WORKERS = 2


def subset(root: str, limit: int) -> PathDataset:
    full = PathDataset.from_folder(root)
    keep = np.linspace(0, len(full) - 1, min(limit, len(full))).round().astype(np.int64)
    return PathDataset(full.paths[keep], full.labels[keep], classes=full.classes)


def broken_copy(ds: PathDataset, fraction: float, folder: str, seed: int = 0) -> tuple[list[str], int]:
    """``ds``'s paths with ``fraction`` of them replaced by truncated copies."""
    paths = [ds.path(i) for i in range(len(ds))]
    rng = np.random.default_rng(seed)
    bad = rng.choice(len(paths), size=max(1, round(fraction * len(paths))), replace=False)
    for i in bad.tolist():
        with open(paths[i], "rb") as f:
            data = f.read()
        copy = os.path.join(folder, f"broken{i}.jpg")
        with open(copy, "wb") as f:
            f.write(data[: len(data) // 2])
        paths[i] = copy
    return paths, len(bad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/work/benchdata/jpeg128")
    parser.add_argument("--limit", type=int, default=6000)
    parser.add_argument("--bad", type=float, default=0.01, help="fraction of broken files")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurements per row")
    args = parser.parse_args()
    warnings.simplefilter("ignore", SkippedSampleWarning)

    good = subset(args.data, args.limit)
    n = len(good)
    with tempfile.TemporaryDirectory() as folder:
        paths, n_bad = broken_copy(good, args.bad, folder)
        datasets = {
            "raise": good,
            "skip, no bad file": PathDataset(good.paths, good.labels, on_error="skip"),
            f"skip, {n_bad} bad files ({args.bad:.0%})": PathDataset(paths, good.labels, on_error="skip"),
        }
        loaders = {
            "ChunkedLoader": lambda ds: ChunkedLoader(ds, BATCH, ram_budget="256MiB", num_workers=WORKERS),
            "ds.dataloader()": lambda ds: ds.dataloader(BATCH, num_workers=WORKERS, persistent_workers=True),
        }
        measured: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for loader_name, make in loaders.items():
                for name, ds in datasets.items():
                    rate, _ = time_epochs(lambda: make(ds), n, epochs=args.epochs)
                    measured.setdefault((loader_name, name), []).append(rate)
        rates = {key: statistics.median(values) for key, values in measured.items()}
        rows = [
            (
                loader,
                name,
                f"{rate:,.0f}",
                f"{rate / rates[loader, 'raise']:.2f}x",
                " ".join(f"{v / 1000:.1f}k" for v in measured[loader, name]),
            )
            for (loader, name), rate in rates.items()
        ]
        plain, _ = time_epochs(
            lambda: DataLoader(good, batch_size=BATCH, shuffle=True, num_workers=WORKERS, persistent_workers=True),
            n,
            epochs=args.epochs,
        )
        x = PreloadedDataset.from_dataset(good, progress=False).x
        bound = gather_bound(x, BATCH)
    rows.append(("DataLoader, per sample", "raise", f"{plain:,.0f}", "", ""))
    rows.append(("index_select bound", "", f"{bound:,.0f}", "", ""))
    print(
        f"{n} JPEGs from {args.data}, batch {BATCH}, {WORKERS} workers, median of {args.epochs} "
        f"epochs, median of {args.rounds} interleaved rounds"
    )
    print(machine())
    print(table(rows, ("loader", "on_error", "samples/s", "vs raise", "rounds")))
    print(
        f"skip with {n_bad} bad files vs raise (no bad file): "
        + ", ".join(
            f"{loader}: {rates[loader, list(datasets)[2]] / rates[loader, 'raise']:.2f}x"
            for loader in ("ChunkedLoader", "ds.dataloader()")
        )
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
