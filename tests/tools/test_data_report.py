import json
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from torchloader import PackedDataset, SampleLoadError, pack
from torchloader.tools import report as inspection
from torchloader.tools._advice import packed_copy
from torchloader.tools.cli import main
from torchloader.tools.report import inspect_data

MiB = 2**20


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    for c, count in (("cat", 6), ("dog", 3)):
        (root / c).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((12, 10, 3), i, np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def in_process(monkeypatch):
    """PreloadedDataset.from_dataset loads in this process (no workers to start)."""
    monkeypatch.setattr("torchloader.datasets._load_all.default_num_workers", lambda: 0)


def run_python(line):
    """Run a recommended line of Python as it is; its variables."""
    scope = {}
    exec(line, scope)
    return scope


def test_an_image_folder_that_fits_is_to_be_preloaded(images):
    report = inspect_data(images)
    assert (report.kind, report.samples, report.classes) == ("images", 9, 2)
    assert report.class_counts == {"cat": 6, "dog": 3}
    assert report.shapes == [[3, 12, 10]]
    assert report.dtype == "uint8"
    assert report.bytes_on_disk == sum(p.stat().st_size for p in images.rglob("*.png"))
    assert report.recommendation.startswith("preload")
    assert (report.probed, report.unreadable, report.errors) == (9, 0, [])


def test_images_of_many_sizes_get_their_size_spread_and_crops_that_run(tmp_path, in_process):
    root = tmp_path / "mixed"
    sizes = [(10, 30), (20, 14), (14, 18), (40, 12), (16, 16)]  # height, width
    for i, (h, w) in enumerate(sizes):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(root / f"c{i % 2}" / f"{i}.jpg")

    report = inspect_data(root)

    assert report.sizes == {"height": [10, 16, 40], "width": [12, 16, 30]}
    assert "image sizes    height 10/16/40, width 12/16/30 (min/median/max of 5 probed)" in str(report)
    assert report.recommendation == ("crop as they decode: a DataLoader over PathDataset(decode=RandomResizedCrop(16))")
    assert "decode=RandomResizedCrop(16)" in report.python and report.shell == ""
    loader = run_python(report.python)["loader"]  # what the report prints runs on the folder
    batches = list(loader)
    assert {tuple(x.shape[1:]) for x, _ in batches} == {(3, 16, 16)}
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == [0, 0, 0, 1, 1]
    assert any("decode=CenterCrop(16, resize=18)" in reason for reason in report.reasons)
    pack_hint = f"or resize them once to the median size: torchloader pack {root} {root}-packed --size 16 16 --crop"
    assert pack_hint in report.reasons
    encoded = f"torchloader pack {root} {root}-packed --encoded, then PackedDataset('{root}-packed', decode="
    assert any(encoded in reason for reason in report.reasons)


def test_images_of_one_size_are_preloaded_as_they_are(tmp_path, in_process):
    root = tmp_path / "same"
    for i in range(3):
        (root / "c").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 4, 3), i, np.uint8)).save(root / "c" / f"{i}.png")

    report = inspect_data(root)

    assert report.sizes == {"height": [6, 6, 6], "width": [4, 4, 4]}
    assert report.recommendation == "preload (it fits in RAM)" and "Resize" not in report.python
    assert tuple(run_python(report.python)["ds"].x.shape) == (3, 3, 6, 4)


