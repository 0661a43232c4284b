import collections
import pickle

import pytest
import torch

from torchloader import DeviceLoader
from torchloader.device import move_to

Pair = collections.namedtuple("Pair", "x y")


def test_cpu_is_a_pass_through_of_every_batch_structure():
    batches = [
        torch.arange(3),
        (torch.ones(2), torch.zeros(2)),
        [torch.ones(1), {"a": torch.full((2,), 5), "b": "label"}],
        Pair(torch.ones(1), 7),
    ]
    out = list(DeviceLoader(batches, "cpu"))
    assert torch.equal(out[0], batches[0])
    assert isinstance(out[1], tuple) and torch.equal(out[1][1], torch.zeros(2))
    assert out[2][1]["b"] == "label" and torch.equal(out[2][1]["a"], torch.full((2,), 5))
    assert isinstance(out[3], Pair) and out[3].y == 7


def test_transform_runs_after_the_move():
    loader = DeviceLoader([torch.full((2,), 255, dtype=torch.uint8)], "cpu", transform=lambda b: b.float() / 255)
    (batch,) = list(loader)
    assert batch.dtype == torch.float32 and batch.tolist() == [1.0, 1.0]


def test_len_and_set_epoch_forward_to_the_wrapped_loader():
    class Loader(list):
        epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

    inner = Loader([torch.zeros(1)] * 4)
    loader = DeviceLoader(inner, "cpu")
    loader.set_epoch(3)
    assert len(loader) == 4 and inner.epoch == 3


def test_iterating_twice_gives_the_batches_twice():
    loader = DeviceLoader([torch.tensor(1), torch.tensor(2)], torch.device("cpu"))
    assert [b.item() for b in loader] == [b.item() for b in loader] == [1, 2]


def test_move_to_leaves_non_tensors_alone():
    assert move_to({"k": 1, "s": "x"}, torch.device("cpu")) == {"k": 1, "s": "x"}


def test_pickles():
    loader = pickle.loads(pickle.dumps(DeviceLoader([torch.zeros(1)], "cpu")))
    assert [b.tolist() for b in loader] == [[0.0]]


@pytest.mark.cuda
def test_cuda_batches_arrive_correct_and_copies_overlap_compute():
    torch.cuda.synchronize()
    n, size = 16, (4, 1024, 1024)  # 16 MiB per batch
    host = [torch.full(size, i, dtype=torch.uint8).pin_memory() for i in range(n)]
    loader = DeviceLoader(host, "cuda", transform=lambda b: b.float())
    weight = torch.randn(1024, 1024, device="cuda")
    for i, batch in enumerate(loader):
        assert batch.is_cuda and batch.dtype == torch.float32
        assert batch[0, 0, 0].item() == i and batch.sum().item() == i * batch.numel()
        for _ in range(10):  # keep the current stream busy while the next batch copies
            weight = weight @ weight.tanh()
    torch.cuda.synchronize()


@pytest.mark.cuda
def test_cuda_copy_and_transform_run_on_a_side_stream():
    streams = []

    def transform(batch):
        streams.append(torch.cuda.current_stream())
        return batch * 2

    host = [torch.ones(1024, 1024).pin_memory() for _ in range(3)]
    out = [batch.sum().item() for batch in DeviceLoader(host, "cuda", transform=transform)]
    assert out == [2 * 1024 * 1024] * 3
    main = torch.cuda.current_stream()
    assert len(streams) == 3 and all(s != main for s in streams)
