"""Tests for torchloader/_core/progress.py: torchloader's progress bars start no thread."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tqdm.auto
import tqdm.std

from torchloader import PreloadedDataset, pack
from torchloader._core.progress import progress_bar


@pytest.fixture
def monitors(monkeypatch):
    """The tqdm monitor threads started during the test (none running as it begins, for
    any class: a bar of an earlier test or library left one, which tqdm then reuses)."""
    started = []
    real = tqdm.std.TMonitor.__init__

    def spy(self, *args, **kwargs):
        started.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(tqdm.std.TMonitor, "__init__", spy)
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 10)  # tqdm's default (tests/conftest.py: 0)
    for cls in {tqdm.std.tqdm, tqdm.auto.tqdm, progress_bar}:
        monkeypatch.setattr(cls, "monitor", None)
    yield started
    for monitor in started:
        monitor.exit()


def test_a_plain_tqdm_bar_starts_a_monitor_even_disabled(monitors):
    with tqdm.auto.tqdm(total=1, disable=True):  # the control: what the test would see
        pass
    assert len(monitors) == 1


@pytest.mark.parametrize("progress", [True, False])
def test_preloading_and_packing_start_no_monitor_thread(monitors, tmp_path, progress):
    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return np.full((2, 2), i, dtype=np.uint8), i % 2

    PreloadedDataset.from_dataset(Squares(), num_workers=0, progress=progress)
    for i in range(4):
        np.save(tmp_path / f"{i}.npy", np.full((2, 2), i, dtype=np.uint8))
    pack(tmp_path, tmp_path.with_name(tmp_path.name + ".packed"), progress=progress)
    assert monitors == []