@pytest.fixture
def scraped(tmp_path):
    """A folder of images of two sizes and one file of garbage bytes named .jpg."""
    root = tmp_path / "scraped"
    for i in range(6):
        (root / f"class_{'ab'[i % 2]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8 + 4 * (i % 2), 10, 3), i, np.uint8)).save(root / f"class_{'ab'[i % 2]}" / f"{i}.jpg")
    (root / "class_a" / "bad.jpg").write_bytes(b"\x00 not a jpeg \xff" * 5)
    return root


def test_a_bad_file_is_counted_and_listed_and_inspection_goes_on(scraped, capsys):
    bad = scraped / "class_a" / "bad.jpg"
    report = inspect_data(scraped)

    assert (report.samples, report.probed, report.unreadable) == (7, 7, 1)
    assert report.errors == [f"{bad}: UnidentifiedImageError: cannot identify image file '{bad}'"]
    assert report.sizes == {"height": [8, 10, 12], "width": [10, 10, 10]}
    assert main(["inspect", str(scraped)]) == 0
    out = capsys.readouterr().out
    assert f"  unreadable     1 of 7 probed files (skipped):\n    {bad}: UnidentifiedImageError" in out
    assert main(["inspect", str(scraped), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["errors"] == report.errors


def test_on_error_raise_stops_at_the_bad_file_without_a_traceback(scraped, capsys):
    with pytest.raises(SampleLoadError, match="bad.jpg"):
        inspect_data(scraped, on_error="raise")
    assert main(["inspect", str(scraped), "--on-error", "raise"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("torchloader inspect: could not load sample ") and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["inspect", "--help"])
    assert "--on-error {skip,raise}" in capsys.readouterr().out


def test_with_a_bad_file_the_recommended_pack_and_load_run(scraped, in_process):
    report = inspect_data(scraped)
    dst = packed_copy(str(scraped))

    assert report.recommendation == "pack first, then preload (it fits in RAM)"
    assert report.shell == f"torchloader pack {scraped} {dst} --size 10 10 --crop --on-error skip"
    argv = shlex.split(report.shell)
    done = subprocess.run(
        [sys.executable, "-m", "torchloader", *argv[1:], "--workers", "0", "--quiet"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    ds = run_python(report.python)["ds"]
    assert tuple(ds.x.shape) == (6, 3, 10, 10) and len(PackedDataset(dst)) == 6


def test_images_too_big_for_ram_are_to_be_packed(images, monkeypatch):
    monkeypatch.setattr(inspection, "available_ram", lambda: 1000)
    report = inspect_data(images)
    assert report.recommendation == "pack first, then chunked: ChunkedLoader, ram_budget='250 B'"
    assert report.shell == f"torchloader pack {images} {images}-packed"
    assert report.python == (
        "from torchloader import ChunkedLoader, PackedDataset; "
        f"loader = ChunkedLoader(PackedDataset('{images}-packed'), 256, ram_budget='250 B')"
    )


def test_arrays_of_many_shapes_get_no_loader_that_would_fail(tmp_path):
    for i in range(3):
        np.save(tmp_path / f"{i}.npy", np.zeros((2, 2 + i), np.float32))
    report = inspect_data(tmp_path)
    assert report.recommendation.startswith("none as they are: the arrays differ in shape")
    assert report.python == report.shell == "" and report.sizes == {}


def test_arrays_too_big_for_ram_are_to_be_read_in_chunks(tmp_path, monkeypatch):
    for i in range(4):
        np.save(tmp_path / f"{i}.npy", np.zeros((8, 8), np.float32))
    monkeypatch.setattr(inspection, "available_ram", lambda: 400)
    report = inspect_data(tmp_path)
    assert (report.kind, report.classes, report.shapes, report.dtype) == ("arrays", 0, [[8, 8]], "float32")
    assert report.bytes_decoded == 4 * 256
    assert report.recommendation == "chunked: ChunkedLoader, ram_budget='100 B'"
    assert "loader = ChunkedLoader(PathDataset(sorted(str(f) for f in pathlib.Path(" in report.python


def test_the_preload_line_for_a_folder_of_arrays_runs(tmp_path, in_process):
    for i in range(4):
        np.save(tmp_path / f"{i}.npy", np.full((2, 3), i, np.float32))
    ds = run_python(inspect_data(tmp_path).python)["ds"]
    assert ds.x[:, 0, 0].tolist() == [0, 1, 2, 3]


def test_a_packed_directory_reads_its_manifest(images, tmp_path):
    pack(images, tmp_path / "packed", size=8, num_workers=0, progress=False)
    report = inspect_data(tmp_path / "packed")
    assert (report.kind, report.samples, report.shapes) == ("packed", 9, [[3, 8, 8]])
    assert report.bytes_decoded == 9 * 3 * 8 * 8
    assert report.python.endswith(f"PreloadedDataset.from_dataset(PackedDataset({str(tmp_path / 'packed')!r}))")


def test_cli_prints_a_report_or_json(images, capsys):
    assert main(["inspect", str(images)]) == 0
    assert "recommendation preload" in capsys.readouterr().out
    assert main(["inspect", str(images), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 9
