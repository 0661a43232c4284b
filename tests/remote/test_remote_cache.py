"""The cache of a remote pack under ``ChunkedLoader`` and ``ChunkedSampler``: the limit
held while a data set four times its size is read for three epochs, no shard downloaded
twice in an epoch, the next chunk's shards prefetched, and an exact resume."""

from __future__ import annotations

import collections
import fcntl
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from conftest import write_images

from torchloader import ChunkedLoader, ChunkedSampler, PackedDataset, pack
from torchloader.order.cached import cache_aware, snapshot, window_of
from torchloader.remote._space import locked, pinned_bytes
from torchloader.remote.retries import RemoteError

URL = "s3://bucket/big.packed"
# small data sets, chunks of one class: no warning about how they mix
pytestmark = pytest.mark.filterwarnings("ignore::torchloader.PoorShuffleWarning")
SHARD = 1568  # bytes of a shard of 4 samples of 12 x 10 x 3 (+ the .npy header)


@pytest.fixture
def remote_pack(tmp_path, s3):
    src = write_images(tmp_path / "src", classes=2, per_class=32)  # 64 samples, 16 shards
    pack(src, URL, shard_bytes=1500, progress=False, storage_options=s3.storage_options())
    pack(src, tmp_path / "local", shard_bytes=1500, progress=False)
    return PackedDataset(tmp_path / "local")


def _folder_size(root):
    return sum(
        os.path.getsize(os.path.join(d, n))
        for d, _, names in os.walk(root)
        for n in names
        if os.path.exists(os.path.join(d, n))
    )


def _small_files(root):
    """Bytes of the cache's files that are not shards (labels, url.txt: never evicted)."""
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.name.startswith("shard-"))


class _Watch:
    """The cache folder's size, sampled every few milliseconds on a thread."""

    def __init__(self, root):
        self.root, self.peak, self._stop = root, 0, threading.Event()
        os.makedirs(root, exist_ok=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.002):
            with locked(os.path.join(self.root, ".lock")):  # as the cache counts: no rename half seen
                self.peak = max(self.peak, _folder_size(self.root))

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


