import math
import random

import numpy as np
import pytest
import torch

from torchloader import from_sequence
from torchloader.datasets.sequence import SequenceDataset


class KerasStyleLoader:
    """A classic Keras ``Sequence`` loader, as tutorials write it, minus the Keras base class.

    Its on_epoch_end shuffles with NumPy's global generator, which differs per
    DataLoader worker unless the adapter makes it agree.
    """

    def __init__(self, x_set, y_set, batch_size, shuffle=False):
        self.x, self.y = x_set, y_set
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def on_epoch_end(self):
        self.indices = np.arange(len(self.x))
        if self.shuffle == True:  # noqa: E712 - as the tutorial writes it
            np.random.shuffle(self.indices)

    def __getitem__(self, index):
        indices = self.indices[index * self.batch_size : (index + 1) * self.batch_size]
        return self.x[indices], self.y[indices]


def epochs_of(loader, count):
    return [torch.cat([yb for _, yb in loader]).tolist() for _ in range(count)]


def make_seq(shuffle=True):
    np.random.seed(0)  # the first shuffle runs in __init__, under the caller's seed
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    return KerasStyleLoader(x, np.arange(20), batch_size=6, shuffle=shuffle)


def test_batches_become_tensors_in_order():
    loader = from_sequence(make_seq(shuffle=False))
    xb, yb = next(iter(loader))
    assert isinstance(xb, torch.Tensor) and xb.shape == (6, 2)
    assert epochs_of(loader, 1) == [list(range(20))]
    assert len(loader) == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_workers": 0},
        {"num_workers": 2},
        {"num_workers": 2, "persistent_workers": True},
        {"num_workers": 2, "multiprocessing_context": "spawn", "persistent_workers": True},
    ],
)
def test_every_epoch_is_a_permutation_and_workers_agree_with_one_process(kwargs):
    reference = epochs_of(from_sequence(make_seq(), seed=7), 3)
    got = epochs_of(from_sequence(make_seq(), seed=7, **kwargs), 3)
    assert got == reference
    assert all(sorted(epoch) == list(range(20)) for epoch in got)
    assert got[1] != got[2]


def test_on_epoch_end_runs_once_between_epochs_and_leaves_global_rng_alone():
    calls = []

    class Counting:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return np.zeros(1), np.array([i])

        def on_epoch_end(self):
            calls.append(np.random.randint(1 << 30))

    np.random.seed(0)
    random.seed(0)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(0)
    random.seed(0)
    loader = from_sequence(Counting(), seed=1)
    epochs_of(loader, 3)
    assert len(calls) == 2  # after epoch 0 and after epoch 1, before 1 and 2 start
    assert (np.random.rand(), random.random()) == (expected_np, expected_py)


def test_sequence_without_on_epoch_end_works():
    class Plain:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.full((2,), i)

    assert [b.tolist() for b in from_sequence(Plain())] == [[0, 0], [1, 1], [2, 2]]


def test_from_sequence_refuses_batch_size():
    with pytest.raises(TypeError) as err:
        from_sequence(make_seq(), batch_size=4)
    assert str(err.value) == (
        "from_sequence() sets batch_size itself: a Sequence makes its own batches "
        "and its own order (shuffle in on_epoch_end)"
    )


def test_non_sequence_is_refused():
    with pytest.raises(TypeError, match="sequence must have __len__ like a keras.utils.Sequence"):
        SequenceDataset(object())


def test_going_back_an_epoch_is_refused():
    ds = SequenceDataset(make_seq())
    ds[(2, 0)]
    with pytest.raises(ValueError, match="epoch 1 was requested after epoch 2"):
        ds[(1, 0)]


def test_sequence_dataset_and_sampler_pickle():
    import pickle

    from torchloader.datasets.sequence import SequenceSampler

    dataset = SequenceDataset([np.zeros(1)])
    for obj in (dataset, SequenceSampler(dataset)):
        copy = pickle.loads(pickle.dumps(obj))
        assert type(copy) is type(obj)
    assert len(pickle.loads(pickle.dumps(dataset))) == len(dataset)
