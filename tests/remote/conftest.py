"""The S3 server of the remote tests (``tests/s3server.py``): one per test, on 127.0.0.1,
with the bucket ``bucket``; the cache and pack staging folders in ``tmp_path``."""

from __future__ import annotations

import numpy as np
import pytest
import s3fs
from PIL import Image
from s3server import S3Server


@pytest.fixture
def s3(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHLOADER_CACHE", str(tmp_path / "default-cache"))  # pack's staging folder
    # no instance metadata service here: botocore would wait for it in every new process
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = S3Server()
    try:
        s3fs.S3FileSystem(**server.storage_options()).mkdir("bucket")
        yield server
    finally:
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()  # clients of a stopped server: nothing more to reach


def write_images(root, classes=2, per_class=12, size=(12, 10), seed=0):
    """A class-per-folder tree of small PNGs, each with its own pixels."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i:03d}.png")
    return root