def _shard_gets(s3):
    """Whole downloads of each shard so far (by the bytes sent: the loader's peek at one
    sample for the layout is a few ranged requests of a few hundred bytes)."""
    sent = s3.downloaded()
    return collections.Counter({p.rsplit("/", 1)[-1]: n // SHARD for p, n in sent.items() if "shard-" in p})


def test_the_cache_limit_holds_over_three_epochs_of_a_pack_four_times_its_size(tmp_path, s3, remote_pack):
    limit = 4 * SHARD + 2000  # a quarter of the pack's 16 shards, plus labels.npy
    ds = PackedDataset(URL, storage_options=s3.storage_options(), cache_dir=tmp_path / "cache", cache_limit=limit)
    loader = ChunkedLoader(ds, batch_size=4, chunk_size=4, seed=3, num_workers=2, multiprocessing_context="fork")
    watch = _Watch(tmp_path / "cache")
    per_epoch = []
    try:
        for _ in range(3):
            before = _shard_gets(s3)
            seen = []
            for xb, yb in loader:
                seen += [(bytes(x.numpy()), int(y)) for x, y in zip(xb, yb)]
            per_epoch.append(_shard_gets(s3) - before)
            expected = [(bytes(x.numpy()), int(y)) for x, y in (remote_pack[i] for i in range(len(remote_pack)))]
            assert sorted(seen) == sorted(expected)  # every sample once, and the right pixels
    finally:
        peak = watch.stop()
        loader.close()
    assert 0 < peak <= limit, f"the cache folder reached {peak} bytes, over its limit {limit}"
    # The loader runs ahead into the next epoch (its first chunk, and the prefetch of the
    # two after), so a pass counts a few of the next epoch's downloads: a shard comes once
    # per epoch, plus once for that look-ahead, and on a busy machine once more: eviction is
    # least recently used by time, and a shard cached for the next epoch can go before that
    # epoch reads it (seen once in 6 runs beside two other suites; not in 8 runs without).
    # Before the room left by the small files was counted (windows of 2 in room for 4
    # shards, not 5), a CI run had one shard 5 times and a pass that fetched 5 shards twice.
    total = sum(per_epoch, collections.Counter())
    assert max(total.values()) <= 3 + 1 + 1 and sum(total.values()) <= 3 * 16 + 4, (per_epoch, total)
    assert sum(total.values()) >= 2 * 16, (per_epoch, total)  # the cache holds a quarter: most shards come again


def test_the_order_is_grouped_by_the_cache_and_still_every_sample_once():
    class Plan:
        stops = np.arange(4, 65, 4)  # 16 shards of 4 samples
        nbytes = [100] * 16
        limit = 600  # 6 shards: windows of 3 (room for 3 more, prefetched)

    order = np.random.default_rng(0).permutation(64)
    lengths = np.full(8, 8)
    cached = [1, 5, 9]
    new, new_lengths = cache_aware(order, lengths, Plan, cached, (0, 2, 0), Plan.limit)
    assert sorted(new.tolist()) == list(range(64)) and new_lengths.sum() == 64
    shards = new // 4
    assert set(shards[:12].tolist()) == set(cached)  # the cached shards first
    rest = shards[12:]
    windows = [set(rest[k : k + 12].tolist()) for k in range(0, len(rest), 12)]
    assert all(len(w) <= 3 for w in windows)  # then windows of 3 shards, each read whole
    assert len(set().union(*windows)) == 13
    again, _ = cache_aware(order, lengths, Plan, cached, (0, 2, 0), Plan.limit)
    assert np.array_equal(new, again)  # a pure function of its arguments
    other, _ = cache_aware(order, lengths, Plan, cached, (0, 3, 0), Plan.limit)
    assert not np.array_equal(new, other)  # another epoch, other windows
    Plan.limit = 100 * 16 + 300
    same, same_lengths = cache_aware(order, lengths, Plan, cached, (0, 2, 0), Plan.limit)
    assert np.array_equal(same, order) and np.array_equal(same_lengths, lengths)  # it all fits: unchanged


def test_an_epoch_reads_first_its_ranks_cached_shards_and_sizes_windows_by_the_room():
    class Plan:
        stops = np.arange(4, 65, 4)  # 16 shards of 4 samples
        nbytes = [100] * 16
        space = 650

        def cached(self):
            return frozenset({7, 3, 9, 1, 12})

        def room(self):
            return self.space

    plan, every = Plan(), np.arange(64)
    assert snapshot(plan, every) == ([1, 3, 7, 9, 12], 650)
    rank = np.concatenate([np.arange(36, 52), np.arange(4, 8)])  # shards 9, 10, 11, 12, 1: not 3, 7
    assert snapshot(plan, rank) == ([1, 9, 12], 650)
    plan.space = None  # no limit: the order does not depend on it
    assert snapshot(plan, every) == ([1, 3, 7, 9, 12], None)
    assert window_of(650, 100) == 3 and window_of(399, 100) == 1 and window_of(50, 100) == 1


def test_the_room_for_shards_is_the_limit_less_the_small_files(tmp_path):
    folder = tmp_path / "cache" / "0123456789abcdef"
    folder.mkdir(parents=True)
    (folder / "url.txt").write_bytes(b"u" * 23)
    (folder / "labels.0123456789abcdef.npy").write_bytes(b"l" * 640)
    (folder / ".shard-00001.0123456789abcdef.npy.lock").touch()
    (folder / "shard-00001.0123456789abcdef.npy").write_bytes(b"s" * 1000)  # evictable
    (folder / "shard-00002.0123456789abcdef.npy.123.456.partial").write_bytes(b"p" * 1000)  # becomes a shard
    assert pinned_bytes(tmp_path / "cache") == 663


def test_a_resumed_epoch_repeats_the_order_it_began_with_though_the_cache_has_changed(tmp_path, s3, remote_pack):
    opts = s3.storage_options()
    ds = PackedDataset(URL, storage_options=opts, cache_dir=tmp_path / "cache", cache_limit=4 * SHARD + 2000)
    ds[0], ds[20]  # a partly filled cache
    sampler = ChunkedSampler(ds, chunk_size=8, seed=5)
    sampler.set_epoch(1)
    it = iter(sampler)
    first = [next(it) for _ in range(24)]
    state = sampler.state_dict(consumed=24)
    # the limit holds 4 shards beside the small files: windows of 1
    assert state["cached"] == [0, 5] and state["cache_room"] == 4 * SHARD + 2000 - _small_files(tmp_path / "cache")
    assert state["cache_limit"] == state["cache_room"]  # what torchloader 0.1 orders by: the same order
    rest = list(it)
    for i in range(0, 64, 4):  # the cache is now another one
        ds[i]
    for limit in (4 * SHARD + 2000, 6 * SHARD + 2000, None):  # the limit it began with is saved too
        resumed = ChunkedSampler(
            PackedDataset(URL, storage_options=opts, cache_dir=tmp_path / "cache", cache_limit=limit),
            chunk_size=8,
            seed=5,
        )
        resumed.load_state_dict(state)
        assert list(resumed) == rest and sorted(first + rest) == list(range(64))
    older = {k: v for k, v in state.items() if k != "cache_room"}  # as torchloader 0.1 saved it
    resumed = ChunkedSampler(ds, chunk_size=8, seed=5)
    resumed.load_state_dict(older)
    assert list(resumed) == rest
    with pytest.raises(ValueError, match=r"ordered by the cache of a remote pack.*resume it over the same URL"):
        ChunkedSampler(remote_pack, chunk_size=8, seed=5).load_state_dict(state)


def test_chunked_loader_prefetches_the_next_chunks_shards(tmp_path, s3, remote_pack, monkeypatch):
    ds = PackedDataset(URL, storage_options=s3.storage_options(), cache_dir=tmp_path / "cache")
    asked = []
    real = ds.remote.prefetch
    monkeypatch.setattr(ds.remote, "prefetch", lambda shards: (asked.append(list(shards)), real(shards)))
    loader = ChunkedLoader(ds, batch_size=8, chunk_size=8, seed=1, shuffle=False)
    try:
        batches = [yb for _, yb in loader]
    finally:
        loader.close()
    assert torch.equal(
        torch.cat(batches),
        remote_pack.labels_tensor() if hasattr(remote_pack, "labels_tensor") else torch.from_numpy(remote_pack.labels),
    )
    # the shards of chunks k+1 and k+2 (2 shards each), asked for while chunk k loads
    assert asked[:6] == [[2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9], [8, 9, 10, 11], [10, 11, 12, 13], [12, 13, 14, 15]]


def test_a_fork_while_a_cache_lock_is_held_does_not_keep_it_held(tmp_path):
    lock, held, release = str(tmp_path / ".lock"), threading.Event(), threading.Event()

    def holder():
        with locked(lock):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    ready, tell = os.pipe()
    child = os.fork()
    if child == 0:  # a child that outlives the parent's hold (a DataLoader worker, say)
        os.write(tell, b"1")  # (its fork hooks have run)
        time.sleep(5)
        os._exit(0)
    os.close(tell)
    try:
        assert os.read(ready, 1) == b"1"
        release.set()
        thread.join()
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now, though the child lives
        finally:
            os.close(fd)
    finally:
        os.close(ready)
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_a_download_whose_process_died_does_not_hold_its_space(tmp_path, s3, remote_pack):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    limit = 2 * SHARD + 2000
    ds = PackedDataset(URL, storage_options=s3.storage_options(), cache_dir=tmp_path / "cache", cache_limit=limit)
    ds[0]
    orphan = (
        next((tmp_path / "cache").glob("*/labels.*.npy")).parent / f"shard-00009.x.npy.{dead.stdout.strip()}.7.partial"
    )
    orphan.write_bytes(b"\0" * SHARD)  # preallocated by a process that was killed mid-download
    assert torch.equal(ds[60][0], remote_pack[60][0]) and not orphan.exists()
    assert _folder_size(tmp_path / "cache") <= limit


@pytest.mark.parametrize("encoded", [False, True])
def test_thread_workers_read_a_remote_pack_under_a_tight_limit(tmp_path, s3, encoded):
    src = write_images(tmp_path / "src", classes=2, per_class=32)
    url = f"s3://bucket/threads-{encoded}.packed"
    pack(src, url, shard_bytes=1500, progress=False, storage_options=s3.storage_options(), encoded=encoded)
    pack(src, tmp_path / "local", shard_bytes=1500, progress=False, encoded=encoded)
    local = PackedDataset(tmp_path / "local")
    limit = 6 * max(s.nbytes for s in local.manifest.shards) + 8000
    ds = PackedDataset(url, storage_options=s3.storage_options(), cache_dir=tmp_path / "cache", cache_limit=limit)
    loader = ChunkedLoader(ds, 4, chunk_size=8, seed=2, num_workers=4, worker_type="thread")
    expected = sorted((bytes(x.numpy()), int(y)) for x, y in (local[i] for i in range(len(local))))
    try:
        for _ in range(2):
            assert sorted((bytes(x.numpy()), int(y)) for xb, yb in loader for x, y in zip(xb, yb)) == expected
    finally:
        loader.close()


def test_a_cached_pack_reads_in_a_new_process_with_the_server_gone(tmp_path, s3, remote_pack):
    ds = PackedDataset(URL, storage_options=s3.storage_options(), cache_dir=tmp_path / "cache", retries=1)
    for i in range(len(ds)):
        ds[i]
    s3.stop()
    copy = pickle.loads(pickle.dumps(ds))  # as a DataLoader worker gets it: maps the cached files itself
    assert all(torch.equal(copy[i][0], remote_pack[i][0]) for i in range(len(ds)))


def test_the_server_killed_mid_epoch_ends_the_loader_with_the_url_and_the_attempts(tmp_path, s3, remote_pack):
    ds = PackedDataset(URL, storage_options=s3.storage_options(), cache_dir=tmp_path / "cache", retries=2)
    loader = ChunkedLoader(ds, 4, chunk_size=8, shuffle=False)
    try:
        batches = iter(loader)
        first = next(batches)
        assert torch.equal(first[1], torch.from_numpy(remote_pack.labels[:4]))
        s3.stop()
        with pytest.raises(RemoteError, match=r"downloading 's3://bucket/big.packed/shard-000\d\d.npy' failed 2 times"):
            for _ in batches:
                pass
    finally:
        loader.close()
