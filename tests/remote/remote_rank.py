"""One rank of the job in ``test_remote_ranks.py`` (a module of its own, importable by the
spawned ranks): reads a remote pack for one epoch through ``ChunkedLoader`` under a gloo
process group, signing its requests with its own key, and writes the labels it served."""

from __future__ import annotations

import datetime
import json
import traceback
import warnings

import torch
import torch.distributed as dist

from torchloader import ChunkedLoader, PackedDataset, PoorShuffleWarning


def rank_main(rank: int, world: int, init_method: str, url: str, options: dict, cache: str, out: str) -> None:
    try:
        warnings.filterwarnings("ignore", category=PoorShuffleWarning)
        torch.set_num_threads(1)
        dist.init_process_group(
            "gloo", init_method=init_method, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
        )
        try:
            ds = PackedDataset(url, storage_options=options, cache_dir=f"{cache}/rank{rank}")
            loader = ChunkedLoader(ds, 4, chunk_size=8, seed=11)
            loader.set_epoch(0)
            labels = [int(y) for _, yb in loader for y in yb]
            loader.close()
            dist.barrier()
        finally:
            dist.destroy_process_group()
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(labels, f)
    except BaseException:
        with open(f"{out}/rank{rank}.error", "w") as f:
            f.write(traceback.format_exc())
        raise
