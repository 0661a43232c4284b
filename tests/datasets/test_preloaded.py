import pickle

import numpy as np
import psutil
import pytest
import torch
from torch.utils.data import DataLoader

from torchloader import IndexBatchSampler, PreloadedDataset


def make(n=10, shape=(3, 4, 4)):
    x = torch.arange(n * int(np.prod(shape)), dtype=torch.int32).reshape(n, *shape)
    return PreloadedDataset(x, torch.arange(n) * 10)


def test_single_index_returns_sample_and_label():
    ds = make()
    x, y = ds[3]
    assert torch.equal(x, ds.x[3]) and y.item() == 30
    assert torch.equal(ds[-1][0], ds.x[9])


def test_index_list_array_tensor_and_slice_gather_one_batch():
    ds = make()
    for indices in ([4, 0, 4], np.array([4, 0, 4]), torch.tensor([4, 0, 4])):
        xb, yb = ds[indices]
        assert torch.equal(xb, ds.x[[4, 0, 4]])
        assert yb.tolist() == [40, 0, 40]
    xb, yb = ds[2:5]
    assert yb.tolist() == [20, 30, 40]


def test_without_labels_items_are_tensors():
    ds = PreloadedDataset(np.zeros((5, 2), np.float32))
    assert ds.y is None
    assert ds[1].shape == (2,)
    assert ds[[0, 1]].shape == (2, 2)


def test_mismatched_first_dimension_is_refused():
    with pytest.raises(ValueError) as err:
        PreloadedDataset(torch.zeros(5, 2), torch.zeros(4))
    assert str(err.value) == ("x and y must have the same first dimension (got x (5, 2) and y (4,))")


def test_sample_nbytes_counts_x_and_y():
    ds = PreloadedDataset(torch.zeros(5, 3, 8, dtype=torch.uint8), torch.zeros(5, dtype=torch.int64))
    assert ds.sample_nbytes == 24 + 8


def test_batches_cover_every_sample_once_and_depend_on_seed_and_epoch():
    ds = make(n=103)

    def order(**kw):
        return torch.cat([yb for _, yb in ds.batches(16, **kw)]).tolist()

    first = order(seed=1, epoch=0)
    assert sorted(first) == [10 * i for i in range(103)]
    assert order(seed=1, epoch=0) == first
    assert order(seed=1, epoch=1) != first
    assert order(seed=2, epoch=0) != first
    assert order(shuffle=False) == [10 * i for i in range(103)]
    assert [len(yb) for _, yb in ds.batches(16, drop_last=True)] == [16] * 6


def test_dataloader_is_a_plain_dataloader_and_reshuffles_each_epoch():
    ds = make(n=50)
    loader = ds.dataloader(8, seed=3)
    assert isinstance(loader, DataLoader) and loader.batch_size is None
    epochs = [torch.cat([yb for _, yb in loader]).tolist() for _ in range(2)]
    assert all(sorted(e) == [10 * i for i in range(50)] for e in epochs)
    assert epochs[0] != epochs[1]
    assert len(loader) == 7


def test_dataloader_refuses_its_own_sampler():
    with pytest.raises(TypeError, match="dataloader\\(\\) sets sampler itself"):
        make().dataloader(4, sampler=[0, 1])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_with_workers_gives_the_same_batches(context):
    ds = make(n=40)
    expected = [yb.tolist() for _, yb in ds.batches(8, seed=5)]
    loader = ds.dataloader(8, seed=5, num_workers=2, multiprocessing_context=context)
    assert [yb.tolist() for _, yb in loader] == expected


def test_pickle_round_trip_keeps_the_data():
    ds = make()
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy.x, ds.x) and torch.equal(copy.y, ds.y)


class Squares(torch.utils.data.Dataset):
    def __init__(self, n, odd_shape_at=None):
        self.n, self.odd = n, odd_shape_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        side = 3 if i == self.odd else 2
        return np.full((side, side), i, dtype=np.uint8), i % 3


