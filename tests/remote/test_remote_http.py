"""``https://``-style reads: a pack and image files served by Python's HTTP server on
127.0.0.1 (which ignores Range headers, as some servers do), read through fsspec's http."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from conftest import write_images

from torchloader import ChunkedLoader, PackedDataset, PathDataset, pack, verify_pack


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no line per request in the test output
        pass


@pytest.fixture
def http(tmp_path, monkeypatch):
    """``(base URL, the folder it serves)``; the default cache folder in ``tmp_path``."""
    monkeypatch.setenv("TORCHLOADER_CACHE", str(tmp_path / "default-cache"))
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.filterwarnings("ignore::torchloader.PoorShuffleWarning")
@pytest.mark.parametrize("encoded", [False, True])
def test_a_pack_served_over_http_reads_as_the_local_pack(tmp_path, http, encoded):
    base, root = http
    pack(write_images(tmp_path / "src"), root / "p", shard_bytes=1500, progress=False, encoded=encoded)
    local = PackedDataset(root / "p")
    ds = PackedDataset(f"{base}/p", cache_dir=tmp_path / "cache")
    assert torch.equal(ds.peek_sample(5)[0], local[5][0])  # a ranged read the server answers whole
    assert all(torch.equal(ds[i][0], local[i][0]) for i in range(len(ds)))
    loader = ChunkedLoader(PackedDataset(f"{base}/p", cache_dir=tmp_path / "c2"), 4, chunk_size=8, shuffle=False)
    try:
        assert torch.equal(torch.cat([yb for _, yb in loader]), torch.from_numpy(local.labels))
    finally:
        loader.close()
    assert verify_pack(f"{base}/p") == []
    assert not (tmp_path / "default-cache").exists()  # verify reads the objects, caches nothing


def test_a_csv_of_http_urls(tmp_path, http):
    base, root = http
    write_images(root / "imgs")
    csv = tmp_path / "files.csv"
    csv.write_text(f"path,label\n{base}/imgs/c1/003.png,1\n{base}/imgs/c0/000.png,0\n")
    ds = PathDataset.from_csv(csv)
    local = PathDataset.from_folder(root / "imgs")
    xb, yb = ds[[0, 1]]
    assert torch.equal(xb[0], local[15][0]) and torch.equal(xb[1], local[0][0]) and yb.tolist() == [1, 0]
