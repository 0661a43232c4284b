"""Shared by the framework jobs: the data set, the loaders under test, the record of what each rank saw.

A job is run as a script (``python job.py`` or ``torchrun``), so that the real
framework starts its processes and must exit by itself. Labels are the sample
indices, so the labels a rank trained on are the samples it saw.
"""

from __future__ import annotations

import json
import os

import numpy as np
from torch.utils.data import DataLoader

from torchloader import ChunkedLoader, ChunkedSampler, PackedDataset, PathDataset

N = 96  # samples; 48 per rank on two ranks
BATCH = 8
CHUNK = 16
MODES = ("dataloader", "sampler", "chunked", "packed")


def write_data(root: str) -> None:
    """``root/files``: one .npy per sample holding its index; ``root/packed``: the same, packed."""
    from torchloader import pack

    files = os.path.join(root, "files")
    os.makedirs(files)
    rows = ["path,label"]
    for i in range(N):
        np.save(os.path.join(files, f"{i:03d}.npy"), np.full(4, i, dtype=np.float32))
        rows.append(f"{i:03d}.npy,{i}")
    with open(os.path.join(files, "index.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    pack(os.path.join(files, "index.csv"), os.path.join(root, "packed"), num_workers=0, progress=False)


def dataset(root: str) -> PathDataset:
    return PathDataset.from_csv(os.path.join(root, "files", "index.csv"))


def loader(mode: str, root: str, *, workers: int = 2):
    """The loader of ``mode``, made before any process group exists (as scripts do)."""
    ds = dataset(root)
    if mode == "dataloader":
        return ds.dataloader(BATCH, seed=3)
    if mode == "sampler":
        return DataLoader(ds, batch_size=BATCH, sampler=ChunkedSampler(ds, chunk_size=CHUNK, seed=3))
    if mode == "chunked":
        return ChunkedLoader(ds, BATCH, chunk_size=CHUNK, seed=3, num_workers=workers)
    if mode == "packed":
        return ChunkedLoader(PackedDataset(os.path.join(root, "packed")), BATCH, chunk_size=CHUNK, seed=3)
    raise ValueError(mode)


def save(out: str, rank: int, seen: dict) -> None:
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(seen, f)
