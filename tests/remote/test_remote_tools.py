"""``torchloader inspect``, ``bench``, ``pack`` and ``verify`` with a URL, configured as a user
would be for S3 (the endpoint and keys in the environment)."""

from __future__ import annotations

import pytest
from conftest import write_images

from torchloader import inspect_data
from torchloader.tools.bench import bench
from torchloader.tools.cli import main


@pytest.fixture
def env(s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "cli")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    return s3


def test_the_command_line_packs_verifies_inspects_and_benches_a_url(tmp_path, env, capsys):
    src = write_images(tmp_path / "src")
    assert main(["pack", str(src), "s3://bucket/cli.packed", "--quiet"]) in (0, None)
    assert main(["verify", "s3://bucket/cli.packed"]) in (0, None)
    assert "every file matches the manifest" in capsys.readouterr().out
    report = inspect_data("s3://bucket/cli.packed")
    assert report.kind == "packed" and report.samples == 24 and report.class_counts == {"c0": 12, "c1": 12}
    rows = bench("s3://bucket/cli.packed", modes=["chunked"], num_workers=[0], batch_size=8, progress=False)
    network = rows[0]
    assert network.mode == "network" and network.samples_per_s > 0 and "/s" in network.name
    assert [r.mode for r in rows[1:]] == ["bound", "chunked"] and rows[2].samples_per_s > 0
    assert ("cli", "GET", "/bucket/cli.packed/shard-00000.npy") in env.requests
