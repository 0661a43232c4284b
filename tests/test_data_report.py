import json

import numpy as np
import pytest
from PIL import Image

from torchloader import data_report as inspection
from torchloader import pack
from torchloader.cli import main
from torchloader.data_report import inspect_data

MiB = 2**20


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    for c, count in (("cat", 6), ("dog", 3)):
        (root / c).mkdir(parents=True)
        for i in range(count):
            size = (12, 10) if i else (16, 10)  # one image of another size per class
            Image.fromarray(np.full((*size, 3), i, np.uint8)).save(root / c / f"{i}.png")
    return root


def test_an_image_folder_that_fits_is_to_be_preloaded(images):
    report = inspect_data(images)
    assert (report.kind, report.samples, report.classes) == ("images", 9, 2)
    assert report.class_counts == {"cat": 6, "dog": 3}
    assert report.shapes == [[3, 12, 10], [3, 16, 10]]
    assert report.dtype == "uint8"
    assert report.bytes_on_disk == sum(p.stat().st_size for p in images.rglob("*.png"))
    assert report.recommendation.startswith("preload")
    assert any("differ in shape" in reason for reason in report.reasons)


def test_images_too_big_for_ram_are_to_be_packed(images, monkeypatch):
    monkeypatch.setattr(inspection, "available_ram", lambda: 1000)
    assert inspect_data(images).recommendation.startswith("pack first: torchloader pack")


def test_arrays_too_big_for_ram_are_to_be_read_in_chunks(tmp_path, monkeypatch):
    for i in range(4):
        np.save(tmp_path / f"{i}.npy", np.zeros((8, 8), np.float32))
    monkeypatch.setattr(inspection, "available_ram", lambda: 400)
    report = inspect_data(tmp_path)
    assert (report.kind, report.classes, report.shapes, report.dtype) == ("arrays", 0, [[8, 8]], "float32")
    assert report.bytes_decoded == 4 * 256
    assert report.recommendation == "chunked: ChunkedLoader(ds, batch_size, ram_budget='100 B')"


def test_a_packed_directory_reads_its_manifest(images, tmp_path):
    pack(images, tmp_path / "packed", size=8, workers=0, progress=False)
    report = inspect_data(tmp_path / "packed")
    assert (report.kind, report.samples, report.shapes) == ("packed", 9, [[3, 8, 8]])
    assert report.bytes_decoded == 9 * 3 * 8 * 8


def test_cli_prints_a_report_or_json(images, capsys):
    assert main(["inspect", str(images)]) == 0
    assert "recommendation preload" in capsys.readouterr().out
    assert main(["inspect", str(images), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 9