@pytest.mark.parametrize("workers", [0, 2])
def test_from_dataset_loads_every_sample_in_order(workers):
    ds = PreloadedDataset.from_dataset(Squares(150), num_workers=workers, progress=False)
    assert ds.x.shape == (150, 2, 2) and ds.x.dtype == torch.uint8
    assert ds.x[:, 0, 0].tolist() == list(range(150))
    assert ds.y.tolist() == [i % 3 for i in range(150)]


def test_from_dataset_names_the_sample_whose_shape_differs():
    with pytest.raises(ValueError) as err:
        PreloadedDataset.from_dataset(Squares(100, odd_shape_at=70), num_workers=0, progress=False)
    assert str(err.value) == (
        "sample 70 has x (3, 3) torch.uint8, y () torch.int64 but sample 64 has "
        "x (2, 2) torch.uint8, y () torch.int64; samples must share one shape and dtype "
        "to be stacked into one tensor. Resize or crop them to one size in the "
        "dataset's transform"
        " (images: decode=RandomResizedCrop(size) or CenterCrop(size) crops them as they decode)"
    )


def test_from_dataset_names_a_differing_first_sample_of_a_group():
    with pytest.raises(ValueError, match="^sample 64 has x \\(3, 3\\).* but sample 0 has x \\(2, 2\\)"):
        PreloadedDataset.from_dataset(Squares(100, odd_shape_at=64), num_workers=0, progress=False)


def test_from_dataset_cache_is_written_once_then_memory_mapped(tmp_path):
    cache = tmp_path / "cache"
    first = PreloadedDataset.from_dataset(Squares(20), num_workers=0, cache=str(cache), progress=False)
    assert sorted(p.name for p in cache.iterdir()) == ["meta.json", "x.npy", "y.npy"]

    class Exploding(Squares):
        def __getitem__(self, i):
            raise AssertionError("the cache should have been used")

    again = PreloadedDataset.from_dataset(Exploding(20), cache=str(cache), progress=False)
    assert torch.equal(again.x, first.x) and torch.equal(again.y, first.y)
    assert "cache=" in repr(again)
    # sent to workers as paths: the pickle is tiny and maps the file again
    blob = pickle.dumps(again)
    assert len(blob) < 2000
    assert torch.equal(pickle.loads(blob).x, first.x)


def test_from_dataset_cache_of_another_length_is_refused(tmp_path):
    cache = str(tmp_path / "cache")
    PreloadedDataset.from_dataset(Squares(20), num_workers=0, cache=cache, progress=False)
    with pytest.raises(ValueError) as err:
        PreloadedDataset.from_dataset(Squares(21), cache=cache, progress=False)
    assert str(err.value) == (
        f"the cache '{cache}' holds 20 samples but the dataset has 21; delete the folder or pass another cache= path"
    )


def test_interrupted_cache_build_is_not_mistaken_for_a_cache(tmp_path):
    cache = str(tmp_path / "cache")
    with pytest.raises(ValueError):
        PreloadedDataset.from_dataset(Squares(100, odd_shape_at=90), num_workers=0, cache=cache, progress=False)
    ds = PreloadedDataset.from_dataset(Squares(100), num_workers=0, cache=cache, progress=False)
    assert ds.x[:, 0, 0].tolist() == list(range(100))


