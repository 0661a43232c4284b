"""Tests for torchloader/_core/sizes.py: the byte size of one sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchloader._core import sizes
from torchloader._core.sizes import nbytes, sample_nbytes


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.int16, torch.float16, torch.float32, torch.int64])
@pytest.mark.parametrize("shape", [(), (0,), (3,), (3, 4), (2, 3, 5)])
def test_nbytes_of_a_tensor_is_elements_times_element_size(shape, dtype):
    t = torch.zeros(shape, dtype=dtype)
    assert nbytes(t) == t.numel() * t.element_size()


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.int32, np.float64])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (2, 3)])
def test_nbytes_of_an_array(shape, dtype):
    a = np.zeros(shape, dtype=dtype)
    assert nbytes(a) == a.nbytes
    assert type(nbytes(a)) is int


def test_nbytes_of_a_view_counts_only_its_own_elements():
    big = torch.zeros(100, 100, dtype=torch.float32)
    assert nbytes(big[:2, ::10]) == 2 * 10 * 4
    assert nbytes(np.zeros((100, 100), np.uint8)[5]) == 100


@pytest.mark.parametrize("value", [0, 7, -1, 2.5, True, np.int64(3), np.float32(1.5), np.bool_(True)])
def test_nbytes_of_a_number_is_eight(value):
    assert nbytes(value) == 8


def test_nbytes_adds_up_nested_containers():
    image = torch.zeros(3, 4, 5, dtype=torch.uint8)  # 60
    mask = np.zeros((4, 5), dtype=np.float32)  # 80
    sample = {"image": image, "extra": [mask, (1, 2.0)], "label": 3}
    assert nbytes(sample) == 60 + 80 + 8 + 8 + 8
    assert nbytes((image, 7)) == 68
    assert nbytes(()) == nbytes([]) == nbytes({}) == 0


@pytest.mark.parametrize(
    ("value", "type_name"),
    [("cat", "str"), (None, "NoneType"), (b"x", "bytes"), (object(), "object"), ({1}, "set")],
)
def test_nbytes_rejects_what_it_cannot_size(value, type_name):
    with pytest.raises(TypeError) as info:
        nbytes(value)
    assert str(info.value) == (
        f"cannot tell the byte size of a {type_name}; samples should be tensors or arrays (or tuples/dicts of them)"
    )


def test_nbytes_names_the_bad_part_of_a_nested_sample():
    with pytest.raises(TypeError, match="cannot tell the byte size of a str"):
        nbytes((torch.zeros(2), "path/to/file.png"))


class _Samples:
    def __init__(self, sample, n=4):
        self.sample, self.n = sample, n
        self.calls = 0

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        self.calls += 1
        return self.sample


class _KnownSize(_Samples):
    def __init__(self, known):
        super().__init__(sample=None)
        self.known = known

    @property
    def sample_nbytes(self):
        return self.known

    def __getitem__(self, index):
        raise AssertionError("sample_nbytes must not load a sample when the size is known")


def test_sample_nbytes_measures_the_first_sample():
    ds = _Samples((torch.zeros(3, 4, dtype=torch.uint8), 7))
    assert sample_nbytes(ds) == 20
    assert ds.calls == 1


@pytest.mark.parametrize("known", [1, 4096, np.int64(12)])
def test_sample_nbytes_prefers_the_dataset_attribute(known):
    size = sample_nbytes(_KnownSize(known))
    assert size == int(known)
    assert type(size) is int


def test_sample_nbytes_falls_back_when_the_attribute_is_none():
    ds = _Samples(np.zeros(10, np.float32))
    ds.sample_nbytes = None
    assert sample_nbytes(ds) == 40


def test_all_is_sorted():
    assert sizes.__all__ == sorted(sizes.__all__) == ["nbytes", "sample_nbytes"]
