"""``PathDataset`` over URLs: a bucket folder read as the local folder is, a batch's files
requested at once, a CSV of ``s3://`` paths, and a missing object named."""

from __future__ import annotations

import pytest
import s3fs
import torch
from conftest import write_images

from torchloader import ChunkedLoader, PathDataset, SampleLoadError


@pytest.fixture
def bucket_folder(tmp_path, s3):
    src = write_images(tmp_path / "src", classes=3, per_class=6)
    s3fs.S3FileSystem(**s3.storage_options()).put(str(src) + "/", "bucket/imgs/", recursive=True)
    return src


def test_a_bucket_folder_reads_as_the_local_folder_in_every_path(tmp_path, s3, bucket_folder):
    local = PathDataset.from_folder(bucket_folder)
    remote = PathDataset.from_folder("s3://bucket/imgs", storage_options=s3.storage_options())
    assert remote.classes == local.classes and remote.path(0) == "s3://bucket/imgs/c0/000.png"
    assert torch.equal(
        remote.labels_of_all() if hasattr(remote, "labels_of_all") else torch.from_numpy(remote.labels),
        torch.from_numpy(local.labels),
    )
    x, y = remote[5]
    assert torch.equal(x, local[5][0]) and int(y) == int(local[5][1])
    s3.latency = 0.05
    xb, yb = remote[list(range(18))]
    assert torch.equal(xb, local[list(range(18))][0]) and s3.peak_in_flight > 1  # requested at once
    s3.latency = 0.0
    loader = ChunkedLoader(
        remote, batch_size=6, chunk_size=9, shuffle=False, num_workers=2, multiprocessing_context="fork"
    )
    try:
        assert torch.equal(torch.cat([xb for xb, _ in loader]), local[list(range(18))][0])
    finally:
        loader.close()


def test_a_csv_of_s3_paths_and_a_missing_object_named_with_its_index(tmp_path, s3, bucket_folder):
    csv = tmp_path / "train.csv"
    csv.write_text("path,label\ns3://bucket/imgs/c1/002.png,1\ns3://bucket/imgs/c9/404.png,0\n")
    ds = PathDataset.from_csv(csv, storage_options=s3.storage_options())
    assert torch.equal(ds[0][0], PathDataset.from_folder(bucket_folder)[8][0])
    with pytest.raises(SampleLoadError, match=r"sample 1 from 's3://bucket/imgs/c9/404.png'.*FileNotFoundError"):
        ds[1]
    with pytest.raises(SampleLoadError, match=r"sample 1 from 's3://bucket/imgs/c9/404.png'"):
        ds[[0, 1]]


def test_an_empty_bucket_folder_is_refused_by_name(s3):
    with pytest.raises(FileNotFoundError, match=r"'s3://bucket/none' holds no files ending in .jpg"):
        PathDataset.from_folder("s3://bucket/none", storage_options=s3.storage_options())


def test_a_batch_asks_for_each_file_once(s3, bucket_folder):
    ds = PathDataset.from_folder("s3://bucket/imgs", storage_options=s3.storage_options())
    s3.requests.clear()
    ds[list(range(8))]
    assert len(s3.gets(suffix=".png")) == 8
    s3.requests.clear()
    list(ds.dataloader(4, shuffle=False))
    assert len(s3.gets(suffix=".png")) == 18
