"""Packs at an S3 URL (a real S3-compatible server on 127.0.0.1, reached through s3fs):
written, read, verified and refused exactly as local packs are."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import s3fs
import torch
from conftest import write_images

from torchloader import PackedDataset, RandomResizedCrop, pack, verify_pack
from torchloader._core.randomness import reading_epoch
from torchloader.remote.retries import RemoteError

URL = "s3://bucket/train.packed"


def _both(tmp_path, s3, **options):
    src = write_images(tmp_path / "src")
    pack(src, tmp_path / "local", shard_bytes=1500, progress=False, **options)
    pack(src, URL, shard_bytes=1500, progress=False, storage_options=s3.storage_options(), **options)
    return tmp_path / "local"


def _remote(tmp_path, s3, **options):
    options.setdefault("cache_dir", tmp_path / "cache")
    return PackedDataset(URL, storage_options=s3.storage_options(), **options)


def _cached_files(folder):
    return sorted(name for _, _, names in os.walk(folder) for name in names if name.startswith("shard-"))


@pytest.mark.parametrize("encoded", [False, True])
def test_a_pack_written_to_s3_reads_back_as_the_local_pack_sample_for_sample(tmp_path, s3, encoded):
    local = _both(tmp_path, s3, encoded=encoded)
    decode = {"decode": RandomResizedCrop(8)} if encoded else {}
    a, b = PackedDataset(local, **decode), _remote(tmp_path, s3, **decode)
    assert len(a) == len(b) == 24 and b.classes == a.classes and len(b.manifest.shards) > 3
    with reading_epoch(0, 1):  # random crops from (seed, epoch, index), as a loader's
        for i in range(len(a)):
            (xa, ya), (xb, yb) = a[i], b[i]
            assert torch.equal(xa, xb) and int(ya) == int(yb)
        picked = [23, 0, 7, 7, 12]
        assert all(torch.equal(p, q) for p, q in zip(a[picked], b[picked]))
    # each shard was downloaded once, into the cache
    small = ["index.npy", "labels.npy"] if encoded else ["labels.npy"]
    names = sorted([s.file for s in b.manifest.shards] + small)
    assert s3.gets(suffix=".npy") == [f"/bucket/train.packed/{name}" for name in names]
    assert len(_cached_files(tmp_path / "cache")) == len(b.manifest.shards)
    assert verify_pack(URL, storage_options=s3.storage_options()) == []


def test_packing_to_the_same_url_again_reuses_it_refuses_other_options_or_overwrites(tmp_path, s3):
    src = write_images(tmp_path / "src")
    opts = s3.storage_options()
    first = pack(src, URL, shard_bytes=1500, progress=False, storage_options=opts)
    puts = sum(n for (_, m, _), n in s3.requests.items() if m == "PUT")
    again = pack(src, URL, shard_bytes=1500, progress=False, storage_options=opts)
    assert again.already_packed and again.samples == first.samples
    assert sum(n for (_, m, _), n in s3.requests.items() if m == "PUT") == puts  # nothing written
    with pytest.raises(FileExistsError, match=r"holds a different pack \(differs in shard_bytes\).*overwrite"):
        pack(src, URL, shard_bytes=3000, progress=False, storage_options=opts)
    pack(src, URL, shard_bytes=3000, progress=False, storage_options=opts, overwrite=True)
    ds = PackedDataset(URL, storage_options=opts, cache_dir=tmp_path / "c")
    assert ds.manifest.options["shard_bytes"] == 3000 and len(ds.manifest.shards) == 3
    names = sorted(p.rsplit("/", 1)[-1] for p in s3fs.S3FileSystem(**opts).ls(URL, refresh=True))
    assert names == [
        "labels.npy",
        "manifest.json",
        *[s.file for s in ds.manifest.shards],
        "sources.txt",
    ]  # no old shard
    assert not (tmp_path / "default-cache-staging").exists()  # removed once uploaded
    assert not (tmp_path / "default-cache").exists()  # (not in the cache folder: not its to count)


def test_a_url_holding_other_objects_is_refused(tmp_path, s3):
    s3fs.S3FileSystem(**s3.storage_options()).pipe("bucket/train.packed/notes.txt", b"mine")
    with pytest.raises(FileExistsError, match=r"holds objects that are not part of a pack \(notes.txt\)"):
        pack(write_images(tmp_path / "src"), URL, progress=False, storage_options=s3.storage_options())


def test_an_interrupted_upload_never_loads_and_a_rerun_uploads_only_what_is_missing(tmp_path, s3, monkeypatch):
    src = write_images(tmp_path / "src")
    opts = s3.storage_options()
    fs = s3fs.S3FileSystem(**opts)  # the instance fsspec gives the library for these options
    real_put, calls = fs.put_file, []

    def dying_put(lpath, rpath, *args, **kwargs):
        calls.append(rpath)
        if len(calls) == 1:
            time.sleep(1.1)  # files written a second after the journal (S3 keeps times to the second)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the job is killed mid-upload
        return real_put(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(fs, "put_file", dying_put)
    with pytest.raises(KeyboardInterrupt):
        pack(src, URL, shard_bytes=1500, progress=False, storage_options=opts)
    with pytest.raises(FileNotFoundError, match=r"manifest.json' does not exist.*interrupted.*torchloader pack SRC"):
        PackedDataset(URL, storage_options=opts, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(fs, "put_file", real_put)
    uploaded = [p for (_, m, p), n in s3.requests.items() if m == "PUT" and "shard-" in p]
    assert len(uploaded) == 2
    pack(src, URL, shard_bytes=1500, progress=False, storage_options=opts)
    again = [p for (_, m, p), n in s3.requests.items() if m == "PUT" and "shard-" in p for _ in range(n)]
    assert len(again) == len(set(again))  # the two uploaded before were not uploaded again
    ds = PackedDataset(URL, storage_options=opts, cache_dir=tmp_path / "cache")
    assert len(ds) == 24 and verify_pack(URL, storage_options=opts) == []
    assert "manifest.json.partial" not in [p.rsplit("/", 1)[-1] for p in s3fs.S3FileSystem(**opts).ls(URL)]


def test_an_interrupted_overwrite_never_keeps_the_old_packs_objects(tmp_path, s3, monkeypatch):
    opts = s3.storage_options()
    pack(write_images(tmp_path / "old", seed=1), URL, shard_bytes=1500, progress=False, storage_options=opts)
    time.sleep(1.1)  # (S3 keeps modification times to the second)
    fs = s3fs.S3FileSystem(**opts)
    real_put, calls = fs.put_file, []

    def dying_put(lpath, rpath, *args, **kwargs):
        calls.append(rpath)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_put(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(fs, "put_file", dying_put)
    src = write_images(tmp_path / "new", seed=2)  # the same sizes, other pixels
    with pytest.raises(KeyboardInterrupt):
        pack(src, URL, shard_bytes=1500, progress=False, storage_options=opts, overwrite=True, size=(12, 10))
    monkeypatch.setattr(fs, "put_file", real_put)
    pack(src, URL, shard_bytes=1500, progress=False, storage_options=opts, overwrite=True, size=(12, 10))
    assert verify_pack(URL, storage_options=opts) == []
    pack(src, tmp_path / "local", shard_bytes=1500, progress=False, size=(12, 10))
    ds, local = _remote(tmp_path, s3), PackedDataset(tmp_path / "local")
    assert all(torch.equal(ds[i][0], local[i][0]) for i in range(len(ds)))


def test_a_changed_object_is_refused_by_name_never_served_and_named_by_verify(tmp_path, s3):
    _both(tmp_path, s3)
    fs = s3fs.S3FileSystem(**s3.storage_options())
    name = "bucket/train.packed/shard-00002.npy"
    data = bytearray(fs.cat(name))
    data[-1] ^= 0xFF  # one flipped byte, same size
    fs.pipe(name, bytes(data))
    ds = _remote(tmp_path, s3)
    assert torch.equal(ds[0][0], PackedDataset(tmp_path / "local")[0][0])  # other shards still serve
    start = ds.manifest.shards[2].start
    with pytest.raises(ValueError, match=r"shard-00002.npy' does not match its checksum.*refused"):
        ds[start]
    assert not any("shard-00002" in f for f in _cached_files(tmp_path / "cache"))  # not kept, not even partly
    assert verify_pack(URL, storage_options=s3.storage_options()) == [
        f"'{URL}/shard-00002.npy' has a different checksum than the manifest: its bytes changed"
    ]


def test_the_server_gone_mid_epoch_is_retried_then_named_and_reading_resumes_when_it_is_back(tmp_path, s3):
    _both(tmp_path, s3)
    ds = _remote(tmp_path, s3, retries=2)
    local = PackedDataset(tmp_path / "local")
    assert torch.equal(ds[0][0], local[0][0])
    s3.stop()
    assert torch.equal(ds[1][0], local[1][0])  # shard 0 is cached: served without the server
    with pytest.raises(RemoteError, match=r"downloading 's3://bucket/train.packed/shard-00005.npy' failed 2 times"):
        ds[len(ds) - 1]
    assert not any("shard-00005" in f for f in _cached_files(tmp_path / "cache"))
    s3.start()  # on the same port
    x, _ = ds[len(ds) - 1]
    assert torch.equal(x, local[len(ds) - 1][0])


def test_missing_credentials_are_the_providers_error_with_the_url(tmp_path, s3, monkeypatch):
    _both(tmp_path, s3)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    opts = {k: v for k, v in s3.storage_options().items() if k not in ("key", "secret")}
    with pytest.raises(
        PermissionError, match=r"reading 's3://bucket/train.packed/manifest.json': NoCredentialsError.*credentials"
    ):
        PackedDataset(URL, storage_options=opts, cache_dir=tmp_path / "cache")


def test_a_url_whose_protocol_package_is_missing_is_refused_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = write_images(tmp_path / "src")
    with pytest.raises(ImportError, match=r"'gs://bucket/x' is a URL.*pip install 'torchloader\[remote\]'"):
        pack(src, "gs://bucket/x", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["src"]  # no folder named 'gs:'
    with pytest.raises(ImportError, match=r"pip install 'torchloader\[remote\]'"):
        PackedDataset("gs://bucket/x")


def test_remote_options_for_a_local_pack_are_refused(tmp_path):
    src = write_images(tmp_path / "src")
    pack(src, tmp_path / "local", progress=False)
    with pytest.raises(ValueError, match=r"cache_limit apply to a pack at a URL"):
        PackedDataset(tmp_path / "local", cache_limit="1GiB")
    with pytest.raises(ValueError, match=r"storage_options apply to a URL destination"):
        pack(src, tmp_path / "other", progress=False, storage_options={})


def test_a_shard_bigger_than_the_cache_limit_is_refused_with_the_fix(tmp_path, s3):
    _both(tmp_path, s3)
    ds = _remote(tmp_path, s3, cache_limit=1000)
    with pytest.raises(ValueError, match=r"shard-00000.npy' is .* more than cache_limit=1000 B: raise cache_limit"):
        ds[0]


def test_a_remote_pack_pickles_without_its_filesystem_and_reads_in_workers(tmp_path, s3):
    local = _both(tmp_path, s3)
    ds = _remote(tmp_path, s3)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, multiprocessing_context="fork")
    xs = torch.cat([xb for xb, _ in loader])
    assert torch.equal(xs, PackedDataset(local)[np.arange(24)][0])


@pytest.mark.parametrize("encoded", [False, True])
def test_peek_sample_reads_one_sample_without_downloading_its_shard(tmp_path, s3, encoded):
    local = PackedDataset(_both(tmp_path, s3, encoded=encoded))
    ds = _remote(tmp_path, s3)
    x, y = ds.peek_sample(13)
    assert torch.equal(x, local[13][0]) and int(y) == int(local[13][1])
    assert _cached_files(tmp_path / "cache") == []  # nothing cached: a ranged request
    ds[13]
    assert torch.equal(ds.peek_sample(13)[0], x) and len(_cached_files(tmp_path / "cache")) == 1  # cached: read from it