def _worker_uss(ds, context, batches):
    """Unique memory of the worker after it has gathered from every sample (one worker:
    a second would only cost another start, an interpreter importing torch with spawn)."""
    sampler = IndexBatchSampler(np.tile(np.arange(len(ds)), -(-batches * 64 // len(ds))), 64)
    loader = DataLoader(
        ds, batch_size=None, sampler=sampler, num_workers=1, multiprocessing_context=context, persistent_workers=True
    )
    for _ in loader:
        pass
    workers = [p for p in psutil.Process().children() if "resource_tracker" not in " ".join(p.cmdline())]
    uss = [p.memory_full_info().uss for p in workers]
    del loader
    return max(uss)


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_share_the_data_instead_of_copying_it(context):
    sample = (4, 128, 128)  # 64 KiB per sample
    big = PreloadedDataset(torch.full((6144, *sample), 7, dtype=torch.uint8))  # 384 MiB
    small = PreloadedDataset(torch.full((64, *sample), 7, dtype=torch.uint8))
    batches = len(big) // 64  # the same work for both: only the data size differs
    extra = _worker_uss(big, context, batches) - _worker_uss(small, context, batches)
    data = big.x.numel()
    assert extra < data / 10, f"workers copied {extra / 2**20:.0f} MiB of {data / 2**20:.0f} MiB"


@pytest.mark.cuda
@pytest.mark.parametrize("workers", [0, 2])
def test_pinned_batches_reach_the_gpu_unchanged(workers):
    ds = make(n=64)
    loader = ds.dataloader(16, seed=1, num_workers=workers, pin_memory=True)
    expected = [yb.tolist() for _, yb in ds.batches(16, seed=1)]
    got = []
    for xb, yb in loader:
        assert xb.is_pinned() and yb.is_pinned()
        xb = xb.to("cuda", non_blocking=True)
        got.append(yb.to("cuda", non_blocking=True).cpu().tolist())
        assert torch.equal(xb.cpu(), ds.x[yb])
    assert got == expected


# --- channels-last data and gathers into a given buffer ------------------------------


def channels_last(n=6):
    x = torch.arange(n * 3 * 4 * 5, dtype=torch.int32).reshape(n, 4, 5, 3).permute(0, 3, 1, 2)
    return x, torch.arange(n) * 10


def test_channels_last_samples_gather_in_their_memory_order():
    x, y = channels_last()
    ds = PreloadedDataset(x, y)

    xb, yb = ds[[4, 1]]
    batches = list(ds.batches(4, shuffle=False))

    assert torch.equal(xb, x[[4, 1]]) and yb.tolist() == [40, 10]
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(torch.cat([b for b, _ in batches]), x)
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("make", [lambda: channels_last(), lambda: (torch.arange(24).reshape(6, 4), torch.arange(6))])
def test_gather_into_a_buffer_laid_out_like_the_samples(make):
    x, y = make()
    ds = PreloadedDataset(x, y)
    out_x = torch.empty_like(x[:3])
    out_y = torch.empty(3, dtype=y.dtype)

    assert ds.gather_into([5, 0, 2], (out_x, out_y)) is True

    assert torch.equal(out_x, x[[5, 0, 2]]) and out_y.tolist() == y[[5, 0, 2]].tolist()


def test_gather_into_a_buffer_of_another_layout_declines():
    x, y = channels_last()
    out_x = torch.empty((2, *x.shape[1:]), dtype=x.dtype)  # contiguous, x is channels-last

    out_x.fill_(7)
    assert PreloadedDataset(x, y).gather_into([0, 1], (out_x, None)) is False
    assert (out_x == 7).all()  # nothing written


def test_from_dataset_keeps_images_in_their_decoded_memory_order():
    images = [torch.full((4, 5, 3), i, dtype=torch.uint8).permute(2, 0, 1) for i in range(3)]  # as ImageReader

    ds = PreloadedDataset.from_dataset(images, progress=False)

    assert ds.x.shape == (3, 3, 4, 5)
    assert ds.x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(ds.x, torch.stack(images))


def test_index_arrays_of_any_layout_are_read_and_left_as_they_were():
    ds = PreloadedDataset(torch.arange(40).view(10, 4), torch.arange(10))
    reversed_ = np.arange(10)[::-1]
    assert ds[reversed_][1].tolist() == list(range(9, -1, -1))  # a negative stride
    frozen = np.array([3, 1])
    frozen.flags.writeable = False
    assert ds.gather(frozen)[1].tolist() == [3, 1]  # read-only: no warning (warnings are errors here)
    mine = np.array([2, 5])
    batch = ds[mine]
    mine[:] = 0
    assert batch[1].tolist() == [2, 5]
