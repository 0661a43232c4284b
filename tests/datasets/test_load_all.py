import numpy as np
import pytest
import torch

from torchloader.datasets._load_all import default_num_workers, load_all
from torchloader.datasets.preloaded import _allocate_in_ram


class Samples(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_unlabelled_samples_load_without_y():
    x, y = load_all(
        Samples([np.full(3, i, np.int16) for i in range(70)]), _allocate_in_ram, num_workers=0, progress=False
    )
    assert y is None and x.dtype == torch.int16 and x[:, 0].tolist() == list(range(70))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_differing_dtype_is_named_like_a_differing_shape(workers):
    items = [(np.zeros(2, np.uint8), 0)] * 70 + [(np.zeros(2, np.float32), 0)]
    with pytest.raises(ValueError) as err:
        load_all(Samples(items), _allocate_in_ram, num_workers=workers, progress=False)
    assert str(err.value).startswith(
        "sample 70 has x (2,) torch.float32, y () torch.int64 but sample 64 has "
        "x (2,) torch.uint8, y () torch.int64; samples must share one shape and dtype"
    )


def test_samples_of_three_items_are_refused():
    with pytest.raises(ValueError) as err:
        load_all(Samples([(np.zeros(1), 0, "extra")]), _allocate_in_ram, num_workers=0, progress=False)
    assert str(err.value) == ("samples must be x or (x, y) to be stacked (got a tuple of 3 items)")


def test_an_empty_dataset_is_refused():
    with pytest.raises(ValueError, match="the dataset is empty"):
        load_all(Samples([]), _allocate_in_ram, progress=False)


def test_default_num_workers_uses_the_usable_cores():
    workers = default_num_workers()
    assert workers == 0 or 2 <= workers <= 8
