"""Tests for torchloader/bench.py and ``torchloader bench`` (no timing is asserted)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from torchloader import pack
from torchloader.bench import BOUND, MODES, Measurement, bench, format_table, open_for_bench, plot
from torchloader.cli import main
from helpers import IGNORE_FORK_WARNING, china

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
    results = bench(folder, workers=[0, 2], batch_size=8, progress=False)

    assert results[0].name == BOUND and results[0].samples_per_s > 0
    rows = rows_by_key(results[1:])
    assert set(rows) == {(m, w) for m in MODES for w in (0, 2)}
    for key in [("dataloader", 0), ("dataloader", 2), ("path", 0), ("path", 2), ("chunked", 0),
                ("chunked", 2), ("chunked-threads", 2), ("preload", 0)]:  # fmt: skip
        assert rows[key].skipped is None and rows[key].samples_per_s > 0, key
    assert rows[("packed", 0)].skipped.startswith("not a packed directory")
    assert rows[("chunked-threads", 0)].skipped == "threads need workers > 0"
    assert rows[("preload", 2)].skipped == "in RAM: workers only add copies (use 0)"
    assert rows[("path", 2)].name == "PathDataset.dataloader(), 2 workers"


def test_a_packed_directory_is_measured_as_packed(folder, tmp_path):
    pack(folder, str(tmp_path / "p"), workers=0, progress=False)

    rows = rows_by_key(bench(str(tmp_path / "p"), modes=["packed", "path", "dataloader"], workers=[0],
                             batch_size=8, progress=False))  # fmt: skip

    assert rows[("packed", 0)].samples_per_s > 0
    assert rows[("path", 0)].skipped == "the data is packed: see packed"
    assert rows[("dataloader", 0)].name == "DataLoader(PackedDataset), per-sample collate, 0 workers"


def test_limit_takes_samples_spread_over_the_data_set(folder):
    ds = open_for_bench(folder, limit=6)

    assert len(ds) == 6
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]  # both class folders


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


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "chart.png"

    plot([Measurement(BOUND, "bound", None, 1000.0), Measurement("a", "path", 0, 10.0)], str(out))

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_prints_the_table_and_draws_the_chart(folder, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    chart = tmp_path / "c.png"

    status = main(["bench", folder, "--modes", "path", "dataloader", "--workers", "0",
                   "--batch-size", "8", "--quiet", "--plot", str(chart)])  # fmt: skip

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


def test_the_command_reports_a_missing_folder(tmp_path, capsys):
    status = main(["bench", str(tmp_path / "nothing"), "--quiet"])

    assert status == 1
    assert capsys.readouterr().err.startswith("torchloader bench: ")
