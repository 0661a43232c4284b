import json

import numpy as np
import pytest
import torch

from torchloader.datasets._preload_cache import PreloadCache


def write(root, n=5):
    cache = PreloadCache(root)
    x, y = cache.allocate(n, torch.zeros(2, dtype=torch.uint8), torch.zeros((), dtype=torch.int64))
    x[:] = torch.arange(n, dtype=torch.uint8)[:, None]
    y[:] = torch.arange(n)
    del x, y
    cache.commit()
    return cache


def test_written_arrays_read_back_memory_mapped(tmp_path):
    write(tmp_path)
    x, y = PreloadCache(tmp_path).open(expected_len=5)
    assert x[:, 1].tolist() == [0, 1, 2, 3, 4] and y.tolist() == [0, 1, 2, 3, 4]
    assert np.load(tmp_path / "x.npy").shape == (5, 2)  # plain .npy files


def test_nothing_counts_as_a_cache_until_commit(tmp_path):
    cache = PreloadCache(tmp_path)
    cache.allocate(5, torch.zeros(2), None)
    assert not cache.exists()
    assert not (tmp_path / "x.npy").exists()


def test_a_foreign_meta_file_names_the_file_and_the_fix(tmp_path):
    write(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "other", "version": 9}))
    with pytest.raises(ValueError) as err:
        PreloadCache(tmp_path).open(expected_len=None)
    assert str(err.value) == (
        f"'{tmp_path / 'meta.json'}' is not a torchloader preload cache of version 1 "
        f"(found format='other', version=9); delete '{tmp_path}' to rebuild it"
    )


def test_an_array_that_does_not_match_meta_is_refused(tmp_path):
    write(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((4, 2), np.uint8))
    with pytest.raises(ValueError, match="has shape \\[4, 2\\] but meta.json says \\[5, 2\\]"):
        PreloadCache(tmp_path).open(expected_len=None)
