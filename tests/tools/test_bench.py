"""Tests for torchloader/tools/bench.py and ``torchloader bench`` (no timing is asserted)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import IGNORE_FORK_WARNING, china
from PIL import Image

from torchloader import pack
from torchloader.tools import bench as bench_module
from torchloader.tools.bench import (
    BOUND,
    BOUND_RUNS,
    BOUND_WARMUP,
    MODES,
    OVER_BOUND,
    Measurement,
    bench,
    format_table,
    gather_bound,
    open_for_bench,
    plot,
)
from torchloader.tools.cli import main

N = 24


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "images"
    for i in range(N):
        path = root / f"c{i % 2}" / f"{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(china()[5 * i : 5 * i + 16, 7 * i : 7 * i + 16]).save(path, quality=90)
    return str(root)


def rows_by_key(results):
    return {(r.mode, r.workers): r for r in results}


@IGNORE_FORK_WARNING
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_every_mode_that_applies_is_measured_with_every_worker_count(folder):
    results = bench(folder, num_workers=[0, 2], batch_size=8, progress=False)

    assert results[0].name == f"{BOUND[:-1]}, best of {BOUND_RUNS} epochs after {BOUND_WARMUP} warm-up epochs)"
    assert results[0].mode == "bound" and results[0].samples_per_s > 0
    rows = rows_by_key(results[1:])
    assert set(rows) == {(m, w) for m in MODES for w in (0, 2)}
    for key in [
        ("dataloader", 0),
        ("dataloader", 2),
        ("path", 0),
        ("path", 2),
        ("chunked", 0),
        ("chunked", 2),
        ("chunked-threads", 2),
        ("preload", 0),
    ]:
        assert rows[key].skipped is None and rows[key].samples_per_s > 0, key
    assert rows[("packed", 0)].skipped.startswith("not a packed directory")
    assert rows[("chunked-threads", 0)].skipped == "threads need workers > 0"
    assert rows[("preload", 2)].skipped == "in RAM: workers only add copies (use 0)"
    assert rows[("path", 2)].name == "PathDataset.dataloader(), 2 workers"


def test_a_packed_directory_is_measured_as_packed(folder, tmp_path):
    pack(folder, str(tmp_path / "p"), num_workers=0, progress=False)

    rows = rows_by_key(
        bench(
            str(tmp_path / "p"), modes=["packed", "path", "dataloader"], num_workers=[0], batch_size=8, progress=False
        )
    )

    assert rows[("packed", 0)].samples_per_s > 0
    assert rows[("path", 0)].skipped == "the data is packed: see packed"
    assert rows[("dataloader", 0)].name == "DataLoader(PackedDataset), per-sample collate, 0 workers"


def test_limit_takes_samples_spread_over_the_data_set(folder):
    ds = open_for_bench(folder, limit=6)

    assert len(ds) == 6
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]  # both class folders


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """JPEGs of 12 sizes, a folder and its encoded pack."""
    root = tmp_path_factory.mktemp("bench-mixed") / "images"
    for i in range(12):
        path = root / f"c{i % 2}" / f"{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(china()[: 20 + 3 * i, : 40 - 2 * i]).save(path, quality=90)
    pack(root, root.parent / "packed", encoded=True, num_workers=0, progress=False)
    return str(root), str(root.parent / "packed")


@pytest.mark.parametrize("which", [0, 1])
def test_images_of_many_sizes_are_benched_as_random_crops(mixed, which, capsys):
    results = bench(mixed[which], modes=["dataloader", "chunked", "preload"], num_workers=[0], crop=16, progress=False)
    rows = rows_by_key(results[1:])
    assert rows[("dataloader", 0)].samples_per_s > 0 and rows[("chunked", 0)].samples_per_s > 0
    assert rows[("preload", 0)].skipped == "random crops: new ones each epoch, nothing to load once"
    assert {tuple(open_for_bench(mixed[which], crop=16)[i][0].shape) for i in range(12)} == {(3, 16, 16)}
    args = ["bench", mixed[which], "--crop", "16", "--modes", "dataloader", "--num-workers", "0", "--quiet"]
    assert main(args) == 0 and "samples/s" in capsys.readouterr().out


def test_images_of_many_sizes_without_a_crop_say_how_to_decode_them(mixed):
    with pytest.raises(ValueError, match=r"decode=RandomResizedCrop\(size\) or CenterCrop\(size\)"):
        bench(mixed[0], modes=["dataloader"], num_workers=[0], progress=False)


def test_unknown_modes_are_refused_with_the_choices(folder):
    with pytest.raises(ValueError, match=r"^unknown mode\(s\) \['fast'\]; choose from \['dataloader', "):
        bench(folder, modes=["fast"], progress=False)


def test_the_table_gives_ratios_to_the_bound_and_the_plain_dataloader():
    results = [
        Measurement(BOUND, "bound", None, 1000.0),
        Measurement("DataLoader(x), 0 workers", "dataloader", 0, 100.0, 2**20),
        Measurement("PathDataset.dataloader(), 0 workers", "path", 0, 250.0, 3 * 2**20),
        Measurement("PackedDataset.dataloader(), 0 workers", "packed", 0, skipped="not packed"),
    ]

    assert format_table(results).splitlines() == [
        "| mode | samples/s | vs bound | vs DataLoader, same workers | peak memory |",
        "|---|---|---|---|---|",
        f"| {BOUND} | 1,000 | 1.00x |  |  |",
        "| DataLoader(x), 0 workers | 100 | 0.10x | 1.00x | 1.0 MiB |",
        "| PathDataset.dataloader(), 0 workers | 250 | 0.25x | 2.50x | 3.0 MiB |",
        "",
        "not run: packed: not packed",
    ]


def test_a_row_above_the_bound_is_flagged_as_a_measurement_error():
    results = [
        Measurement(BOUND, "bound", None, 1000.0),
        Measurement("PreloadedDataset.dataloader(), 0 workers", "preload", 0, 14920.0),
        Measurement("PathDataset.dataloader(), 0 workers", "path", 0, 1000.0),  # equal: not above
    ]

    lines = format_table(results).splitlines()

    assert lines[2:] == [
        f"| {BOUND} | 1,000 | 1.00x |  |  |",
        "| PreloadedDataset.dataloader(), 0 workers | 14,920 | 14.92x ! |  |  |",
        "| PathDataset.dataloader(), 0 workers | 1,000 | 1.00x |  |  |",
        "",
        OVER_BOUND,
    ]
    assert OVER_BOUND.startswith("! faster than the in-RAM gather bound") and "measurement error" in OVER_BOUND
    assert "!" not in format_table(results[:1] + results[2:])


def test_the_bound_is_the_best_of_its_timed_epochs_after_untimed_warm_ups(monkeypatch):
    events, durations = [], iter([4.0, 1.0, 2.0])  # seconds of each timed epoch, from a fake clock
    now = [0.0]
    real_randperm = torch.randperm

    def randperm(n):
        events.append("epoch")
        return real_randperm(n)

    def clock():
        events.append("clock")
        if events.count("clock") % 2 == 0:
            now[0] += next(durations)
        return now[0]

    monkeypatch.setattr(bench_module.torch, "randperm", randperm)
    x = torch.arange(10 * 3, dtype=torch.uint8).reshape(10, 3)

    rate = gather_bound(x, 4, min_epochs=3, warmup=2, clock=clock)

    assert events == ["epoch", "epoch"] + ["clock", "epoch", "clock"] * 3
    assert rate == 10 / 1.0  # the best epoch, not the first (the cold one) nor the median


def test_preload_loads_inside_its_measurement_so_its_data_counts_as_its_memory():
    built = []

    class Preloaded:
        def dataloader(self, batch_size, **options):
            return ("loader", batch_size, options["num_workers"])

    def preloaded():
        built.append(1)
        return Preloaded()

    make = bench_module._loader("preload", None, 0, 8, 0, preloaded)

    assert built == []  # not before time_epochs takes the memory baseline, but in make()
    assert make() == ("loader", 8, 0) and built == [1]


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "chart.png"

    plot([Measurement(BOUND, "bound", None, 1000.0), Measurement("a", "path", 0, 10.0)], str(out))

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_prints_the_table_and_draws_the_chart(folder, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    chart = tmp_path / "c.png"

    status = main(
        [
            "bench",
            folder,
            "--modes",
            "path",
            "dataloader",
            "--workers",
            "0",
            "--batch-size",
            "8",
            "--quiet",
            "--plot",
            str(chart),
        ]
    )

    out = capsys.readouterr().out
    assert status == 0
    assert out.splitlines()[0] == f"{folder}: batch 8, shuffled, median of 1 epoch(s) after a warm-up"
    assert "| PathDataset.dataloader(), 0 workers | " in out
    assert chart.exists()


def test_the_command_prints_json(folder, capsys):
    status = main(["bench", folder, "--modes", "path", "--workers", "0", "--batch-size", "8", "--quiet", "--json"])

    rows = json.loads(capsys.readouterr().out)
    assert status == 0
    assert [r["mode"] for r in rows] == ["bound", "path"]
    assert rows[1]["samples_per_s"] > 0 and rows[1]["workers"] == 0


def test_the_command_prints_a_folder_whose_name_is_not_utf8(tmp_path, capsys):
    # capsys's stream encodes strictly, as PYTHONIOENCODING=utf-8 does
    root = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"images\xff"))
    os.makedirs(os.path.join(root, "c"))
    for i in range(4):
        Image.fromarray(china()[:8, 8 * i : 8 * i + 8]).save(os.path.join(root, "c", f"{i}.jpg"))

    status = main(["bench", root, "--modes", "path", "--workers", "0", "--batch-size", "2", "--quiet"])

    assert status == 0
    assert capsys.readouterr().out.startswith(f"{repr(root)[1:-1]}: batch 2, shuffled")


def test_the_command_reports_a_missing_folder(tmp_path, capsys):
    status = main(["bench", str(tmp_path / "nothing"), "--quiet"])

    assert status == 1
    assert capsys.readouterr().err.startswith("torchloader bench: ")
