"""Two gloo ranks read one pack at an S3 URL: each downloads only the shards of its own
chunks (counted on the server by the key each rank signs with), and together they serve
every sample once."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch.multiprocessing as mp
from conftest import write_images
from helpers import wait_for_ranks
from remote_rank import rank_main

from torchloader import ChunkedSampler, PackedDataset, pack

URL = "s3://bucket/ranks.packed"
WORLD = 2
DEADLINE = 120


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::torchloader.PoorShuffleWarning")
def test_two_gloo_ranks_each_download_only_the_shards_of_their_own_chunks(tmp_path, s3):
    src = write_images(tmp_path / "src", classes=2, per_class=32)  # 64 samples in 16 shards of 4
    pack(src, URL, shard_bytes=1500, progress=False, storage_options=s3.storage_options())
    pack(src, tmp_path / "local", shard_bytes=1500, progress=False)
    local = PackedDataset(tmp_path / "local")
    out = tmp_path / "out"
    out.mkdir()
    context = mp.get_context("spawn")
    ranks = [
        context.Process(
            target=rank_main,
            args=(
                r,
                WORLD,
                f"file://{out / 'rendezvous'}",
                URL,
                s3.storage_options(f"rank{r}"),
                str(tmp_path),
                str(out),
            ),
            name=f"test-remote-rank-{r}",
        )
        for r in range(WORLD)
    ]
    for process in ranks:
        process.start()
    hung = wait_for_ranks(ranks, time.monotonic() + DEADLINE)
    errors = {path.name: path.read_text() for path in sorted(out.glob("*.error"))}
    assert not hung and [p.exitcode for p in ranks] == [0] * WORLD, (hung, errors)
    stops = np.array([s.stop for s in local.manifest.shards])
    served = []
    for r in range(WORLD):
        sampler = ChunkedSampler(local, chunk_size=8, seed=11, num_replicas=WORLD, rank=r)
        own = sampler.order_of(0)[0]
        shards = sorted({f"/bucket/ranks.packed/shard-{k:05d}.npy" for k in np.searchsorted(stops, own, side="right")})
        sent = s3.downloaded(f"rank{r}")
        whole = sorted(p for p, n in sent.items() if "shard-" in p and n >= 1568)  # (not a ranged peek at a row)
        assert set(shards) <= set(whole), (whole, shards)
        ahead = set(whole) - set(shards)  # the next epoch's first two chunks, prefetched as this one ended
        # each shard whole once (shard 0 perhaps also peeked at: 128 + 360 bytes for the layout)
        assert len(ahead) <= 4 and all(1568 <= sent[p] <= 1568 + 488 for p in whole), (sent, shards)
        labels = json.loads((out / f"rank{r}.json").read_text())
        assert labels == local.labels[own].tolist()  # its own samples, in its order
        served += own.tolist()
    assert sorted(served) == list(range(64))
